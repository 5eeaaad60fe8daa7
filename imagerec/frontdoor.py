"""Settings of what the web process keeps in memory between requests
(``predictions.announced``), read from the environment here so settings.py stays short;
settings.py imports them."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

from .env import env

# Without change announcements (no Redis: `make run` on SQLite, or Redis down) a value kept
# in a web process (the model versions a submission chooses from) is read again after this
# many seconds: another process's model switch is seen within it (this process's, at once).
ANNOUNCED_CACHE_SECONDS = env.float("ANNOUNCED_CACHE_SECONDS", default=2.0)
# With announcements (Redis), a change is seen at once; this bounds a lost announcement.
ANNOUNCED_CACHE_MAX_SECONDS = env.float("ANNOUNCED_CACHE_MAX_SECONDS", default=60.0)
if ANNOUNCED_CACHE_SECONDS < 0 or ANNOUNCED_CACHE_MAX_SECONDS < 0:
    raise ImproperlyConfigured("ANNOUNCED_CACHE_SECONDS and ANNOUNCED_CACHE_MAX_SECONDS cannot be negative")

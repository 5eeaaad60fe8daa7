"""Settings of the API's front door, read from the environment here so settings.py stays
short; settings.py imports them: the fast path (docs/architecture.md, "The fast path")
and what the web process keeps in memory between requests (``predictions.announced``)."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

from .env import env

# The happy path of one-image submit and poll, token-authenticated, answered by a lean
# ASGI route in front of Django (predictions.api.fastpath); everything else, and all of
# it when off, goes through Django's middleware and DRF as before. on/off (true/false).
API_FAST_PATH = env.bool("API_FAST_PATH", default=True)

# Without change announcements (no Redis: `make run` on SQLite, or Redis down) a value kept
# in a web process (the model versions a submission chooses from) is read again after this
# many seconds: another process's model switch is seen within it (this process's, at once).
ANNOUNCED_CACHE_SECONDS = env.float("ANNOUNCED_CACHE_SECONDS", default=2.0)
# With announcements (Redis), a change is seen at once; this bounds a lost announcement.
ANNOUNCED_CACHE_MAX_SECONDS = env.float("ANNOUNCED_CACHE_MAX_SECONDS", default=60.0)
if ANNOUNCED_CACHE_SECONDS < 0 or ANNOUNCED_CACHE_MAX_SECONDS < 0:
    raise ImproperlyConfigured("ANNOUNCED_CACHE_SECONDS and ANNOUNCED_CACHE_MAX_SECONDS cannot be negative")

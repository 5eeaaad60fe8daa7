"""Settings of the API's front door (docs/architecture.md, "The fast path"), read from
the environment here so settings.py stays short; settings.py imports them."""

from __future__ import annotations

from .env import env

# The happy path of one-image submit and poll, token-authenticated, answered by a lean
# ASGI route in front of Django (predictions.api.fastpath); everything else, and all of
# it when off, goes through Django's middleware and DRF as before. on/off (true/false).
API_FAST_PATH = env.bool("API_FAST_PATH", default=True)

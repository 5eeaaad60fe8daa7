"""Settings that keep users from starving each other (docs/fairness.md), read from the
environment here so settings.py stays short; settings.py imports them."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

from .env import env

# The most one image may cost to decode, in bytes of raw pixel data (width x height x
# channels x bits per channel / 8, read from the header): 64 MiB is an 8-bit RGB image
# of 22 megapixels. A JPEG over it is decoded reduced (Image.draft); anything else is
# refused at upload with the code image_too_costly. The worker holds each decode to it too.
MAX_DECODE_BYTES = env.int("MAX_DECODE_BYTES", default=64 * 1024 * 1024)
# A worker's batch takes more rows only while their decodes add up to MAX_DECODE_BYTES
# (its message's own row always goes): a flood of costly images makes small batches.
# How many of one user's predictions may be claimed (running) at once, all workers together:
# as many as one batch holds by default, so one user alone still fills a worker's batch,
# and with several workers one user never holds more than one worker's batch.
INFLIGHT_PER_USER = env.int("INFLIGHT_PER_USER", default=16)
# How many of one user's explanations may wait or be computed at once; one more is refused (429).
EXPLANATIONS_PENDING_PER_USER = env.int("EXPLANATIONS_PENDING_PER_USER", default=4)
if MAX_DECODE_BYTES < 1 or INFLIGHT_PER_USER < 1 or EXPLANATIONS_PENDING_PER_USER < 1:
    raise ImproperlyConfigured("MAX_DECODE_BYTES, INFLIGHT_PER_USER and EXPLANATIONS_PENDING_PER_USER must be positive")

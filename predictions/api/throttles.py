"""Per-user request rates (``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]``), counted in the cache."""

from __future__ import annotations

import math

from django.http import HttpRequest
from rest_framework.request import Request
from rest_framework.throttling import UserRateThrottle
from rest_framework.views import APIView


class SubmitRateThrottle(UserRateThrottle):
    """Submissions per user (``THROTTLE_SUBMIT``): on the submit view only."""

    scope = "submit"


class ReadRateThrottle(UserRateThrottle):
    """Reads per user (``THROTTLE_READ``), one count per request: a long-poll that waits
    30 s counts once. On every GET view; a request with another method (answered 405 or
    OPTIONS) is not a read and does not count."""

    scope = "read"

    def allow_request(self, request: Request, view: APIView) -> bool:
        if request.method not in ("GET", "HEAD"):
            return True
        return super().allow_request(request, view)


def submit_wait(request: HttpRequest) -> int | None:
    """For a page that submits work (the upload form, an explanation request): ``None``
    when this user may submit now, else the seconds to wait. The page and the API count
    against one rate (``THROTTLE_SUBMIT``) under one cache key per user, so switching
    between them gains nothing."""
    throttle = SubmitRateThrottle()
    if throttle.allow_request(request, None):  # type: ignore[arg-type]  # DRF reads only .user and META
        return None
    return max(1, math.ceil(throttle.wait() or 1))


def throttled_message(wait: int) -> str:
    """What a throttled person reads (page and API say the same)."""
    rate = SubmitRateThrottle().get_rate()
    return (
        f"Too many submissions in a short time (the limit is {rate} per user). "
        f"Try again in {wait} second{'s' if wait != 1 else ''}."
    )

"""Per-user request rates (``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]``), counted in the cache."""

from __future__ import annotations

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

"""The base of the async API views: adrf's ``APIView`` without its one costly detour.

adrf checks throttles by calling ``async_to_sync`` for the async ones even when there
are none: from ``initial()`` (run in a thread) a round trip to the event loop and back
on every request, about 1 ms of CPU (``make bench-frontdoor``). The throttles here are
all sync (``api.throttles``), so they are checked in place, as DRF does; an async one
would still go through adrf.
"""

from __future__ import annotations

from adrf.views import APIView as AdrfAPIView
from asgiref.sync import iscoroutinefunction
from rest_framework.request import Request
from rest_framework.views import APIView as DrfAPIView


class AsyncAPIView(AdrfAPIView):
    """adrf's async API view; sync throttles are checked without leaving the thread."""

    def check_throttles(self, request: Request) -> None:
        if any(iscoroutinefunction(throttle.allow_request) for throttle in self.get_throttles()):
            super().check_throttles(request)
        else:
            DrfAPIView.check_throttles(self, request)

"""Per-request presentation settings of the person browsing."""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

TIMEZONE_COOKIE = "tz"


class BrowserTimezoneMiddleware:
    """Show times (and read the history's date filters) in the browser's time zone.

    ``static/js/app.js`` stores the browser's IANA zone name in the ``tz`` cookie; without
    it (no JavaScript, first page) the pages use ``TIME_ZONE`` and say which zone it is.
    An unknown name is ignored rather than refused: it is only a display preference.
    """

    # Both kinds: under ASGI a sync-only middleware costs every request two thread hops.
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        zone = _browser_zone(request)
        if iscoroutinefunction(self):
            return self._acall(request, zone)
        if zone is None:
            return self.get_response(request)
        with timezone.override(zone):
            return self.get_response(request)

    async def _acall(self, request: HttpRequest, zone: zoneinfo.ZoneInfo | None) -> HttpResponse:
        if zone is None:
            return await self.get_response(request)  # type: ignore[no-any-return]
        with timezone.override(zone):
            return await self.get_response(request)  # type: ignore[no-any-return]


def _browser_zone(request: HttpRequest) -> zoneinfo.ZoneInfo | None:
    name = unquote(request.COOKIES.get(TIMEZONE_COOKIE, ""))  # tolerate "Asia%2FTokyo"
    try:
        return zoneinfo.ZoneInfo(name) if name and len(name) <= 64 else None
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None

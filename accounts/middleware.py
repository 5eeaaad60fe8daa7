"""Per-request presentation settings of the person browsing."""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable
from urllib.parse import unquote

from django.http import HttpRequest, HttpResponse
from django.utils import timezone

TIMEZONE_COOKIE = "tz"


class BrowserTimezoneMiddleware:
    """Show times (and read the history's date filters) in the browser's time zone.

    ``static/js/app.js`` stores the browser's IANA zone name in the ``tz`` cookie; without
    it (no JavaScript, first page) the pages use ``TIME_ZONE`` and say which zone it is.
    An unknown name is ignored rather than refused: it is only a display preference.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        name = unquote(request.COOKIES.get(TIMEZONE_COOKIE, ""))  # tolerate "Asia%2FTokyo"
        try:
            zone = zoneinfo.ZoneInfo(name) if name and len(name) <= 64 else None
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            zone = None
        if zone is None:
            return self.get_response(request)
        with timezone.override(zone):
            return self.get_response(request)

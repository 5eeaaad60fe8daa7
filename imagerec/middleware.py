"""Site-wide responses that are about presentation, not about any one app."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from csp import middleware as csp_middleware
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.middleware import clickjacking, common, security
from django.shortcuts import render


class FriendlyNotFoundMiddleware:
    """With ``DEBUG`` on (``make dev``), Django answers an unknown page with its technical
    404 page, which lists every URL pattern of the site. The development server shows the
    same friendly page as production instead; the API keeps its JSON 404s. ``?debug-404``
    shows Django's page to the developer who wants it. With ``DEBUG`` off (``make run``,
    production) Django renders ``templates/404.html`` and the parameter does nothing."""

    # Both kinds: under ASGI a sync-only middleware costs every request two thread hops.
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if iscoroutinefunction(self):
            return self._acall(request)
        return self._friendly(request, self.get_response(request))

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        response = await self.get_response(request)
        if self._wants_friendly_page(request, response):
            # Rendering reads templates from disk and may query (the user): in a thread.
            return await sync_to_async(render)(request, "404.html", status=404)
        return response  # type: ignore[no-any-return]

    def _friendly(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if self._wants_friendly_page(request, response):
            return render(request, "404.html", status=404)
        return response

    @staticmethod
    def _wants_friendly_page(request: HttpRequest, response: HttpResponse) -> bool:
        return bool(
            settings.DEBUG
            and response.status_code == 404
            and response.get("Content-Type", "").startswith("text/html")
            and "debug-404" not in request.GET
        )


class InlineHooksMixin:
    """For a ``MiddlewareMixin`` whose hooks only read the request and set headers: under
    ASGI, Django runs each hook of such a middleware in a worker thread (it might query
    the database), two thread hand-offs per middleware per request; these run in the
    event loop instead. Only for hooks that never touch the database or the session."""

    get_response: Callable[[HttpRequest], Any]

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        response = None
        if hasattr(self, "process_request"):
            response = self.process_request(request)
        response = response or await self.get_response(request)
        if hasattr(self, "process_response"):
            response = self.process_response(request, response)
        return response  # type: ignore[no-any-return]


class SecurityMiddleware(InlineHooksMixin, security.SecurityMiddleware):
    """Django's, its hooks in the event loop (HTTPS redirect, HSTS and the other headers)."""


class CSPMiddleware(InlineHooksMixin, csp_middleware.CSPMiddleware):
    """django-csp's, its hooks in the event loop (the nonce and the header)."""


class CommonMiddleware(InlineHooksMixin, common.CommonMiddleware):
    """Django's, its hooks in the event loop (disallowed user agents, APPEND_SLASH)."""


class XFrameOptionsMiddleware(InlineHooksMixin, clickjacking.XFrameOptionsMiddleware):
    """Django's, its hooks in the event loop (the X-Frame-Options header)."""

"""Site-wide responses that are about presentation, not about any one app."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


class FriendlyNotFoundMiddleware:
    """With ``DEBUG`` on (``make dev``), Django answers an unknown page with its technical
    404 page, which lists every URL pattern of the site. The development server shows the
    same friendly page as production instead; the API keeps its JSON 404s. ``?debug-404``
    shows Django's page to the developer who wants it. With ``DEBUG`` off (``make run``,
    production) Django renders ``templates/404.html`` and the parameter does nothing."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            settings.DEBUG
            and response.status_code == 404
            and response.get("Content-Type", "").startswith("text/html")
            and "debug-404" not in request.GET
        ):
            return render(request, "404.html", status=404)
        return response

"""Several single-action API views behind one URL, routed by HTTP method.

``/api/v1/predictions/`` lists (GET) and submits (POST): two views, one URL. Django
routes a URL to one callable, so ``method_dispatch(GET=PredictionListApi,
POST=PredictionCreateApi)`` is that callable: it hands each request to the view of its
method. The schema generator (``api.schema``) reads ``views_by_method`` to document
each operation with its own view.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

from asgiref.sync import iscoroutinefunction
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt
from rest_framework.views import APIView

ViewFunction = Callable[..., Any]


class MethodDispatchView(Protocol):
    """What ``method_dispatch`` returns: a view function, plus the view of each method."""

    views_by_method: dict[str, ViewFunction]
    allow: str  # the Allow header of every answer

    def __call__(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any: ...


def _single_method_view(method: str, view_class: type[APIView]) -> ViewFunction:
    """``view_class`` as a view answering only ``method`` (HEAD with GET, as Django's View
    does); ``ImproperlyConfigured`` for a method it does not have."""
    if method.lower() not in APIView.http_method_names or method.upper() != method:
        raise ImproperlyConfigured(f"method_dispatch(): {method!r} is not an upper-case HTTP method")
    if not hasattr(view_class, method.lower()):
        raise ImproperlyConfigured(f"method_dispatch(): {view_class.__name__} has no {method.lower()}()")
    allowed = [method.lower(), "head"] if method == "GET" else [method.lower()]
    return view_class.as_view(http_method_names=allowed)


def method_dispatch(**views: type[APIView]) -> MethodDispatchView:
    """One view function that answers each method with its own view class:
    ``method_dispatch(GET=ListApi, POST=CreateApi)``.

    HEAD goes to the GET view. OPTIONS and any other method go to the first view with
    only OPTIONS enabled, so they get what DRF gives (authentication first, then 405 in
    the API's error shape); every answer's ``Allow`` header lists the methods of all
    the views. The views are all async (adrf) or all sync; the dispatcher is the same,
    and csrf-exempt as DRF views are (their authentication enforces CSRF for sessions).
    """
    if not views:
        raise ImproperlyConfigured("method_dispatch() needs at least one METHOD=View")
    views_by_method = {method: _single_method_view(method, view_class) for method, view_class in views.items()}
    first = next(iter(views.values()))
    fallback = first.as_view(http_method_names=["options"])
    routes = {**views_by_method}
    if "GET" in views_by_method:
        routes.setdefault("HEAD", views_by_method["GET"])
    allow = ", ".join(name.upper() for name in APIView.http_method_names if name.upper() in routes or name == "options")

    kinds = {iscoroutinefunction(view) for view in [*views_by_method.values(), fallback]}
    if len(kinds) != 1:
        raise ImproperlyConfigured("method_dispatch(): the views must be all async or all sync")

    def route(request: HttpRequest) -> ViewFunction:
        return routes.get(request.method or "", fallback)

    def with_allow(response: HttpResponseBase) -> HttpResponseBase:
        if response.has_header("Allow"):
            response["Allow"] = allow
        return response

    if kinds == {True}:

        async def dispatch_async(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            view = cast(Callable[..., Awaitable[HttpResponseBase]], route(request))
            return with_allow(await view(request, *args, **kwargs))

        dispatcher: ViewFunction = dispatch_async
    else:

        def dispatch_sync(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            return with_allow(route(request)(request, *args, **kwargs))

        dispatcher = dispatch_sync

    view = cast(MethodDispatchView, csrf_exempt(dispatcher))
    view.views_by_method = views_by_method
    view.allow = allow
    return view

"""The fast path of the two hot endpoints: an ASGI route in front of Django (``imagerec.asgi``)
that answers the happy path of ``POST /api/v1/predictions/`` (one image) and
``GET /api/v1/predictions/<id>/`` (with or without ``wait``) for a token client.

Why: through Django, such a request crosses eight sync middleware hooks (two thread
hand-offs each under ASGI), the request signals (two more), URL routing, DRF's request
set-up, content negotiation and parsers, then the view's own hand-off to the database.
Here it is one hand-off for the token, the throttle and the work, and none of the rest.

What it reuses, so that both paths give the same answer: DRF's token authentication,
the view's permission and throttle classes (the same cache keys: both paths count
against one limit), the service (``services.prediction_create_many``), the waiting
(``api.submissions.outcomes_wait``, ``selectors.predictions_wait``), the body writer
(``api.bodies``), the exception handler (``api.errors``) and, for the headers, the
site's header-setting middleware from ``settings.MIDDLEWARE`` with the request metrics
(``FastPath.header_middleware``), in the same order.

What it does not answer goes to Django unchanged, from the same bytes (``HandOver``):
no token or a bad one, a cookie, another ``Accept`` or content type, unknown
parameters, several files, a bad ``top_k`` or ``wait``, a refusal of the throttle or a
permission, any error before the work begins. Django then answers as it always has,
so every error and edge keeps one implementation; a throttled request is counted once
(a refusal counts nothing). From the work on (the row, the wait), the answer is this
path's: an error there goes through the same exception handler (or Django's 500).
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from collections.abc import Awaitable, Callable
from typing import IO, Any, cast

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.contrib.auth.models import User
from django.core import signals
from django.core.handlers.asgi import ASGIRequest
from django.core.handlers.exception import response_for_exception
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.urls import resolve, set_script_prefix
from django.utils.cache import patch_vary_headers
from django.utils.module_loading import import_string
from rest_framework.authentication import TokenAuthentication
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from imagerec.middleware import InlineHooksMixin
from imagerec.request_limits import ASGIApp, Message, Receive, Scope, Send
from predictions import events, selectors, services
from predictions.operations.metrics import FAST_PATH_REQUESTS, RequestMetricsMiddleware

from ..exceptions import ApplicationError
from ..models import Prediction
from .bodies import prediction_body
from .dispatch import MethodDispatchView
from .errors import exception_handler
from .predictions import PredictionDetailApi
from .submissions import PredictionCreateApi, outcomes_wait, submitted_answer
from .waiting import wait_from

_API_PREFIX = "/api/v1/predictions/"
_POLL_PATH = re.compile(r"/api/v1/predictions/[^/]+/")
_ACCEPTED = {b"", b"*/*", b"application/json"}  # what DRF answers with its JSON renderer
_TOP_K = re.compile(r"[1-9][0-9]{0,3}")
_BODY_SLACK = 64 * 1024  # a form's boundaries, part headers and top_k around the image
_CHUNK = 2**16


class HandOver(Exception):
    """Not this path's to answer: Django answers it, from the same bytes."""


class FastPath:
    """ASGI middleware: the happy path of one-image submit and poll, else ``app`` (Django)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._handler: Callable[[HttpRequest], Awaitable[HttpResponseBase]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (settings.API_FAST_PATH and scope["type"] == "http" and _takes(scope)):
            await self.app(scope, receive, send)
            return
        body = tempfile.SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE, mode="w+b")  # noqa: SIM115
        try:
            await self._serve(scope, receive, send, body)
        finally:
            body.close()

    async def _serve(self, scope: Scope, receive: Receive, send: Send, body: IO[bytes]) -> None:
        while True:  # the whole body first, as Django's handler reads it
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # gone before asking anything
            body.write(message.get("body", b""))
            if not message.get("more_body", False):
                break
        size = body.tell()
        body.seek(0)
        later: list[Message] = []  # what the client sent while this path worked (its disconnect)
        request: ASGIRequest | None = None
        try:
            request = ASGIRequest(scope, body)  # may refuse the path's encoding: Django's to answer
            async with ThreadSensitiveContext():  # this request's sync work in its own thread, as Django's
                response = await self._answer(request, receive, later)
        except (HandOver, UnicodeDecodeError):
            FAST_PATH_REQUESTS.labels(outcome="handed_over").inc()
            await self.app(scope, _replay(body, size, later, receive), send)
            return
        finally:
            if request is not None:
                request.close()  # uploaded temporary files
        if response is not None:
            FAST_PATH_REQUESTS.labels(outcome="served").inc()
            await _send(response, send)

    async def _answer(self, request: ASGIRequest, receive: Receive, later: list[Message]) -> HttpResponseBase | None:
        """The response, or ``None`` when the client went away (a wait is then cancelled,
        as Django cancels a view)."""
        set_script_prefix(settings.FORCE_SCRIPT_NAME or request.scope.get("root_path", "") or "")
        handler = self.header_middleware()
        answering = asyncio.ensure_future(handler(request))

        async def listen() -> None:
            later.append(await receive())

        listening = asyncio.ensure_future(listen())
        try:
            await asyncio.wait([answering, listening], return_when=asyncio.FIRST_COMPLETED)
        finally:
            listening.cancel()
        if not answering.done():  # the client disconnected
            answering.cancel()
            await asyncio.gather(answering, return_exceptions=True)
            return None
        try:
            return answering.result()
        except HandOver:
            raise
        except Exception as error:  # a header middleware failed (a bad Host)
            if getattr(request, "_fast_path_working", False):  # too late to hand over: answer
                return await sync_to_async(response_for_exception)(request, error)
            raise HandOver from error

    def header_middleware(self) -> Callable[[HttpRequest], Awaitable[HttpResponseBase]]:
        """The site's middleware that set headers on every answer (those whose hooks run
        in the event loop, ``imagerec.middleware.InlineHooksMixin``) and the request
        metrics, in ``settings.MIDDLEWARE`` order, around this path's view. The others
        (session, CSRF, authentication, messages, the time-zone cookie, the friendly 404,
        django-axes, static files) change nothing in the answer to a token request without
        a cookie, which is the only kind this path takes."""
        if self._handler is None:
            handler: Any = _view
            for path in reversed(settings.MIDDLEWARE):
                middleware = import_string(path)
                if middleware is RequestMetricsMiddleware or issubclass(middleware, InlineHooksMixin):
                    handler = middleware(handler)
            self._handler = handler
        return self._handler


def _takes(scope: Scope) -> bool:
    """Whether the request may be this path's, from its first line and headers alone:
    nothing else is read of a request that is not."""
    method, path = scope["method"], scope["path"]
    if not ((method == "POST" and path == _API_PREFIX) or (method == "GET" and _POLL_PATH.fullmatch(path))):
        return False
    headers = dict(scope["headers"])
    if len(headers) != len(scope["headers"]) or b"cookie" in headers or b"transfer-encoding" in headers:
        return False  # a repeated header, a session or a body of unknown length: Django's
    if headers.get(b"accept", b"") not in _ACCEPTED or headers.get(b"authorization", b"")[:6].lower() != b"token ":
        return False
    length = headers.get(b"content-length", b"")
    if method == "GET":
        return length in (b"", b"0") and b"content-type" not in headers
    multipart = headers.get(b"content-type", b"").startswith(b"multipart/form-data;")
    return multipart and length.isdigit() and int(length) <= int(settings.MAX_UPLOAD_BYTES) + _BODY_SLACK


def _replay(body: IO[bytes], size: int, later: list[Message], receive: Receive) -> Receive:
    """The request as the client sent it, for Django: the body again, then the rest."""
    body.seek(0)
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            chunk = body.read(_CHUNK)
            sent = body.tell() >= size
            return {"type": "http.request", "body": chunk, "more_body": not sent}
        if later:
            return later.pop(0)
        return await receive()

    return replay


async def _send(response: HttpResponseBase, send: Send) -> None:
    """As Django's ASGI handler sends a response that is not streamed."""
    headers = [(name.encode("ascii"), value.encode("latin1")) for name, value in response.items()]
    headers += [(b"Set-Cookie", c.output(header="").encode("ascii").strip()) for c in response.cookies.values()]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": cast(Any, response).content})


# --- the view, behind the header middleware --------------------------------------------


async def _view(request: HttpRequest) -> HttpResponseBase:
    match = resolve(request.path_info)
    request.resolver_match = match  # the metrics label it by URL name, as Django's requests
    dispatcher = cast(MethodDispatchView, match.func)
    view_class = getattr(getattr(dispatcher, "views_by_method", {}).get(request.method), "view_class", None)
    if view_class not in (PredictionCreateApi, PredictionDetailApi):
        raise HandOver
    if set(request.GET) - {"wait"} or len(request.GET.getlist("wait")) > 1:
        raise HandOver
    try:
        wait = wait_from(request.GET.get("wait"), request.headers.get("Prefer", ""))
    except ApplicationError as error:
        raise HandOver from error
    try:
        if view_class is PredictionCreateApi:
            response = await _submit(request, wait)
        else:
            response = await _poll(request, str(match.kwargs["prediction_id"]), wait)
    except HandOver:
        raise
    except Exception as error:
        handled = exception_handler(error, {"request": request})
        if handled is None:  # not the API's error: Django's 500, as the view's would be
            return await sync_to_async(response_for_exception)(request, error)
        response = handled
    return _rendered(response, view_class, allow=dispatcher.allow)


async def _submit(request: HttpRequest, wait: float) -> Response:
    if not wait:
        user, outcomes = await sync_to_async(_create)(request, before_queue=None, last=True)
        return submitted_answer(outcomes[0], request, wait=wait, done=False)
    try:
        async with events.prediction_final_subscription(()) as subscription:  # before the row is queued
            user, outcomes = await sync_to_async(_create)(request, before_queue=subscription.add, last=False)
            done = await outcomes_wait(user=user, outcomes=outcomes, seconds=wait, subscription=subscription)
    finally:
        if getattr(request, "_fast_path_working", False):
            await sync_to_async(signals.request_finished.send)(sender=FastPath)
    return submitted_answer(outcomes[0], request, wait=wait, done=done)


def _create(
    request: HttpRequest, *, before_queue: Callable[[Any], None] | None, last: bool
) -> tuple[User, list[services.SubmissionOutcome]]:
    signals.request_started.send(sender=FastPath, scope=cast(ASGIRequest, request).scope)
    try:
        if list(request.FILES) != ["image"] or len(request.FILES.getlist("image")) != 1:
            raise HandOver
        if set(request.POST) - {"top_k"} or len(request.POST.getlist("top_k")) > 1:
            raise HandOver
        raw_top_k = request.POST.get("top_k")
        if raw_top_k is not None and not (_TOP_K.fullmatch(raw_top_k) and int(raw_top_k) <= settings.MAX_TOP_K):
            raise HandOver
        user = _admitted(request, PredictionCreateApi)
    except Exception as error:
        signals.request_finished.send(sender=FastPath)
        raise HandOver from error
    request._fast_path_working = True  # type: ignore[attr-defined]  # from here on, the answer is ours
    try:
        top_k = settings.DEFAULT_TOP_K if raw_top_k is None else int(raw_top_k)
        outcomes = services.prediction_create_many(
            user=user, uploaded_files=request.FILES.getlist("image"), top_k=top_k, before_queue=before_queue
        )
        if before_queue is not None:  # about to wait: do not hold a pooled connection meanwhile
            selectors.connection_release()
        return user, outcomes
    finally:
        if last:
            signals.request_finished.send(sender=FastPath)


async def _poll(request: HttpRequest, prediction_id: str, wait: float) -> Response:
    if not wait:
        user, prediction = await sync_to_async(_read)(request, prediction_id)
        return Response(prediction_body(prediction, request))
    async with events.prediction_final_subscription([prediction_id]) as subscription:  # before the read
        user, prediction = await sync_to_async(_read)(request, prediction_id)
        if not prediction.is_final:
            (prediction,) = await selectors.predictions_wait(
                user=user, prediction_ids=[prediction_id], seconds=wait, subscription=subscription, known=[prediction]
            )
    return Response(prediction_body(prediction, request))


def _read(request: HttpRequest, prediction_id: str) -> tuple[User, Prediction]:
    signals.request_started.send(sender=FastPath, scope=cast(ASGIRequest, request).scope)
    try:
        user = _admitted(request, PredictionDetailApi)
    except Exception as error:
        signals.request_finished.send(sender=FastPath)
        raise HandOver from error
    request._fast_path_working = True  # type: ignore[attr-defined]
    try:
        return user, selectors.predictions_read(user=user, prediction_ids=[prediction_id])[0]
    finally:
        signals.request_finished.send(sender=FastPath)


def _admitted(request: HttpRequest, view_class: type[Any]) -> User:
    """The token's user, if the view's first authentication is DRF's token one and its
    permissions and its one throttle let the request through (the throttle counts it);
    else ``HandOver``, before anything is counted."""
    user = _authenticate(request, view_class)
    view = view_class(request=request, args=(), kwargs={})
    for permission in view_class.permission_classes:
        if not permission().has_permission(request, view):
            raise HandOver
    _throttle(request, view)
    return user


def _authenticate(request: HttpRequest, view_class: type[Any]) -> User:
    authentication = view_class.authentication_classes[0]()
    if not isinstance(authentication, TokenAuthentication):
        raise HandOver
    authenticated = authentication.authenticate(request)  # type: ignore[arg-type]  # reads META only
    if authenticated is None:
        raise HandOver
    request.user = authenticated[0]
    return cast(User, authenticated[0])


def _throttle(request: HttpRequest, view: Any) -> None:
    """The view's throttle, as DRF checks it; one at most, so that a refusal counts nothing."""
    if len(view.throttle_classes) > 1:
        raise HandOver
    for throttle in view.throttle_classes:
        if not throttle().allow_request(request, view):
            raise HandOver


def _rendered(response: Response, view_class: type[Any], *, allow: str) -> Response:
    """What DRF's ``finalize_response`` and the method dispatcher make of it: JSON (the
    only renderer this path answers for), ``Allow`` of the URL, ``Vary: Accept``."""
    response.accepted_renderer = JSONRenderer()
    response.accepted_media_type = JSONRenderer.media_type
    response.renderer_context = {}  # type: ignore[attr-defined]  # DRF sets it so too
    response["Allow"] = allow
    if len(view_class.renderer_classes) > 1:
        patch_vary_headers(response, ["Accept"])
    response.render()
    return response

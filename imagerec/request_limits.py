"""The request body limit, enforced before Django reads a byte of the body.

Under ASGI Django spools the whole body to a temporary file before any view or
middleware runs, so a check in a view (``MAX_UPLOAD_BYTES``) comes after a 300 MB upload
has been written to disk. This ASGI middleware, around the Django application in
``imagerec.asgi``, answers 413 from the ``Content-Length`` header alone, and counts the
bytes of a body sent without one (chunked), stopping at the limit.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

# As Django's ASGIHandler types them.
Scope = dict[str, Any]
Message = Mapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyTooLarge(Exception):
    """A body sent without ``Content-Length`` went past the limit while it arrived."""


class RequestBodyLimit:
    """Refuse a request whose body is over ``max_bytes`` with 413, in the API's error
    shape under ``/api/`` and as a short page elsewhere, without reading the body."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, send)
            return
        received = 0
        started = False

        async def receive_counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def send_watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive_counted, send_watched)
        except BodyTooLarge:
            if started:  # the application answered before reading all of it: nothing to add
                raise
            await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        megabytes = f"{self.max_bytes / 1024 / 1024:.0f} MB"
        if str(scope.get("path", "")).startswith("/api/"):
            content_type = b"application/json"
            error = {"code": "too_large", "message": f"The request body is larger than {megabytes}.", "field": None}
            body = json.dumps({"error": error}).encode()
        else:
            content_type = b"text/html; charset=utf-8"
            body = (
                "<!doctype html><title>Too large</title><h1>Too large</h1>"
                f"<p>This request is larger than {megabytes}, the most this server accepts at once. "
                "Send fewer or smaller images at a time.</p>"
            ).encode()
        headers = [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
            # The unread body cannot be skipped on this connection: the client opens a new one.
            (b"connection", b"close"),
            (b"content-security-policy", b"default-src 'none'"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed one before it gets here
    return None

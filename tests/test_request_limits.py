"""The request body limit at the ASGI door: a body declared (or found) over
MAX_REQUEST_BYTES is answered 413 before Django reads any of it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings

from imagerec.asgi import application
from imagerec.request_limits import RequestBodyLimit

Message = dict[str, Any]


def _call(app: Any, path: str, *, content_length: int | None, chunks: list[bytes]) -> tuple[list[Message], int]:
    """Run one POST through ``app``; returns the messages it sent and how many body
    messages it read."""
    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/octet-stream")]
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }  # fmt: skip
    pending = [{"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1}
               for index, chunk in enumerate(chunks)]  # fmt: skip
    read = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal read
        if not pending:  # the client waits for the answer: no disconnect
            await asyncio.Future()
        read += 1
        return pending.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    async_to_sync(app)(scope, receive, send)
    return sent, read


def test_a_body_declared_over_the_limit_is_refused_unread_in_the_error_shape() -> None:
    sent, read = _call(application, "/api/v1/predictions/", content_length=300 * 1024 * 1024, chunks=[b"x"])

    assert read == 0
    assert sent[0]["status"] == 413
    body = json.loads(sent[1]["body"])
    assert body["error"]["code"] == "too_large"
    assert "100 MB" in body["error"]["message"]


def test_a_page_gets_a_short_413_page() -> None:
    sent, read = _call(application, "/", content_length=settings.MAX_REQUEST_BYTES + 1, chunks=[b"x"])

    assert read == 0
    assert sent[0]["status"] == 413
    assert dict(sent[0]["headers"])[b"content-type"].startswith(b"text/html")
    assert b"larger than 100 MB" in sent[1]["body"]


@pytest.mark.django_db
def test_a_body_without_a_length_is_cut_off_at_the_limit() -> None:
    limited = RequestBodyLimit(application.app, max_bytes=10_000)

    sent, read = _call(limited, "/api/v1/predictions/", content_length=None, chunks=[b"x" * 4096] * 10)

    assert sent[0]["status"] == 413  # not the 401 the view would give: Django never got the request
    assert read == 3  # 12 KB read: the first chunk past the limit, no more


@pytest.mark.django_db
def test_a_body_within_the_limit_reaches_django() -> None:
    sent, _ = _call(application, "/api/v1/predictions/", content_length=5, chunks=[b"hello"])

    assert sent[0]["status"] == 401  # the API's own answer to a request without credentials

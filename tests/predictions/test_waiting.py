"""Waiting for a result holds no thread: wake-ups over Redis pub/sub, and hundreds of
long-polls against the web server as docker-compose runs it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import pytest
import redis
from django.contrib.auth.models import User
from pytest_django import Settings
from rest_framework.authtoken.models import Token

from predictions import events, selectors
from predictions.models import ModelVersion, Prediction, PredictionId, PredictionStatus
from predictions.operations.metrics import FAST_PATH_REQUESTS
from tests.conftest import BASE_DIR, _compose_web_command, _database_url, _free_port, photo_bytes
from tests.factories import PredictionFactory
from tests.predictions.conftest import AsgiApi

if TYPE_CHECKING:
    from aiohttp import ClientSession, TraceRequestHeadersSentParams

LOCAL_REDIS = os.environ.get("TEST_EVENTS_REDIS_URL", "redis://127.0.0.1:6379/15")


def _in_progress(user: User) -> Prediction:
    """A prediction a worker is working on right now: no worker (the e2e tests' one may
    still run) claims it, so only the test decides when it becomes final."""
    from django.utils import timezone

    return PredictionFactory.create(user=user, status=PredictionStatus.RUNNING, attempts=1, started_at=timezone.now())


def _redis_or_skip() -> None:
    try:
        redis.Redis.from_url(LOCAL_REDIS, socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip(f"needs Redis at {LOCAL_REDIS} (the CI machine runs one)")


def _finish_once_waiting(
    monkeypatch: pytest.MonkeyPatch, prediction_id: PredictionId, *, publish: bool
) -> list[tuple[bool, bool]]:
    """Record each wait of the waiter (live on Redis or not, woken or not) and finish the
    prediction in another thread once the waiter is waiting (live, when ``publish``)."""
    waits: list[tuple[bool, bool]] = []
    real_wait = events.Subscription.wait
    finisher: list[threading.Thread] = []

    def finish() -> None:
        Prediction.objects.filter(id=prediction_id).update(status=PredictionStatus.FAILED, error="done elsewhere")
        if publish:
            events.prediction_final_publish([prediction_id])

    async def recorded_wait(subscription: events.Subscription, timeout: float) -> bool:
        live = subscription.live
        if not finisher and (live or not publish):
            finisher.append(threading.Thread(target=finish))
            finisher[0].start()
        woken = await real_wait(subscription, timeout)
        waits.append((live, woken))
        return woken

    monkeypatch.setattr(events.Subscription, "wait", recorded_wait)
    return waits


@pytest.mark.django_db(transaction=True)
def test_a_waiting_request_is_woken_by_the_announcement_not_by_polling(
    user: User, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _redis_or_skip()
    settings.EVENTS_REDIS_URL = LOCAL_REDIS
    settings.EVENTS_RECHECK_SECONDS = 3600  # no safety re-read and no deadline before the test gives up
    prediction = _in_progress(user)
    waits = _finish_once_waiting(monkeypatch, prediction.id, publish=True)

    async def wait() -> str:
        waited = selectors.prediction_wait(user=user, prediction_id=prediction.id, seconds=3600)
        return (await asyncio.wait_for(waited, timeout=120)).status

    assert asyncio.run(wait()) == PredictionStatus.FAILED
    assert waits[-1] == (True, True), waits  # the last wait was on Redis and ended by a wake-up


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("fast_path", [True, False], ids=["fast path", "django"])
def test_a_long_poll_through_the_asgi_application_is_woken_by_the_announcement(
    user: User, settings: Settings, monkeypatch: pytest.MonkeyPatch, fast_path: bool
) -> None:
    _redis_or_skip()
    settings.EVENTS_REDIS_URL = LOCAL_REDIS
    settings.EVENTS_RECHECK_SECONDS = 3600
    settings.API_FAST_PATH = fast_path
    prediction = _in_progress(user)
    waits = _finish_once_waiting(monkeypatch, prediction.id, publish=True)
    served = FAST_PATH_REQUESTS.labels(outcome="served")._value.get()

    response = AsgiApi(Token.objects.create(user=user).key).get(
        f"/api/v1/predictions/{prediction.id}/", params={"wait": "30"}
    )

    assert response.status_code == 200
    assert response.json()["status"] == PredictionStatus.FAILED
    assert waits[-1] == (True, True), waits
    assert FAST_PATH_REQUESTS.labels(outcome="served")._value.get() - served == (1 if fast_path else 0)


@pytest.mark.django_db(transaction=True)
def test_without_redis_a_wait_still_ends_when_the_row_is_final(
    user: User, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.EVENTS_REDIS_URL = ""
    prediction = _in_progress(user)
    waits = _finish_once_waiting(monkeypatch, prediction.id, publish=False)

    async def wait() -> str:
        waited = selectors.prediction_wait(user=user, prediction_id=prediction.id, seconds=3600)
        return (await asyncio.wait_for(waited, timeout=120)).status

    # Long before its deadline: the waiter re-read the row on its own.
    assert asyncio.run(wait()) == PredictionStatus.FAILED
    assert waits, waits
    assert all(wait == (False, False) for wait in waits), waits


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_200_long_polls_do_not_delay_health_or_an_upload(
    user: User, media_dir: Path, active_model: ModelVersion
) -> None:
    """The web server exactly as docker-compose runs it, 200 clients long-polling a
    prediction no worker will finish: a health probe and an upload are answered before
    any of the long-polls."""
    aiohttp = pytest.importorskip("aiohttp")
    token = Token.objects.create(user=user).key
    pending = _in_progress(user)
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": _database_url(), "MEDIA_ROOT": str(media_dir), "WEB_CONCURRENCY": "2",
           "THROTTLE_SUBMIT": "100000/min", "THROTTLE_READ": "100000/min", "LOG_LEVEL": "WARNING"}  # fmt: skip
    with contextlib.suppress(redis.RedisError):  # compose has Redis: waiters are woken, they do not poll
        redis.Redis.from_url(LOCAL_REDIS, socket_connect_timeout=1).ping()
        env["EVENTS_REDIS_URL"] = LOCAL_REDIS
    server = subprocess.Popen(_compose_web_command(port), cwd=BASE_DIR, env=env)
    base = f"http://127.0.0.1:{port}"

    async def scenario() -> tuple[int, int, int, int, list[int]]:
        headers = {"Authorization": f"Token {token}"}
        connector = aiohttp.TCPConnector(limit=0)
        polls_sent = []

        async def on_request_headers_sent(
            session: ClientSession, context: SimpleNamespace, params: TraceRequestHeadersSentParams
        ) -> None:
            if "wait=" in str(params.url):
                polls_sent.append(params.url)

        tracing = aiohttp.TraceConfig()
        tracing.on_request_headers_sent.append(on_request_headers_sent)
        async with aiohttp.ClientSession(headers=headers, connector=connector, trace_configs=[tracing]) as session:
            for _ in range(100):  # wait for the server to come up
                try:
                    async with session.get(f"{base}/health/live") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)

            async def long_poll() -> int:
                async with session.get(f"{base}/api/v1/predictions/{pending.id}/?wait=30") as response:
                    return int(response.status)

            polls = [asyncio.create_task(long_poll()) for _ in range(200)]
            for _ in range(600):  # until every long-poll is on the wire (a minute at most)
                if len(polls_sent) == len(polls):
                    break
                await asyncio.sleep(0.1)
            async with session.get(f"{base}/health/live") as response:
                health_status = response.status
            polls_answered_before_health = sum(poll.done() for poll in polls)
            form = aiohttp.FormData()
            form.add_field("image", photo_bytes("coffee"), filename="cup.jpg", content_type="image/jpeg")
            async with session.post(f"{base}/api/v1/predictions/", data=form) as response:
                upload_status = response.status
            polls_answered_before_upload = sum(poll.done() for poll in polls)
            statuses = await asyncio.gather(*polls)
            return health_status, polls_answered_before_health, upload_status, polls_answered_before_upload, statuses

    try:
        health_status, answered_before_health, upload_status, answered_before_upload, statuses = asyncio.run(scenario())
    finally:
        server.terminate()
        server.wait(timeout=30)

    # Answered while every long-poll still held its connection (they wait 30 s): no poll
    # holds a thread or a worker that the probe or the upload needed.
    assert (health_status, answered_before_health) == (200, 0)
    assert (upload_status, answered_before_upload) == (202, 0)
    assert statuses == [200] * 200  # every long-poll got its (still running) prediction at its deadline

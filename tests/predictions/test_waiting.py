"""Waiting for a result holds no thread: wake-ups over Redis pub/sub, and hundreds of
long-polls against the web server as docker-compose runs it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import threading
import time

import pytest
import redis
from rest_framework.authtoken.models import Token

from predictions import events, selectors
from predictions.models import PredictionStatus
from tests.conftest import BASE_DIR, _compose_web_command, _database_url, _free_port, photo_bytes
from tests.factories import PredictionFactory

LOCAL_REDIS = os.environ.get("TEST_EVENTS_REDIS_URL", "redis://127.0.0.1:6379/15")


def _in_progress(user):
    """A prediction a worker is working on right now: no worker (the e2e tests' one may
    still run) claims it, so only the test decides when it becomes final."""
    from django.utils import timezone

    return PredictionFactory(user=user, status=PredictionStatus.RUNNING, attempts=1, started_at=timezone.now())


def _redis_or_skip() -> None:
    try:
        redis.Redis.from_url(LOCAL_REDIS, socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip(f"needs Redis at {LOCAL_REDIS} (the CI machine runs one)")


@pytest.mark.django_db(transaction=True)
def test_a_waiting_request_is_woken_by_the_announcement_not_by_polling(user, settings):
    _redis_or_skip()
    settings.EVENTS_REDIS_URL = LOCAL_REDIS
    settings.EVENTS_RECHECK_SECONDS = 20  # far longer than the test: only the wake-up can end the wait
    prediction = _in_progress(user)

    def finish_later() -> None:
        time.sleep(0.5)
        PredictionFactory._meta.model.objects.filter(id=prediction.id).update(
            status=PredictionStatus.FAILED, error="done elsewhere"
        )
        events.prediction_final_publish([prediction.id])

    async def wait() -> tuple[float, str]:
        # Subscribed before anything is announced: a listener is started on first use.
        await asyncio.sleep(0)
        began = time.monotonic()
        threading.Thread(target=finish_later).start()
        waited = await selectors.prediction_wait(user=user, prediction_id=prediction.id, seconds=15)
        return time.monotonic() - began, waited.status

    elapsed, status = asyncio.run(wait())

    assert status == PredictionStatus.FAILED
    assert 0.4 < elapsed < 3.0  # woken at once, not after the 20 s re-check or the 15 s deadline


@pytest.mark.django_db(transaction=True)
def test_without_redis_a_wait_still_ends_when_the_row_is_final(user, settings):
    settings.EVENTS_REDIS_URL = ""
    prediction = _in_progress(user)
    threading.Timer(
        0.3,
        lambda: PredictionFactory._meta.model.objects.filter(id=prediction.id).update(status=PredictionStatus.FAILED),
    ).start()

    began = time.monotonic()
    waited = asyncio.run(selectors.prediction_wait(user=user, prediction_id=prediction.id, seconds=30))

    assert waited.status == PredictionStatus.FAILED and time.monotonic() - began < 10  # re-read every <= 1 s


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_200_long_polls_do_not_delay_health_or_an_upload(user, media_dir, active_model):
    """The web server exactly as docker-compose runs it, 200 clients long-polling a
    prediction no worker will finish: a health probe and an upload still answer at once."""
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

    async def scenario() -> tuple[float, float, int, int]:
        headers = {"Authorization": f"Token {token}"}
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
            for _ in range(100):  # wait for the server to come up
                try:
                    async with session.get(f"{base}/health/live") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)

            async def long_poll() -> int:
                async with session.get(f"{base}/api/v1/predictions/{pending.id}/?wait=15") as response:
                    return response.status

            polls = [asyncio.create_task(long_poll()) for _ in range(200)]
            # Admitting 200 requests (token check, throttle) takes 1.5-3 s on a slow 2-core
            # machine; measure once every poll is in and waiting (they wait 15 s).
            await asyncio.sleep(5)
            began = time.monotonic()
            async with session.get(f"{base}/health/live") as response:
                assert response.status == 200
            health_s = time.monotonic() - began
            form = aiohttp.FormData()
            form.add_field("image", photo_bytes("coffee"), filename="cup.jpg", content_type="image/jpeg")
            began = time.monotonic()
            async with session.post(f"{base}/api/v1/predictions/", data=form) as response:
                upload_status = response.status
            upload_s = time.monotonic() - began
            statuses = await asyncio.gather(*polls)
            return health_s, upload_s, upload_status, statuses.count(200)

    try:
        health_s, upload_s, upload_status, answered = asyncio.run(scenario())
    finally:
        server.terminate()
        server.wait(timeout=30)

    assert health_s < 1.0, f"/health/live took {health_s:.2f}s behind 200 long-polls"
    assert upload_status == 202 and upload_s < 2.0, f"an upload took {upload_s:.2f}s behind 200 long-polls"
    assert answered == 200  # every long-poll got its (still pending) prediction at its deadline

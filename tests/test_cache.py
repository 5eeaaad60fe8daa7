"""The Redis cache backend (``imagerec.cache``): one client per process, shared by the
per-thread cache objects that Django makes (one per request under ASGI)."""

from __future__ import annotations

import os
import threading
import uuid

import pytest
import redis
from django.core.cache import caches
from pytest_django import Settings

LOCAL_REDIS = os.environ.get(
    "TEST_CACHE_REDIS_URL", os.environ.get("TEST_EVENTS_REDIS_URL", "redis://127.0.0.1:6379/15")
)


@pytest.fixture
def redis_cache(settings: Settings) -> None:
    try:
        redis.Redis.from_url(LOCAL_REDIS, socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip(f"needs Redis at {LOCAL_REDIS} (the CI machine runs one)")
    settings.CACHES = {"default": {"BACKEND": "imagerec.cache.SharedPoolRedisCache", "LOCATION": LOCAL_REDIS}}


def test_requests_in_their_own_threads_share_one_redis_client_and_see_each_others_writes(
    redis_cache: None,
) -> None:
    key = f"test-cache-{uuid.uuid4().hex}"
    seen: list[tuple[object, object, int | None]] = []

    def request(number: int) -> None:  # each request's sync code runs in a fresh thread under ASGI
        cache = caches["default"]
        if number == 0:
            cache.set(key, 41, 30)
        seen.append((cache, cache._cache.get_client(), cache.get(key)))  # type: ignore[attr-defined]

    threads = [threading.Thread(target=request, args=(0,))]
    threads[0].start()
    threads[0].join()
    threads = [threading.Thread(target=request, args=(n,)) for n in range(1, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len({id(cache) for cache, _, _ in seen}) == 5  # Django's per-thread cache objects
    assert len({id(client) for _, client, _ in seen}) == 1  # one Redis client behind them
    assert [value for _, _, value in seen] == [41] * 5
    assert caches["default"].incr(key) == 42
    caches["default"].delete(key)
    assert caches["default"].get(key) is None

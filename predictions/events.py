"""Wake-ups for long-polling clients: the worker announces each prediction that becomes
final, a waiting request sleeps until it hears its own.

With Redis (``EVENTS_REDIS_URL``, by default the broker or cache URL when either is
Redis) the worker publishes one message per finished prediction on
``imagerec:prediction:<id>``, and a waiter subscribes to that channel: it is woken the
moment the result is stored, and costs an idle socket, not a thread, while it waits.
Without Redis (``make run``'s filesystem broker and SQLite) a waiter re-reads its row on a
slow, growing interval instead.

Publishing never raises: a lost wake-up only means the waiter notices on its next
safety re-check (``EVENTS_RECHECK_SECONDS``) or at its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Iterable
from types import TracebackType

import redis
import redis.asyncio
from django.conf import settings

logger = logging.getLogger(__name__)

CHANNEL_PREFIX = "imagerec:prediction:"


def channel_for(prediction_id: object) -> str:
    return f"{CHANNEL_PREFIX}{prediction_id}"


@functools.cache
def _publisher(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)


def prediction_final_publish(prediction_ids: Iterable[object]) -> None:
    """Announce that these predictions are final (after their rows are committed)."""
    url = settings.EVENTS_REDIS_URL
    ids = list(prediction_ids)
    if not url or not ids:
        return
    try:
        with _publisher(url).pipeline(transaction=False) as pipe:
            for prediction_id in ids:
                pipe.publish(channel_for(prediction_id), "final")
            pipe.execute()
    except redis.RedisError as error:
        logger.warning("Could not announce %d finished predictions: %s", len(ids), error)


class _Subscription:
    """One waiter's subscription; ``wait()`` returns when woken or after ``timeout``."""

    def __init__(self, prediction_id: object) -> None:
        self.prediction_id = prediction_id
        self._client: redis.asyncio.Redis | None = None
        self._pubsub: redis.asyncio.client.PubSub | None = None
        self._poll_interval = 0.05

    @property
    def live(self) -> bool:
        return self._pubsub is not None

    async def __aenter__(self) -> _Subscription:
        url = settings.EVENTS_REDIS_URL
        if not url:
            return self
        try:
            self._client = redis.asyncio.Redis.from_url(url, socket_connect_timeout=1)
            self._pubsub = self._client.pubsub(ignore_subscribe_messages=False)
            await self._pubsub.subscribe(channel_for(self.prediction_id))
            # Read the confirmation: from here on no announcement can be missed, so the
            # caller's next read of the row is the last one that could miss the result.
            await self._pubsub.get_message(timeout=1.0)
        except (redis.RedisError, OSError, TimeoutError) as error:
            logger.warning("Long-poll falls back to polling (Redis unavailable: %s)", error)
            await self._close()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._close()

    async def _close(self) -> None:
        if self._pubsub is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                await self._pubsub.aclose()
        if self._client is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                await self._client.aclose()
        self._pubsub = self._client = None

    async def wait(self, timeout: float) -> bool:
        """Sleep until woken (True) or for at most ``timeout`` seconds (False)."""
        if timeout <= 0:
            return False
        if self._pubsub is None:
            # No Redis: the caller re-reads the row after a growing interval (50 ms to 1 s).
            delay = min(timeout, self._poll_interval)
            self._poll_interval = min(self._poll_interval * 1.5, 1.0)
            await asyncio.sleep(delay)
            return False
        try:
            message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
        except (redis.RedisError, OSError) as error:
            logger.warning("Long-poll lost Redis, falls back to polling: %s", error)
            await self._close()
            return False
        return message is not None


@contextlib.asynccontextmanager
async def prediction_final_subscription(prediction_id: object) -> AsyncIterator[_Subscription]:
    """Subscribe to one prediction's "final" announcement for the duration of the block."""
    async with _Subscription(prediction_id) as subscription:
        yield subscription

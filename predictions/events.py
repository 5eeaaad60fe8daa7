"""Wake-ups for waiting clients: the worker announces each prediction that becomes
final; a request waiting for it (``?wait=`` on GET or POST) sleeps until it hears so.

With Redis (``EVENTS_REDIS_URL``, by default the broker's or the cache's URL when either
is Redis) the worker publishes one message per finished prediction on
``imagerec:prediction:<id>``. Each web process runs one listener thread, subscribed to
``imagerec:prediction:*`` on one connection, that hands each announcement to the
waiters of that id in this process: a waiter costs a dictionary entry and an idle
socket, not a thread or a Redis connection. Without Redis (``make run``: filesystem
broker, SQLite) a waiter re-reads its row on a slow, growing interval instead.

Nothing here raises on a Redis outage: a lost wake-up only means the waiter notices at
its next safety re-check (``EVENTS_RECHECK_SECONDS``) or at its deadline, and a
listener that reconnects wakes every waiter to re-check at once.

The same listener hears **change announcements** (``change_publish(topic)`` on
``imagerec:changed:<topic>``, e.g. a model switch): ``change_stamp(topic)`` changes
whenever one arrives or the listener loses or regains Redis, so a value kept in the
process (``predictions.announced``) knows at once that it must be read again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

CHANNEL_PREFIX = "imagerec:prediction:"
CHANGED_PREFIX = "imagerec:changed:"


def channel_for(prediction_id: object) -> str:
    return f"{CHANNEL_PREFIX}{prediction_id}"


@functools.cache
def _publisher(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)


def prediction_final_publish(prediction_ids: Iterable[object], messages: Sequence[str] | None = None) -> None:
    """Announce that these predictions are final (call after their rows are committed);
    ``messages``: one per id, what a waiter that holds the row needs instead of reading
    it again (``outcomes.outcome_message``), else a bare "final"."""
    url = settings.EVENTS_REDIS_URL
    ids = list(prediction_ids)
    if not url or not ids:
        return
    try:
        with _publisher(url).pipeline(transaction=False) as pipe:
            for index, prediction_id in enumerate(ids):
                pipe.publish(channel_for(prediction_id), messages[index] if messages is not None else "final")
            pipe.execute()
    except redis.RedisError as error:
        logger.warning("Could not announce %d finished predictions: %s", len(ids), error)


def change_publish(topic: str) -> None:
    """Announce to every web process that what ``topic`` names has changed (call after
    the change is committed). Without Redis, or on an outage, nobody hears it: a value
    kept under that topic then lives only its short time (``announced``)."""
    url = settings.EVENTS_REDIS_URL
    if not url:
        return
    try:
        _publisher(url).publish(f"{CHANGED_PREFIX}{topic}", "changed")
    except redis.RedisError as error:
        logger.warning("Could not announce a change of %s: %s", topic, error)


def change_stamp(topic: str) -> tuple[int, int] | None:
    """A stamp that differs whenever a change of ``topic`` was announced to this process
    or the listener lost or regained Redis since; ``None`` when announcements are not
    heard now (no Redis, or not subscribed yet). Starts the listener when needed."""
    listener = _listener()
    if listener is None or not listener.subscribed.is_set():
        return None
    return listener.epoch, listener.changes.get(topic, 0)


class _Waiter:
    """One waiting request: woken from the listener thread, awaited on its own loop."""

    __slots__ = ("event", "loop", "messages", "recheck")

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()
        self.messages: dict[str, str] = {}  # prediction id -> its announcement (only on the loop)
        self.recheck = False  # woken by a reconnection: announcements may have been missed

    def wake(self, prediction_id: str | None = None, message: str = "") -> None:
        with contextlib.suppress(RuntimeError):  # its loop has closed: nobody is waiting
            self.loop.call_soon_threadsafe(self._woken, prediction_id, message)

    def _woken(self, prediction_id: str | None, message: str) -> None:
        if prediction_id is None:
            self.recheck = True
        else:
            self.messages[prediction_id] = message
        self.event.set()


class _Listener(threading.Thread):
    """The process's one subscriber: dispatches announcements to registered waiters."""

    def __init__(self, url: str) -> None:
        super().__init__(name="prediction-events", daemon=True)
        self.url = url
        self.subscribed = threading.Event()
        self._lock = threading.Lock()
        self._waiters: defaultdict[str, set[_Waiter]] = defaultdict(set)
        # Read from other threads without the lock: each is replaced or incremented whole.
        self.epoch = 0  # one more at every subscription and every loss of Redis
        self.changes: dict[str, int] = {}  # announcements heard per topic

    def register(self, prediction_id: object, waiter: _Waiter) -> None:
        with self._lock:
            self._waiters[str(prediction_id)].add(waiter)

    def unregister(self, prediction_id: object, waiter: _Waiter) -> None:
        with self._lock:
            waiters = self._waiters.get(str(prediction_id))
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[str(prediction_id)]

    def _wake(self, prediction_id: str | None, message: str = "") -> None:
        with self._lock:
            if prediction_id is None:
                waiters = [w for group in self._waiters.values() for w in group]
            else:
                waiters = list(self._waiters.get(prediction_id, ()))
        for waiter in waiters:
            waiter.wake(prediction_id, message)

    def run(self) -> None:
        delay = 0.5
        while True:
            try:
                client = redis.Redis.from_url(self.url, socket_connect_timeout=2, health_check_interval=30)
                pubsub = client.pubsub()
                pubsub.psubscribe(f"{CHANNEL_PREFIX}*", f"{CHANGED_PREFIX}*")
                self._confirmed(pubsub, 2)  # from here on nothing is missed
                self.epoch += 1
                self.subscribed.set()
                self._wake(None)  # anything announced while (re)connecting: everyone re-checks
                delay = 0.5
                for message in pubsub.listen():
                    if message.get("type") == "pmessage":
                        channel = message["channel"].decode()
                        if channel.startswith(CHANGED_PREFIX):
                            topic = channel.removeprefix(CHANGED_PREFIX)
                            self.changes[topic] = self.changes.get(topic, 0) + 1
                        else:
                            self._wake(channel.removeprefix(CHANNEL_PREFIX), message["data"].decode())
            except (redis.RedisError, OSError) as error:
                self.subscribed.clear()
                self.epoch += 1
                logger.warning("Prediction events: Redis unavailable (%s); retrying in %.1fs", error, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    @staticmethod
    def _confirmed(pubsub: redis.client.PubSub, count: int) -> None:
        """Read the ``count`` subscription confirmations (each within 2 s)."""
        while count:
            message = pubsub.get_message(timeout=2)
            if message is None:
                raise redis.TimeoutError("no subscription confirmation from Redis")
            if message.get("type") == "psubscribe":
                count -= 1


_listener_lock = threading.Lock()
_listeners: dict[str, _Listener] = {}


def _listener() -> _Listener | None:
    url = settings.EVENTS_REDIS_URL
    if not url:
        return None
    with _listener_lock:
        listener = _listeners.get(url)
        if listener is None or not listener.is_alive():
            listener = _listeners[url] = _Listener(url)
            listener.start()
    return listener


class Subscription:
    """A waiter's view of one prediction's announcements; ``wait()`` returns when woken
    (True) or after ``timeout`` seconds (False)."""

    def __init__(self, prediction_ids: Iterable[object]) -> None:
        self.prediction_ids = [str(i) for i in prediction_ids]
        self._listener = _listener()
        self._waiter = _Waiter()
        self._poll_interval = 0.05

    @property
    def live(self) -> bool:
        """Whether announcements arrive now (else ``wait`` is a timed sleep)."""
        return self._listener is not None and self._listener.subscribed.is_set()

    async def wait(self, timeout: float) -> bool:
        if timeout <= 0:
            return False
        if not self.live:
            # No Redis (or not yet subscribed): re-read after a growing interval, 50 ms to
            # 1 s, jittered so that many waiters that began together do not read together.
            delay = min(timeout, self._poll_interval * random.uniform(0.75, 1.25))
            self._poll_interval = min(self._poll_interval * 1.5, 1.0)
            await asyncio.sleep(delay)
            return False
        try:
            await asyncio.wait_for(self._waiter.event.wait(), timeout)
        except TimeoutError:
            return False
        self._waiter.event.clear()
        return True

    def announced(self) -> dict[str, str] | None:
        """The announcements heard so far, by prediction id (the latest of each); ``None``
        when some may have been missed since the last call (the listener reconnected):
        then the rows must be read."""
        if self._waiter.recheck:
            self._waiter.recheck = False
            return None
        return self._waiter.messages

    def add(self, prediction_ids: Iterable[object]) -> None:
        """Listen for these too. Safe from another thread: a submission that waits adds
        its new rows before they are queued, so no announcement can come before it listens."""
        added = [str(i) for i in prediction_ids]
        self.prediction_ids.extend(added)
        if self._listener is not None:
            for prediction_id in added:
                self._listener.register(prediction_id, self._waiter)

    def _register(self) -> None:
        if self._listener is not None:
            for prediction_id in self.prediction_ids:
                self._listener.register(prediction_id, self._waiter)

    def _unregister(self) -> None:
        if self._listener is not None:
            for prediction_id in self.prediction_ids:
                self._listener.unregister(prediction_id, self._waiter)


@contextlib.asynccontextmanager
async def prediction_final_subscription(prediction_ids: Iterable[object]) -> AsyncIterator[Subscription]:
    """Listen for these predictions' "final" announcements for the duration of the block.

    Read the rows *inside* the block: an announcement made before the block began is
    not heard, but its row is already final when read.
    """
    subscription = Subscription(prediction_ids)
    subscription._register()
    try:
        yield subscription
    finally:
        subscription._unregister()

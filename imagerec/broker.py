"""kombu's transports as this project uses them: the filesystem one (the serverless broker
of `make run`) with atomic writes, and Redis's with one client per channel.

**Filesystem.** kombu's own ``_put`` creates the message file and then writes it, while a consumer
moves any ``*.msg`` file it sees without taking the writer's lock: a worker polling at the
wrong moment reads an empty file and its consumer dies with a JSONDecodeError (seen here
under load). Writing to a temporary name and renaming it into place makes a message
visible only when complete. The folders are created on first connection.

**Redis.** kombu's Redis channel builds a new ``redis.Redis`` client (and its table of
response callbacks) for every command it sends outside the consumer's poller: every
task message sent paid ~0.15 ms of CPU for that alone, about 40 % of sending it
(``make bench-frontdoor``). Here a channel keeps one client on its connection pool
(rebuilt when kombu replaces the pool, e.g. after a fork); a ``redis.Redis`` client is
safe to share between threads, each command taking a connection from the pool.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The folders are made here, on first use, not when the settings are imported.
        for folder in {self.data_folder_in, self.data_folder_out, self.control_folder}:
            os.makedirs(folder, exist_ok=True)

    # Same signature as kombu's filesystem Channel._put, which already differs from the abstract
    # channel's (`payload` and **kwargs vs `message`); kombu's own stubs ignore that override too.
    def _put(self, queue: str, payload: dict[str, Any], **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        partial = os.path.join(self.data_folder_out, f"partial-{uuid.uuid4()}.tmp")  # never matches *.<queue>.msg
        try:
            with open(partial, "wb") as message_file:
                message_file.write(str_to_bytes(dumps(payload)))
            os.replace(partial, os.path.join(self.data_folder_out, name))
        except OSError as error:
            raise ChannelError(f"Cannot add a message to {self.data_folder_out!r}: {error}") from error


class Transport(filesystem.Transport):
    Channel = Channel


class RedisChannel(kombu_redis.Channel):
    _shared_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        pool = self.pool
        shared = self._shared_client
        if shared is None or shared.connection_pool is not pool:
            shared = self._shared_client = self._create_client()  # type: ignore[attr-defined]  # not in the stubs
        yield shared


class RedisTransport(kombu_redis.Transport):
    Channel = RedisChannel

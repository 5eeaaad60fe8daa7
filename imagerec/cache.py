"""Django's Redis cache with one connection pool and one client per process, instead of
a new pool per request and a new client per cache call.

Django keeps a cache object per thread (``caches`` is an asgiref ``Local``), and under
ASGI every request's sync code runs in a thread of its own: with the stock backend each
request built a new Redis connection pool and opened a new connection for its throttle
check, and every cache call built a new ``redis.Redis`` (its table of response
callbacks included): ~1.5 ms of CPU per API request together (``make bench-frontdoor``).
Here every cache object of the process shares them (redis-py's pool and client are
thread-safe: a client takes a pooled connection per command).
"""

from __future__ import annotations

import threading
from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient

_clients: dict[tuple[str, int], Any] = {}
_lock = threading.Lock()


class SharedPoolRedisCacheClient(RedisCacheClient):
    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        # The stubs declare none of the stock client's private attributes.
        stock: Any = self
        index = stock._get_connection_pool_index(write)
        shared = (stock._servers[index], index)
        client = _clients.get(shared)
        if client is None:
            with _lock:
                client = _clients.get(shared)
                if client is None:
                    client = _clients[shared] = stock._client(connection_pool=stock._get_connection_pool(write))
        return client


class SharedPoolRedisCache(RedisCache):
    """``CACHES`` backend for ``CACHE_URL=redis://...``."""

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = SharedPoolRedisCacheClient

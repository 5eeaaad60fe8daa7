"""A value the web process keeps in memory until a change of it is announced: what every
request would otherwise read again (the model versions a submission chooses from).

Three ways a kept value is dropped, so a change is seen by the next request:

- **this process** changed it (``changed()``: called by the services that write it and
  by the model's save/delete signals): dropped at once, and again when the transaction
  commits, so that a request which read the old rows meanwhile does not keep them;
- **another process** changed it: ``changed()`` there announces the topic on Redis once
  committed (``events.change_publish``), and this process's listener thread hears it
  (``events.change_stamp`` moves on); a listener that loses Redis moves it on too;
- **no announcements are heard** (no Redis: ``make run`` on SQLite; or Redis down): a
  value is kept at most ``ANNOUNCED_CACHE_SECONDS``, so another process's change is seen
  within that time. With announcements, at most ``ANNOUNCED_CACHE_MAX_SECONDS`` (a lost
  announcement, e.g. the publisher's Redis blip, still ends).

The value is shared by every thread of the process: treat it as read-only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from django.conf import settings
from django.db import transaction

from . import events

T = TypeVar("T")


@dataclass(frozen=True)
class _Kept(Generic[T]):
    value: T
    stamp: tuple[int, int] | None  # events.change_stamp when read; None: none was heard
    read_at: float  # time.monotonic()


class AnnouncedValue(Generic[T]):
    """``load()``'s result, kept until ``topic`` changes (see the module)."""

    def __init__(self, *, topic: str, load: Callable[[], T], unheard_seconds: float | None = None) -> None:
        """``unheard_seconds``: how long it is kept while no announcement is heard
        (``ANNOUNCED_CACHE_SECONDS`` by default; 0: only while they are heard)."""
        self.topic = topic
        self._load = load
        self._unheard_seconds = unheard_seconds
        self._lock = threading.Lock()
        self._kept: _Kept[T] | None = None
        self._generation = 0  # one more at every local change: a read begun before it is not kept

    def get(self) -> T:
        """The kept value, or ``load()``'s (kept unless a change came while it read)."""
        stamp = events.change_stamp(self.topic)
        now = time.monotonic()
        kept = self._kept
        if kept is not None and self._fresh(kept, stamp, now):
            return kept.value
        generation = self._generation
        value = self._load()
        with self._lock:
            if self._generation == generation:
                self._kept = _Kept(value=value, stamp=stamp, read_at=now)
        return value

    def _fresh(self, kept: _Kept[T], stamp: tuple[int, int] | None, now: float) -> bool:
        age = now - kept.read_at
        if stamp is not None and kept.stamp == stamp:
            return age < float(settings.ANNOUNCED_CACHE_MAX_SECONDS)
        unheard = settings.ANNOUNCED_CACHE_SECONDS if self._unheard_seconds is None else self._unheard_seconds
        return stamp is None and kept.stamp is None and age < float(unheard)

    def forget(self) -> None:
        """Drop the kept value in this process (the next ``get`` reads it)."""
        with self._lock:
            self._generation += 1
            self._kept = None

    def changed(self) -> None:
        """What it holds was changed (or is being changed in the current transaction): drop
        it now and once committed, and then tell the other processes."""
        self.forget()
        transaction.on_commit(self._committed, robust=True)

    def _committed(self) -> None:
        self.forget()
        events.change_publish(self.topic)

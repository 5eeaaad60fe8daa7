"""Worker heartbeat: the worker writes its own row, readiness and /metrics read it.

Why a heartbeat rather than ``celery inspect ping``: it costs the probe one indexed
query instead of a broadcast round-trip (and its reply timeout), works the same on
every broker, and carries the model load time to the web process.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import datetime

from django.conf import settings
from django.db import DatabaseError, connections
from django.utils import timezone

from . import selectors
from .exceptions import ModelUnavailableError
from .models import WorkerHeartbeat
from .services import classifier_for

logger = logging.getLogger(__name__)


def worker_heartbeat_record(
    *,
    hostname: str,
    started_at: datetime,
    model_version: str = "",
    model_load_seconds: float | None = None,
) -> WorkerHeartbeat:
    """Create or refresh this worker's heartbeat row (``last_seen_at`` = now)."""
    heartbeat, _ = WorkerHeartbeat.objects.update_or_create(
        hostname=hostname[:255],
        defaults={
            "pid": os.getpid(),
            "started_at": started_at,
            "last_seen_at": timezone.now(),
            "model_version": model_version[:160],
            "model_load_seconds": model_load_seconds,
        },
    )
    return heartbeat


def worker_heartbeat_remove(*, hostname: str) -> None:
    """Forget a worker that is shutting down, so it stops counting at once."""
    WorkerHeartbeat.objects.filter(hostname=hostname[:255]).delete()


def loaded_model() -> tuple[str, float | None]:
    """("name:version", load seconds) of the active model in this process.

    Called after the warm-up on ``worker_ready``, so ``get_classifier`` returns the
    cached instance and only reads its ``load_seconds``.
    """
    active = selectors.model_version_active()
    if active is None:
        return "", None
    label = f"{active.name}:{active.version}"
    try:
        classifier = classifier_for(model_version=active)
    except ModelUnavailableError:
        return label, None
    return label, classifier.load_seconds


class HeartbeatThread(threading.Thread):
    """Daemon thread in the worker's main process: refreshes the row every interval."""

    def __init__(self, *, hostname: str, model_version: str, model_load_seconds: float | None) -> None:
        super().__init__(name="worker-heartbeat", daemon=True)
        self.hostname = hostname
        self.model_version = model_version
        self.model_load_seconds = model_load_seconds
        self.started_at = timezone.now()
        self.stopped = threading.Event()

    def beat(self) -> None:
        try:
            worker_heartbeat_record(
                hostname=self.hostname,
                started_at=self.started_at,
                model_version=self.model_version,
                model_load_seconds=self.model_load_seconds,
            )
        except DatabaseError as error:
            # A database blip must not kill the worker; readiness will notice the gap.
            logger.warning("Worker heartbeat not written: %s", error)

    def run(self) -> None:
        while not self.stopped.wait(settings.WORKER_HEARTBEAT_INTERVAL_SECONDS):
            self.beat()
            connections.close_all()  # this thread's own connections: no idle ones left open

    def stop(self) -> None:
        self.stopped.set()
        try:
            worker_heartbeat_remove(hostname=self.hostname)
        except DatabaseError as error:
            logger.warning("Worker heartbeat not removed: %s", error)

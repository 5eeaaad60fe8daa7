"""Worker heartbeats: written by the worker's life cycle, read by readiness and /metrics."""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import datetime

from django.utils import timezone

from predictions.models import WorkerHeartbeat


def worker_heartbeat_record(
    *,
    hostname: str,
    started_at: datetime,
    queues: Iterable[str] = (),
    model_loaded: bool = False,
    model_version: str = "",
    model_load_seconds: float | None = None,
    model_error: str = "",
) -> WorkerHeartbeat:
    """Create or refresh this worker's heartbeat row (``last_seen_at`` = now): the
    queues it consumes and whether its model is loaded (else why not)."""
    heartbeat, _ = WorkerHeartbeat.objects.update_or_create(
        hostname=hostname[:255],
        defaults={
            "pid": os.getpid(),
            "started_at": started_at,
            "last_seen_at": timezone.now(),
            "queues": sorted(queues),
            "model_loaded": model_loaded,
            "model_version": model_version[:160],
            "model_load_seconds": model_load_seconds,
            "model_error": model_error[:300],
        },
    )
    return heartbeat


def worker_heartbeat_remove(*, hostname: str) -> None:
    """Forget a worker that is shutting down, so it stops counting at once."""
    WorkerHeartbeat.objects.filter(hostname=hostname[:255]).delete()

"""Reads of worker heartbeats."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from predictions.models import WorkerHeartbeat


def worker_heartbeat_list_fresh(*, max_age_seconds: int) -> list[WorkerHeartbeat]:
    """Workers whose heartbeat is newer than ``max_age_seconds``: the ones answering."""
    cutoff = timezone.now() - timedelta(seconds=max_age_seconds)
    return list(WorkerHeartbeat.objects.filter(last_seen_at__gte=cutoff).order_by("hostname"))

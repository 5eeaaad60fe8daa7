"""Periodic operations tasks (Celery beat)."""

from __future__ import annotations

from celery import shared_task

from .stats.services import prediction_stats_refresh


@shared_task(ignore_result=True)
def stats_refresh() -> None:
    """Recompute the cached stats so pages read them without aggregating."""
    prediction_stats_refresh()

"""Reads of reprocess jobs: what is left to send and the live counts."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count, Q, QuerySet

from predictions.models import (
    Prediction,
    PredictionStatus,
    ReprocessJob,
    ReprocessJobStatus,
    ReprocessScope,
)


def reprocess_remaining(*, job: ReprocessJob) -> QuerySet[Prediction]:
    """Predictions a reprocess job has still to send: final, made before it began, not
    sent by it yet; for ``older_versions`` only those succeeded with another version."""
    queryset = Prediction.objects.filter(
        status__in=[PredictionStatus.SUCCEEDED, PredictionStatus.FAILED], created_at__lt=job.created_at
    ).exclude(reprocess_job=job)
    if job.scope == ReprocessScope.OLDER_VERSIONS:
        queryset = queryset.filter(status=PredictionStatus.SUCCEEDED).exclude(model_version_id=job.model_version_id)
    return queryset.order_by()


@dataclass(frozen=True)
class ReprocessCounts:
    waiting: int  # not sent yet, or sent and pending
    running: int
    done: int  # succeeded again
    failed: int


def reprocess_job_counts(*, job: ReprocessJob) -> ReprocessCounts:
    """A job's live counts, from the predictions it marked (and those left to send)."""
    marked = Prediction.objects.filter(reprocess_job=job).aggregate(
        pending=Count("id", filter=Q(status=PredictionStatus.PENDING)),
        running=Count("id", filter=Q(status=PredictionStatus.RUNNING)),
        done=Count("id", filter=Q(status=PredictionStatus.SUCCEEDED)),
        failed=Count("id", filter=Q(status=PredictionStatus.FAILED)),
    )
    sending = job.status in (ReprocessJobStatus.RUNNING, ReprocessJobStatus.PAUSED)
    left = reprocess_remaining(job=job).count() if sending else 0
    return ReprocessCounts(
        waiting=left + marked["pending"], running=marked["running"], done=marked["done"], failed=marked["failed"]
    )

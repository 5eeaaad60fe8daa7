"""Reprocess jobs: finished predictions run again with the active model, in chunks, in the
background."""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Sequence
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from imagerec.celery import broker_errors
from predictions.exceptions import ConflictError
from predictions.models import (
    Prediction,
    PredictionStatus,
    ReprocessJob,
    ReprocessJobStatus,
)
from predictions.registry.selectors import model_version_active_get
from predictions.reprocessing import selectors as reprocess_selectors
from predictions.services import prediction_enqueue
from predictions.services.submissions import RETRY_RESET

logger = logging.getLogger(__name__)

REPROCESS_CHUNK_SIZE = 100  # predictions sent per step


REPROCESS_STEP_SECONDS = 2.0  # between steps


REPROCESS_WARNING = (
    "Corrected labels are kept: a user's correction stays with its prediction whatever the new model answers. "
    "Each prediction is pending while it runs again and gets the new result, or an error, in place of the old one."
)


def reprocess_job_start(*, user: User | None, scope: str) -> ReprocessJob:
    """Start re-running finished predictions made before now (every one, or only those
    succeeded with a version other than the active one) with the active version, in the
    background (``reprocess_job_step`` every ``REPROCESS_STEP_SECONDS``, after commit).
    One job at a time: raises ``ConflictError`` while another is running or paused."""
    with transaction.atomic():
        if ReprocessJob.objects.filter(status__in=[ReprocessJobStatus.RUNNING, ReprocessJobStatus.PAUSED]).exists():
            raise ConflictError("Another reprocess job is running or paused; cancel it or wait for it to finish.")
        job = ReprocessJob(
            scope=scope, model_version=model_version_active_get(), created_by=user, created_at=timezone.now()
        )
        job.full_clean()
        job.save()
        job.total = reprocess_selectors.reprocess_remaining(job=job).count()
        job.save(update_fields=["total"])
        transaction.on_commit(lambda: reprocess_step_send(job_id=job.pk, countdown=0), robust=True)
    logger.info("Reprocess job %s started by %s: %d predictions", job.pk, user or "the system", job.total)
    return job


def reprocess_step_send(*, job_id: int, countdown: float = REPROCESS_STEP_SECONDS) -> None:
    """Queue the job's next step (the one place it is sent). A broker outage is logged:
    the job waits for Resume, which sends it again."""
    from .tasks import reprocess_step  # the tasks import the services, so imported here

    try:
        reprocess_step.apply_async(args=(job_id,), countdown=countdown, retry=False)
    except broker_errors() as error:
        logger.warning("Broker unavailable, reprocess job %s waits for Resume: %s", job_id, error)


def _reprocess_job_advance(*, job_id: int) -> bool:
    """One step of a running job: send the next ``REPROCESS_CHUNK_SIZE`` predictions to
    the workers (reset to pending, ``assigned_version`` = the job's version) unless half
    a chunk of it is still waiting or running (live uploads are not starved); mark the
    job done once nothing is left and everything sent is final. Returns whether to step
    again (not for a paused, cancelled or done job)."""
    job = ReprocessJob.objects.select_related("model_version").filter(pk=job_id).first()
    if job is None or job.status != ReprocessJobStatus.RUNNING:
        return False
    in_flight = Prediction.objects.filter(
        reprocess_job=job, status__in=[PredictionStatus.PENDING, PredictionStatus.RUNNING]
    ).count()
    if in_flight >= max(1, REPROCESS_CHUNK_SIZE // 2):
        return True
    ids = list(
        reprocess_selectors.reprocess_remaining(job=job)
        .order_by("created_at", "id")
        .values_list("id", flat=True)[:REPROCESS_CHUNK_SIZE]
    )
    if not ids:
        if in_flight:
            return True
        ReprocessJob.objects.filter(pk=job.pk, status=ReprocessJobStatus.RUNNING).update(
            status=ReprocessJobStatus.DONE, finished_at=timezone.now()
        )
        logger.info("Reprocess job %s done", job.pk)
        return False
    now = timezone.now()
    with transaction.atomic():
        # Only rows still final: one a user retried or deleted meanwhile is left alone.
        Prediction.objects.filter(id__in=ids, status__in=[PredictionStatus.SUCCEEDED, PredictionStatus.FAILED]).update(
            **RETRY_RESET, assigned_version=job.model_version, reprocess_job=job, retried_at=now, enqueued_at=now
        )
        sent = Prediction.objects.filter(id__in=ids, reprocess_job=job, status=PredictionStatus.PENDING)
        transaction.on_commit(functools.partial(_reprocess_send, ids=list(sent.values_list("id", flat=True))))
    return True


def reprocess_job_step(*, job_id: int) -> bool:
    """One step of a running job (``_reprocess_job_advance``), then the next step queued
    ``REPROCESS_STEP_SECONDS`` later while the job has work; returns whether it did."""
    again = _reprocess_job_advance(job_id=job_id)
    if again:
        reprocess_step_send(job_id=job_id)
    return again


def _reprocess_send(*, ids: list[uuid.UUID]) -> None:
    for prediction_id in ids:
        prediction_enqueue(prediction_id=prediction_id, rerun=True)


def _reprocess_job_move(*, job: ReprocessJob, allowed: Sequence[str], status: str) -> ReprocessJob:
    changes: dict[str, Any] = {"status": status}
    if status == ReprocessJobStatus.CANCELLED:
        changes["finished_at"] = timezone.now()
    if not ReprocessJob.objects.filter(pk=job.pk, status__in=allowed).update(**changes):
        job.refresh_from_db()
        raise ConflictError(f"This reprocess job is {job.status}; it cannot be {status} now.")
    job.refresh_from_db()
    return job


def reprocess_job_pause(*, job: ReprocessJob) -> ReprocessJob:
    """Send no more predictions until resumed (those sent finish). ``ConflictError`` unless running."""
    return _reprocess_job_move(job=job, allowed=[ReprocessJobStatus.RUNNING], status=ReprocessJobStatus.PAUSED)


def reprocess_job_resume(*, job: ReprocessJob) -> ReprocessJob:
    """Go on sending (a running job gets its step sent again, should its message have
    been lost). ``ConflictError`` for a cancelled or done job."""
    job = _reprocess_job_move(
        job=job, allowed=[ReprocessJobStatus.PAUSED, ReprocessJobStatus.RUNNING], status=ReprocessJobStatus.RUNNING
    )
    transaction.on_commit(lambda: reprocess_step_send(job_id=job.pk, countdown=0), robust=True)
    return job


def reprocess_job_cancel(*, job: ReprocessJob) -> ReprocessJob:
    """Send nothing more, ever (those sent finish). ``ConflictError`` for a done or cancelled job."""
    return _reprocess_job_move(
        job=job, allowed=[ReprocessJobStatus.RUNNING, ReprocessJobStatus.PAUSED], status=ReprocessJobStatus.CANCELLED
    )

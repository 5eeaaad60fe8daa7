"""Every read that is more than a ``get()``. Per-user scoping lives here, once."""

from __future__ import annotations

import asyncio
import hashlib
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.db.models import Count, Q, QuerySet
from django.http import Http404
from django.utils import timezone

from . import events
from .models import (
    Correction,
    ModelActivation,
    ModelActivationKind,
    ModelVersion,
    ModelVersionStatus,
    Prediction,
    PredictionId,
    PredictionStatus,
    ReprocessJob,
    ReprocessJobStatus,
    ReprocessScope,
    WorkerHeartbeat,
)


@dataclass(frozen=True)
class PredictionFilters:
    status: str = ""
    label: str = ""
    created_after: date | datetime | None = None
    created_before: date | datetime | None = None
    model_version: str = ""


def prediction_list(*, user: User, filters: PredictionFilters | None = None) -> QuerySet[Prediction]:
    """The user's own predictions, newest first, narrowed by ``filters``."""
    queryset = Prediction.objects.filter(user=user).select_related("model_version", "correction")
    filters = filters or PredictionFilters()
    if filters.status:
        queryset = queryset.filter(status=filters.status)
    if filters.label:
        queryset = queryset.filter(label__icontains=filters.label)
    if filters.created_after:
        queryset = queryset.filter(created_at__date__gte=_as_date(filters.created_after))
    if filters.created_before:
        queryset = queryset.filter(created_at__date__lte=_as_date(filters.created_before))
    if filters.model_version:
        queryset = queryset.filter(model_version__version=filters.model_version)
    return queryset.order_by("-created_at")


def _as_date(value: date | datetime) -> date:
    return value.date() if isinstance(value, datetime) else value


def prediction_get(*, user: User | None, prediction_id: PredictionId) -> Prediction:
    """One of the user's predictions; another user's (or a malformed id) is a 404.

    ``user=None`` reads any user's prediction: only for views that checked
    ``access.can_view_all_predictions`` (the admin).
    """
    try:
        uuid.UUID(str(prediction_id))
    except ValueError as error:
        raise Http404("No such prediction.") from error
    try:
        queryset = Prediction.objects.select_related("model_version", "correction")
        if user is not None:
            queryset = queryset.filter(user=user)
        return queryset.get(id=prediction_id)
    except Prediction.DoesNotExist as error:
        raise Http404("No such prediction.") from error


async def prediction_wait(*, user: User, prediction_id: PredictionId, seconds: float) -> Prediction:
    """The user's prediction, once it is final or after ``seconds`` (long-poll)."""
    return (await predictions_wait(user=user, prediction_ids=[prediction_id], seconds=seconds))[0]


async def predictions_wait(*, user: User, prediction_ids: Sequence[PredictionId], seconds: float) -> list[Prediction]:
    """The user's predictions, once all are final or after ``seconds``.

    Waits on the worker's announcements (``events``), holding no thread: the rows are
    read once listening has begun, then only when woken, every
    ``EVENTS_RECHECK_SECONDS`` as a safety net, and at the deadline. Without Redis the
    subscription re-reads on a growing interval instead. A missing or foreign id is a 404.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + (seconds if seconds == seconds else 0.0)  # NaN waits not at all
    async with events.prediction_final_subscription(prediction_ids) as subscription:
        while True:
            predictions = await _predictions_read(user, prediction_ids)
            remaining = deadline - loop.time()
            if all(p.is_final for p in predictions) or remaining <= 0:
                return predictions
            # The safety re-read, jittered: 200 waiters that began together must not all
            # read at the same instant (seen as a 1 s stall of everything else).
            await subscription.wait(min(remaining, settings.EVENTS_RECHECK_SECONDS * random.uniform(0.8, 1.2)))


def _predictions_read_sync(user: User, prediction_ids: Sequence[PredictionId]) -> list[Prediction]:
    try:
        found = {
            str(p.id): p
            for p in Prediction.objects.select_related("model_version").filter(
                user=user, id__in=[uuid.UUID(str(i)) for i in prediction_ids]
            )
        }
        return [found[str(uuid.UUID(str(i)))] for i in prediction_ids]
    except (ValueError, KeyError) as error:
        raise Http404("No such prediction.") from error
    finally:
        connection_release()


def connection_release() -> None:
    """Hand this thread's database connection back (to the pool) before a long wait:
    a waiting request must not hold one of the few connections for its whole wait."""
    if not connection.in_atomic_block:
        connection.close()


_predictions_read = sync_to_async(_predictions_read_sync)


async def prediction_aget(*, user: User, prediction_id: PredictionId) -> Prediction:
    """``prediction_get`` for async views."""
    return (await _predictions_read(user, [prediction_id]))[0]


def prediction_reusable(
    *, user: User, sha256: str, top_k: int, model_version: ModelVersion | None = None
) -> Prediction | None:
    """An earlier successful prediction of the same bytes by ``model_version`` (the one
    this submission is assigned; the active one when ``None``), whose stored result
    covers ``top_k``; the user's own unless ``RESULT_CACHE`` is ``all``."""
    scope = settings.RESULT_CACHE
    if scope == "off":
        return None
    by_version = Q(model_version=model_version) if model_version is not None else Q(model_version__is_active=True)
    queryset = Prediction.objects.filter(by_version, sha256=sha256, status=PredictionStatus.SUCCEEDED, top_k__gte=top_k)
    if scope != "all":
        queryset = queryset.filter(user=user)
    return queryset.order_by("-completed_at").first()


def prediction_pending_ids(*, limit: int, exclude: PredictionId | None = None) -> list[uuid.UUID]:
    """The oldest pending predictions a worker may take into its batch."""
    if limit <= 0:
        return []
    queryset = Prediction.objects.filter(status=PredictionStatus.PENDING, attempts__lt=settings.MAX_ATTEMPTS)
    if exclude is not None:
        queryset = queryset.exclude(id=exclude)
    return list(queryset.order_by("created_at").values_list("id", flat=True)[:limit])


def prediction_stuck_ids(*, before: datetime) -> list[uuid.UUID]:
    """Ids of predictions pending since before ``before``, or running since before it
    (their worker died or their message was lost), whose task was not (re)sent since."""
    return list(
        Prediction.objects.filter(
            Q(status=PredictionStatus.PENDING, created_at__lt=before)
            | Q(status=PredictionStatus.RUNNING, started_at__lt=before)
        )
        .filter(Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=before))
        .order_by("created_at")
        .values_list("id", flat=True)
    )


def correction_list(
    *, model_version: ModelVersion | None = None, corrections_only: bool = False
) -> QuerySet[Correction]:
    """Every user's reviews, corrections and confirmations (only for callers that
    checked ``access.can_view_all_predictions``), by label, optionally of one model
    version's predictions, or corrections alone."""
    queryset = Correction.objects.select_related("prediction", "model_version")
    if corrections_only:
        queryset = queryset.filter(confirmed=False)
    if model_version is not None:
        queryset = queryset.filter(model_version=model_version)
    return queryset.order_by("label", "created_at")


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


def model_version_active() -> ModelVersion | None:
    return ModelVersion.objects.filter(is_active=True).first()


def traffic_bucket(*, user_id: int, model_version_id: int) -> int:
    """The user's bucket (0-99) for one candidate: a stable hash of both ids, the same in
    every process and after restarts (Python's ``hash()`` is salted per process)."""
    digest = hashlib.sha256(f"{user_id}:{model_version_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


def model_version_for_user(*, user: User) -> ModelVersion | None:
    """The version a new prediction of ``user`` runs with (A/B test): the candidate with
    a share of traffic when the user's ``traffic_bucket`` for it is below its
    ``traffic_percent``, else the active version (``None`` before any is registered).

    Sticky: the same user gets the same answer on every submission while the share is
    unchanged; raising the share only moves users from the active side to the candidate.
    One query.
    """
    active: ModelVersion | None = None
    for version in ModelVersion.objects.filter(
        Q(is_active=True) | Q(status=ModelVersionStatus.CANDIDATE, traffic_percent__gt=0)
    ):
        if version.is_active:
            active = version
        elif traffic_bucket(user_id=user.pk, model_version_id=version.pk) < version.traffic_percent:
            return version
    return active


def model_version_in_use() -> QuerySet[ModelVersion]:
    """The versions a worker must keep loaded, the active one first: the active version,
    the A/B candidate with a share of traffic, and any version a waiting (pending or
    running) prediction was given at submission or by a reprocess job. One query."""
    waiting_on = Prediction.objects.filter(
        status__in=[PredictionStatus.PENDING, PredictionStatus.RUNNING], assigned_version__isnull=False
    ).values("assigned_version_id")
    return (
        ModelVersion.objects.filter(
            Q(is_active=True) | Q(status=ModelVersionStatus.CANDIDATE, traffic_percent__gt=0) | Q(pk__in=waiting_on)
        )
        .exclude(status=ModelVersionStatus.RETIRED)  # its waiting rows run with the active one
        .order_by("-is_active", "-traffic_percent", "name", "version")
    )


def model_version_list() -> QuerySet[ModelVersion]:
    return ModelVersion.objects.select_related("parent").order_by("name", "version")


def model_version_get(*, name: str, version: str) -> ModelVersion:
    """One registered version; raises ``ModelVersion.DoesNotExist``."""
    return ModelVersion.objects.get(name=name, version=version)


def model_version_rollback_target(*, active: ModelVersion) -> ModelVersion | None:
    """The version that was active before ``active`` was last activated (rollbacks
    themselves skipped, so rolling back again walks further back); ``None`` when it was
    the first."""
    activation = (
        ModelActivation.objects.filter(model_version=active)
        .exclude(kind=ModelActivationKind.ROLLBACK)
        .select_related("previous")
        .first()
    )
    return activation.previous if activation is not None else None


def model_activation_list(*, limit: int = 100) -> QuerySet[ModelActivation]:
    """The latest switches of the active model version, newest first."""
    return ModelActivation.objects.select_related("model_version", "previous", "activated_by")[:limit]


def worker_heartbeat_list_fresh(*, max_age_seconds: int) -> list[WorkerHeartbeat]:
    """Workers whose heartbeat is newer than ``max_age_seconds``: the ones answering."""
    cutoff = timezone.now() - timedelta(seconds=max_age_seconds)
    return list(WorkerHeartbeat.objects.filter(last_seen_at__gte=cutoff).order_by("hostname"))

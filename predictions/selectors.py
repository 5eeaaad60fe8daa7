"""Every read that is more than a ``get()``. Per-user scoping lives here, once."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import date, datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q, QuerySet
from django.http import Http404

from .models import ModelVersion, Prediction, PredictionStatus


@dataclass(frozen=True)
class PredictionFilters:
    status: str = ""
    label: str = ""
    created_after: date | datetime | None = None
    created_before: date | datetime | None = None
    model_version: str = ""


def prediction_list(*, user: AbstractBaseUser, filters: PredictionFilters | None = None) -> QuerySet[Prediction]:
    """The user's own predictions, newest first, narrowed by ``filters``."""
    queryset = Prediction.objects.filter(user=user).select_related("model_version")
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


def prediction_get(*, user: AbstractBaseUser | None, prediction_id: object) -> Prediction:
    """One of the user's predictions; another user's (or a malformed id) is a 404.

    ``user=None`` reads any user's prediction: for staff views only.
    """
    try:
        uuid.UUID(str(prediction_id))
    except ValueError as error:
        raise Http404("No such prediction.") from error
    try:
        queryset = Prediction.objects.select_related("model_version")
        if user is not None:
            queryset = queryset.filter(user=user)
        return queryset.get(id=prediction_id)
    except Prediction.DoesNotExist as error:
        raise Http404("No such prediction.") from error


def prediction_wait(*, user: AbstractBaseUser, prediction_id: object, seconds: float) -> Prediction:
    """The user's prediction, re-read until it is final or ``seconds`` pass (long-poll).

    Polls the row with a growing interval (0.1 s up to 1 s): a few queries per call,
    not one per tick.
    """
    deadline = time.monotonic() + (seconds if seconds == seconds else 0.0)  # NaN waits not at all
    interval = 0.1
    prediction = prediction_get(user=user, prediction_id=prediction_id)
    while not prediction.is_final and time.monotonic() + interval <= deadline:
        time.sleep(interval)
        interval = min(interval * 1.5, 1.0)
        prediction = prediction_get(user=user, prediction_id=prediction_id)
    return prediction


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


def model_version_active() -> ModelVersion | None:
    return ModelVersion.objects.filter(is_active=True).first()


def model_version_list() -> QuerySet[ModelVersion]:
    return ModelVersion.objects.order_by("name", "version")


# --- Workers (appended: health checks and metrics) ---------------------------------
from datetime import timedelta  # noqa: E402

from django.utils import timezone  # noqa: E402

from .models import WorkerHeartbeat  # noqa: E402


def worker_heartbeat_list_fresh(*, max_age_seconds: int) -> list[WorkerHeartbeat]:
    """Workers whose heartbeat is newer than ``max_age_seconds``: the ones answering."""
    cutoff = timezone.now() - timedelta(seconds=max_age_seconds)
    return list(WorkerHeartbeat.objects.filter(last_seen_at__gte=cutoff).order_by("hostname"))

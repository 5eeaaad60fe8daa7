"""Every read that is more than a ``get()``. Per-user scoping lives here, once."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.db.models import Count, F, Q, QuerySet, Window
from django.db.models.functions import RowNumber

from . import events, outcomes
from .exceptions import NotFoundError
from .models import (
    ModelVersion,
    Prediction,
    PredictionId,
    PredictionStatus,
)


@dataclass(frozen=True)
class PredictionFilters:
    status: str = ""
    label: str = ""
    created_after: date | datetime | None = None
    created_before: date | datetime | None = None
    model_version: str = ""
    filename: str = ""
    uncertain: bool | None = None


def prediction_list(*, user: User, filters: PredictionFilters | None = None) -> QuerySet[Prediction]:
    """The user's own predictions, newest first, narrowed by ``filters``."""
    queryset = Prediction.objects.filter(user=user).select_related("model_version", "correction")
    filters = filters or PredictionFilters()
    if filters.status:
        queryset = queryset.filter(status=filters.status)
    if filters.label:  # the model's label or the owner's correction of it
        queryset = queryset.filter(
            Q(label__icontains=filters.label)
            | Q(correction__confirmed=False, correction__label__icontains=filters.label)
        )
    if filters.filename:
        queryset = queryset.filter(original_filename__icontains=filters.filename)
    if filters.uncertain is not None:
        queryset = queryset.filter(uncertain=filters.uncertain)
    if filters.created_after:
        queryset = queryset.filter(created_at__date__gte=_as_date(filters.created_after))
    if filters.created_before:
        queryset = queryset.filter(created_at__date__lte=_as_date(filters.created_before))
    if filters.model_version:
        queryset = queryset.filter(model_version__version=filters.model_version)
    return queryset.order_by("-created_at")


def prediction_list_selected(*, user: User, prediction_ids: Sequence[str]) -> QuerySet[Prediction]:
    """The user's predictions among ``prediction_ids`` (the gallery's multi-select);
    malformed and foreign ids are left out, so a tampered form selects nothing else."""
    valid = []
    for prediction_id in prediction_ids:
        try:
            valid.append(uuid.UUID(str(prediction_id)))
        except ValueError:
            continue
    return prediction_list(user=user).filter(id__in=valid)


def prediction_model_versions(*, user: User) -> list[str]:
    """The model versions that made the user's predictions (the history's version filter)."""
    versions = (
        Prediction.objects.filter(user=user, model_version__isnull=False)
        .values_list("model_version__version", flat=True)
        .distinct()
    )
    return sorted(set(versions))


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
        raise NotFoundError("No such prediction.") from error
    try:
        queryset = Prediction.objects.select_related("model_version", "correction")
        if user is not None:
            queryset = queryset.filter(user=user)
        return queryset.get(id=prediction_id)
    except Prediction.DoesNotExist as error:
        raise NotFoundError("No such prediction.") from error


async def prediction_wait(*, user: User, prediction_id: PredictionId, seconds: float) -> Prediction:
    """The user's prediction, once it is final or after ``seconds`` (long-poll)."""
    return (await predictions_wait(user=user, prediction_ids=[prediction_id], seconds=seconds))[0]


async def predictions_wait(
    *,
    user: User,
    prediction_ids: Sequence[PredictionId],
    seconds: float,
    subscription: events.Subscription | None = None,
    known: Sequence[Prediction] | None = None,
) -> list[Prediction]:
    """The user's predictions, once all are final or after ``seconds``.

    Waits on the worker's announcements (``events``), holding no thread: the rows are
    read once listening has begun, then only when woken, every
    ``EVENTS_RECHECK_SECONDS`` as a safety net, and at the deadline. Without Redis the
    subscription re-reads on a growing interval instead. A missing or foreign id is a 404.

    A submission that waits passes the ``subscription`` it opened before its rows were
    queued and the rows it just wrote (``known``): then the first read is skipped, since
    nothing can have changed them unheard.
    """
    if subscription is None:
        async with events.prediction_final_subscription(prediction_ids) as opened:
            return await _predictions_wait(user, prediction_ids, seconds, opened, None)
    return await _predictions_wait(user, prediction_ids, seconds, subscription, known)


async def _predictions_wait(
    user: User,
    prediction_ids: Sequence[PredictionId],
    seconds: float,
    subscription: events.Subscription,
    known: Sequence[Prediction] | None,
) -> list[Prediction]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + (seconds if seconds == seconds else 0.0)  # NaN waits not at all
    # Rows already final (a cached result) are read again: the answer shows their model.
    unread = list(known) if known is not None and not all(p.is_final for p in known) else None
    while True:
        predictions, unread = unread or await _predictions_read(user, prediction_ids), None
        remaining = deadline - loop.time()
        if all(p.is_final for p in predictions) or remaining <= 0:
            return predictions
        # The safety re-read, jittered: 200 waiters that began together must not all
        # read at the same instant (seen as a 1 s stall of everything else).
        if await subscription.wait(min(remaining, settings.EVENTS_RECHECK_SECONDS * random.uniform(0.8, 1.2))):
            announced = subscription.announced()
            if announced is not None and _announced_apply(predictions, announced):
                unread = predictions  # the worker's announcements said it all: no read


def _announced_apply(predictions: Sequence[Prediction], announced: dict[str, str]) -> bool:
    """Give the rows not final yet the outcome their announcement carries
    (``outcomes``); ``False`` when one announced carries none (the rows must be read).
    Rows not announced yet stay as they are: their announcement wakes the waiter."""
    for prediction in predictions:
        message = None if prediction.is_final else announced.get(str(prediction.id))
        if message is not None and not outcomes.outcome_apply(prediction, message):
            return False
    return True


# What an answer shows of a version is its name and number, not its classes (1,000 for
# ImageNet), metadata and metrics: decoding those JSON columns was ~0.5 ms of each poll.
_ANSWER_ONLY = ("model_version__classes", "model_version__metadata", "model_version__metrics")


def _predictions_read_sync(user: User, prediction_ids: Sequence[PredictionId], full: bool = False) -> list[Prediction]:
    try:
        queryset = Prediction.objects.select_related("model_version").order_by()
        queryset = queryset if full else queryset.defer(*_ANSWER_ONLY)
        found = {str(p.id): p for p in queryset.filter(user=user, id__in=[uuid.UUID(str(i)) for i in prediction_ids])}
        return [found[str(uuid.UUID(str(i)))] for i in prediction_ids]
    except (ValueError, KeyError) as error:
        raise NotFoundError("No such prediction.") from error
    finally:
        connection_release()


def predictions_read(*, user: User, prediction_ids: Sequence[PredictionId]) -> list[Prediction]:
    """The user's predictions, in the order asked, with their model version, read once
    (a missing or foreign id is a 404); the connection is handed back after."""
    return _predictions_read_sync(user, prediction_ids)


def connection_release() -> None:
    """Hand this thread's database connection back (to the pool) before a long wait:
    a waiting request must not hold one of the few connections for its whole wait."""
    if not connection.in_atomic_block:
        connection.close()


_predictions_read = sync_to_async(_predictions_read_sync)


async def prediction_aget(*, user: User, prediction_id: PredictionId) -> Prediction:
    """``prediction_get`` for async views (the whole model version: a review reads its classes)."""
    return (await sync_to_async(_predictions_read_sync)(user, [prediction_id], full=True))[0]


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
    return queryset.select_related("model_version").order_by("-completed_at").first()


@dataclass(frozen=True)
class PendingRow:
    """A pending prediction a worker may draw into its batch."""

    id: uuid.UUID
    user_id: int
    decode_bytes: int
    user_rank: int  # 1 for the user's oldest pending row, 2 for the next, ...
    created_at: datetime


def prediction_pending_fair(*, limit: int, per_user: int, exclude: PredictionId | None = None) -> list[PendingRow]:
    """Pending predictions in the order a fair draw takes them: round-robin across users,
    each user's oldest first (each user's rows ranked by age, then rank 1 of every user
    oldest first, then rank 2, ...), at most ``per_user`` of each user. One query with a
    window function (SQLite and PostgreSQL alike)."""
    if limit <= 0:
        return []
    queryset = Prediction.objects.filter(status=PredictionStatus.PENDING, attempts__lt=settings.MAX_ATTEMPTS)
    if exclude is not None:
        queryset = queryset.exclude(id=exclude)
    ranked = queryset.annotate(
        user_rank=Window(RowNumber(), partition_by=[F("user_id")], order_by=[F("created_at").asc(), F("id").asc()])
    ).filter(user_rank__lte=per_user)
    rows = ranked.order_by("user_rank", "created_at", "id").values_list(
        "id", "user_id", "decode_bytes", "user_rank", "created_at"
    )[:limit]
    return [PendingRow(*row) for row in rows]


def prediction_running_by_user(*, since: datetime, user_ids: Sequence[int] | None = None) -> dict[int, int]:
    """How many predictions of each user are claimed and running (claimed after ``since``:
    older claims are of workers that died, and are reclaimed)."""
    queryset = Prediction.objects.filter(status=PredictionStatus.RUNNING, started_at__gte=since)
    if user_ids is not None:
        queryset = queryset.filter(user_id__in=user_ids)
    counts = queryset.values("user_id").annotate(running=Count("id")).values_list("user_id", "running")
    return dict(counts)


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

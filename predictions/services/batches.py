"""The worker's side: claim a batch, classify it in one model call per version, store every
outcome at once, announce it."""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.db.models import F, Q
from django.utils import timezone

from ml.runner import Classifier
from predictions import events, outcomes, selectors
from predictions.exceptions import ModelUnavailableError, StorageUnavailableError
from predictions.images import THUMBNAIL_SIZE
from predictions.models import ModelVersion, ModelVersionStatus, Prediction, PredictionId, PredictionStatus
from predictions.registry import runtime
from predictions.registry import selectors as registry_selectors
from predictions.storage import media_read

from .results import (
    FAILED_SERVER_MESSAGE,
    MISSING_FILE_MESSAGE,
    TOO_LONG_MESSAGE,
    prediction_complete_many,
    prediction_fail,
    prediction_failure_set,
    prediction_result_set,
)
from .submissions import prediction_chunk_forward, prediction_enqueue, prediction_enqueue_many
from .thumbnails import prediction_thumbnails_store

logger = logging.getLogger(__name__)
batch_logger = logging.getLogger("predictions.batch")

# A row whose user is at INFLIGHT_PER_USER is sent again this much later (no spinning through the queue).
DEFER_SECONDS = 1.0


@dataclass
class BatchReport:
    """What one worker batch did, and where its time went (logged per batch)."""

    size: int = 0
    succeeded: int = 0
    failed: int = 0
    claim_ms: float = 0.0
    preprocess_ms: float = 0.0
    inference_ms: float = 0.0
    store_ms: float = 0.0
    notify_ms: float = 0.0
    finished: list[str] = field(default_factory=list)  # ids final here (not failed)
    thumbnails: dict[str, bytes] = field(default_factory=dict)  # by id: made from the pixels decoded

    def log_line(self) -> str:
        return (
            f"batch size={self.size} succeeded={self.succeeded} failed={self.failed} claim_ms={self.claim_ms:.2f} "
            f"preprocess_ms={self.preprocess_ms:.2f} inference_ms={self.inference_ms:.2f} "
            f"store_ms={self.store_ms:.2f} notify_ms={self.notify_ms:.2f}"
        )


def prediction_claim(
    *, prediction_id: PredictionId, batch_size: int = 1, chunk: Sequence[PredictionId] = ()
) -> tuple[uuid.UUID, list[Prediction]]:
    """Claim ``prediction_id`` and up to ``batch_size - 1`` other pending predictions,
    drawn fairly (``_fair_draw``), in one conditional UPDATE; returns the claim token and
    the claimed rows (empty when there was nothing to do). The message's ``chunk`` rows
    the batch did not take are sent on in one message (``prediction_chunk_forward``).

    Only ``pending`` rows are claimed, plus this message's own row when it has been
    ``running`` for longer than ``RECONCILE_AFTER_SECONDS`` (its worker died mid-task).
    A row claimed ``MAX_ATTEMPTS`` times is failed instead, so an image that kills
    workers cannot loop forever. Each claimed row gets the batch's token: completing a
    row later requires it, so a row claimed again by someone else is never completed
    twice. A pending row whose owner already has ``INFLIGHT_PER_USER`` running is not
    claimed: its message is sent again ``DEFER_SECONDS`` later, to be claimed once theirs
    finish (or drawn into another batch meanwhile).
    """
    now = timezone.now()
    stale = now - timedelta(seconds=settings.RECONCILE_AFTER_SECONDS)
    token = uuid.uuid4()
    lead = Prediction.objects.filter(id=prediction_id).values("user_id", "decode_bytes", "status").first()
    if lead is None:
        prediction_chunk_forward(chunk=chunk)
        return token, []
    # Eager mode (debugging) runs tasks in line: a message sent again would recurse.
    if lead["status"] == PredictionStatus.PENDING and not settings.CELERY_TASK_ALWAYS_EAGER:
        running = selectors.prediction_running_by_user(since=stale, user_ids=[lead["user_id"]])
        if running.get(lead["user_id"], 0) >= settings.INFLIGHT_PER_USER:
            logger.info("Prediction %s waits: its user has %d running", prediction_id, running[lead["user_id"]])
            prediction_enqueue(prediction_id=prediction_id, countdown=DEFER_SECONDS, chunk=chunk)
            return token, []
    own = Q(id=prediction_id) & (
        Q(status=PredictionStatus.PENDING) | Q(status=PredictionStatus.RUNNING, started_at__lt=stale)
    )
    others = _fair_draw(
        limit=batch_size - 1, exclude=prediction_id, taken=[(lead["user_id"], lead["decode_bytes"])], since=stale
    )
    claimed = _claim_rows(ids=[prediction_id, *others], token=token, now=now, also=own)
    prediction_chunk_forward(chunk=chunk, taken=claimed)
    if not any(str(p.id) == str(prediction_id) for p in claimed):
        exhausted = Prediction.objects.filter(own, id=prediction_id, attempts__gte=settings.MAX_ATTEMPTS)
        if exhausted.exists():
            prediction_fail(
                prediction_id=prediction_id,
                error=f"Gave up after {settings.MAX_ATTEMPTS} attempts: the worker stopped while processing "
                "this image.",
            )
    return token, claimed


def _fair_draw(
    *, limit: int, since: datetime, taken: Sequence[tuple[int, int]] = (), exclude: PredictionId | None = None
) -> list[PredictionId]:
    """Up to ``limit`` pending predictions to add to a batch already holding ``taken``
    (``(user id, decode bytes)`` of each row), fairly across users: round-robin over the
    users with pending work, each user's oldest first (``selectors.prediction_pending_fair``),
    none of a user who has ``INFLIGHT_PER_USER`` running or in this batch. Each user's
    first row in the batch goes in whatever it costs (every waiting user is served by the
    next batch); a user's further rows only while the batch's decodes add up to
    ``MAX_DECODE_BYTES``, so a flood of costly images makes batches of one of them.
    """
    if limit <= 0:
        return []
    per_user = settings.INFLIGHT_PER_USER
    candidates = selectors.prediction_pending_fair(limit=limit * 4, per_user=per_user, exclude=exclude)
    if not candidates:
        return []
    in_flight = selectors.prediction_running_by_user(since=since, user_ids=sorted({row.user_id for row in candidates}))
    in_batch: set[int] = set()
    cost = 0
    for user_id, decode_bytes in taken:
        in_flight[user_id] = in_flight.get(user_id, 0) + 1
        in_batch.add(user_id)
        cost += decode_bytes
    # The batch's own rows take their users' first turns: a user with one row in already
    # comes after those with none, and so on (``user_rank`` counts from the batch's rows).
    already = {user_id: sum(1 for taken_user, _ in taken if taken_user == user_id) for user_id in in_batch}
    candidates.sort(key=lambda row: (row.user_rank + already.get(row.user_id, 0), row.created_at))
    drawn: list[PredictionId] = []
    for row in candidates:
        if in_flight.get(row.user_id, 0) >= per_user:
            continue
        if row.user_id in in_batch and cost + row.decode_bytes > settings.MAX_DECODE_BYTES:
            continue
        drawn.append(row.id)
        in_flight[row.user_id] = in_flight.get(row.user_id, 0) + 1
        in_batch.add(row.user_id)
        cost += row.decode_bytes
        if len(drawn) == limit:
            break
    return drawn


def prediction_release(*, predictions: list[Prediction], token: uuid.UUID, lead_id: PredictionId) -> None:
    """Hand claimed predictions back (``running`` -> ``pending``) for a retry.

    A release is not an attempt: the claim is taken back (``attempts`` - 1), so a model
    missing for a while during a deploy, or a database restart, never ends in "Gave up
    after N attempts" (that count is for workers that died on the image). The message
    being retried covers ``lead_id``; the others borrowed into its batch have had their
    own messages answered already, so they are sent again.
    """
    ids = [p.id for p in predictions]
    Prediction.objects.filter(id__in=ids, claim=token, status=PredictionStatus.RUNNING).update(
        status=PredictionStatus.PENDING, attempts=F("attempts") - 1
    )
    prediction_enqueue_many(prediction_ids=[i for i in ids if str(i) != str(lead_id)])


@dataclass
class ClaimedBatch:
    """Predictions one worker message claimed, and the model they run with."""

    lead_id: PredictionId  # the message's own prediction
    token: uuid.UUID
    predictions: list[Prediction]
    active: ModelVersion
    classifier: Classifier
    report: BatchReport = field(default_factory=BatchReport)

    @property
    def room(self) -> int:
        """How many more predictions fit in the batch (``INFERENCE_BATCH_SIZE``)."""
        return max(0, int(settings.INFERENCE_BATCH_SIZE) - len(self.predictions))


def prediction_batch_claim(*, prediction_id: PredictionId, chunk: Sequence[PredictionId] = ()) -> ClaimedBatch | None:
    """What a worker does first for one message: make the active model ready, then
    claim this prediction and up to ``INFERENCE_BATCH_SIZE - 1`` others waiting beside
    it. ``None`` when there is nothing to do (the prediction is final, gone or being
    worked on): a duplicate delivery changes nothing.

    The model is made ready before anything is claimed: while it is missing (a deploy
    replacing its folder) ``ModelUnavailableError`` propagates for a retry and no row
    changes."""
    active = registry_selectors.model_version_active_get()
    classifier = runtime.classifier_for(model_version=active)
    began = time.perf_counter()
    token, claimed = prediction_claim(
        prediction_id=prediction_id, batch_size=settings.INFERENCE_BATCH_SIZE, chunk=chunk
    )
    if not claimed:
        return None
    batch = ClaimedBatch(lead_id=prediction_id, token=token, predictions=claimed, active=active, classifier=classifier)
    batch.report.claim_ms = (time.perf_counter() - began) * 1000
    # Which worker holds which rows (their ``claim``): after a crash, the last such line of a
    # dead host names what the reconciler hands to another.
    batch_logger.info("claimed %d under claim=%s", len(claimed), token)
    return batch


def prediction_batch_fill(*, batch: ClaimedBatch) -> None:
    """Claim more waiting predictions into ``batch`` (up to its room), after the task
    waited ``INFERENCE_BATCH_WAIT_MS`` for them to arrive."""
    began = time.perf_counter()
    batch.predictions += prediction_claim_more(token=batch.token, limit=batch.room, batch=batch.predictions)
    batch.report.claim_ms += (time.perf_counter() - began) * 1000


def prediction_batch_run(*, batch: ClaimedBatch) -> BatchReport:
    """Classify a claimed batch in one model call per version, store every outcome in
    one transaction, announce them; returns the report (``finished``: the ids done here).

    Each row runs with the version it was assigned at submission (the active one, or an
    A/B candidate; rows without one, and rows whose version was retired or cannot be
    loaded, with the active one; ``_classify_by_version``). A batch holding costly images
    runs the others first (``_light_first``): one user's costly image never holds another
    user's photo for the time of its decode.

    A database error or a model gone meanwhile hands the rows not yet stored back
    (``pending``) and re-raises for a retry; a task past its soft time limit fails them
    with "took too long"; any other error fails them with a message for people. Both re-raise.
    """
    claimed, report = batch.predictions, batch.report
    report.size = len(claimed)
    stored: list[Prediction] = []
    done: set[str] = set()
    try:
        for part in _light_first(claimed):
            _classify_by_version(part, active=batch.active, classifier=batch.classifier, report=report)
            began = time.perf_counter()
            part_stored = prediction_complete_many(predictions=part, token=batch.token, model_version=None)
            report.store_ms += (time.perf_counter() - began) * 1000
            done.update(str(p.id) for p in part)
            began = time.perf_counter()
            events.prediction_final_publish(
                [p.id for p in part_stored], [outcomes.outcome_message(p) for p in part_stored]
            )
            report.notify_ms += (time.perf_counter() - began) * 1000
            stored += part_stored
    except (OperationalError, InterfaceError, ModelUnavailableError, StorageUnavailableError):
        rest = [p for p in claimed if str(p.id) not in done]
        prediction_release(predictions=rest, token=batch.token, lead_id=batch.lead_id)
        raise
    except BaseException as error:
        rest = [p for p in claimed if str(p.id) not in done]
        logger.exception("Batch of %d predictions failed: %s", len(rest), [str(p.id) for p in rest])
        message = TOO_LONG_MESSAGE if isinstance(error, SoftTimeLimitExceeded) else FAILED_SERVER_MESSAGE
        now = timezone.now()
        for prediction in rest:
            prediction_failure_set(prediction, message, now)
        prediction_complete_many(predictions=rest, token=batch.token, model_version=None)
        events.prediction_final_publish(p.id for p in rest)
        raise
    succeeded = [p for p in stored if p.status == PredictionStatus.SUCCEEDED]
    prediction_thumbnails_store(made=[(p, report.thumbnails.get(str(p.id), b"")) for p in succeeded])
    # Not the failed ones: a retry makes them pending again, and its message must be worked.
    report.finished = [str(p.id) for p in claimed if p.status != PredictionStatus.FAILED]
    report.succeeded = sum(p.status == PredictionStatus.SUCCEEDED for p in stored)
    report.failed = len(stored) - report.succeeded
    batch_logger.info(report.log_line())
    return report


# An image costing more than this share of MAX_DECODE_BYTES to decode is "costly".
COSTLY_SHARE = 4


def _light_first(claimed: list[Prediction]) -> list[list[Prediction]]:
    """The batch in the order it is run: one part when nothing in it is costly (or everything is),
    else the light images first, then the costly ones (over ``MAX_DECODE_BYTES / COSTLY_SHARE`` to
    decode), each part classified, stored and announced before the next is decoded."""
    threshold = settings.MAX_DECODE_BYTES // COSTLY_SHARE
    light = [p for p in claimed if p.decode_bytes <= threshold]
    costly = [p for p in claimed if p.decode_bytes > threshold]
    return [part for part in (light, costly) if part] if light and costly else [claimed]


def prediction_process(*, prediction_id: PredictionId) -> BatchReport | None:
    """Claim and run one message's batch (``prediction_batch_claim``, ``prediction_batch_run``; the
    task may wait in between: ``INFERENCE_BATCH_WAIT_MS``); ``None`` when there was nothing to do."""
    batch = prediction_batch_claim(prediction_id=prediction_id)
    return None if batch is None else prediction_batch_run(batch=batch)


def prediction_claim_more(*, token: uuid.UUID, limit: int, batch: Sequence[Prediction] = ()) -> list[Prediction]:
    """Add up to ``limit`` more pending predictions, drawn fairly (``_fair_draw``), to the
    batch holding ``token`` (its rows so far: ``batch``)."""
    stale = timezone.now() - timedelta(seconds=settings.RECONCILE_AFTER_SECONDS)
    ids = _fair_draw(limit=limit, since=stale, taken=[(p.user_id, p.decode_bytes) for p in batch])
    if not ids:
        return []
    return _claim_rows(ids=ids, token=token, now=timezone.now())


def _claim_rows(
    *, ids: Sequence[PredictionId], token: uuid.UUID, now: datetime, also: Q | None = None
) -> list[Prediction]:
    """One conditional UPDATE: the ``pending`` rows among ``ids``, plus any row matching
    ``also``, below ``MAX_ATTEMPTS``, become ``running`` under ``token``; returns them."""
    claimable = Q(id__in=ids, status=PredictionStatus.PENDING)
    if also is not None:
        claimable |= also
    Prediction.objects.filter(claimable, attempts__lt=settings.MAX_ATTEMPTS).update(
        status=PredictionStatus.RUNNING, started_at=now, attempts=F("attempts") + 1, claim=token
    )
    return list(Prediction.objects.filter(id__in=ids, claim=token).order_by("created_at"))


def _classify(claimed: list[Prediction], classifier: Classifier, report: BatchReport) -> None:
    """Run the model once over every claimed image whose file is there; set outcomes."""
    readable: list[Prediction] = []
    images: list[bytes] = []
    now = timezone.now()
    for prediction in claimed:
        try:
            # Through the storage API (local disk or the bucket); an outage raises
            # StorageUnavailableError: the batch is handed back and retried.
            content = media_read(prediction.image)
        except OSError:  # not stored (deleted meanwhile) or unreadable
            prediction_failure_set(prediction, MISSING_FILE_MESSAGE, now)
        else:
            images.append(content)
            readable.append(prediction)
            # A direct upload's SHA-256 (services.uploads): its commit never reads all the bytes.
            prediction.sha256 = prediction.sha256 or hashlib.sha256(content).hexdigest()
    if not readable:
        return
    top_k, budget = max(p.top_k for p in readable), settings.MAX_DECODE_BYTES
    results = classifier.classify(images, top_k=top_k, max_decode_bytes=budget, thumbnail_size=THUMBNAIL_SIZE)
    completed_at = timezone.now()
    for prediction, result in zip(readable, results, strict=True):
        prediction_result_set(prediction, result, completed_at)
        report.thumbnails[str(prediction.id)] = result.thumbnail
    report.preprocess_ms += sum(r.preprocess_ms for r in results)
    report.inference_ms += sum(r.inference_ms for r in results)


def _classify_by_version(
    claimed: list[Prediction], *, active: ModelVersion, classifier: Classifier, report: BatchReport
) -> None:
    """Classify each claimed row with the version it runs with (``_version_groups``), one
    model call per version, and record that version on the rows that succeeded."""
    for model_version, group_classifier, rows in _version_groups(claimed, active=active, classifier=classifier):
        _classify(rows, group_classifier, report)
        for prediction in rows:
            if prediction.status == PredictionStatus.SUCCEEDED:
                prediction.model_version = model_version


def _version_groups(
    claimed: list[Prediction], *, active: ModelVersion, classifier: Classifier
) -> list[tuple[ModelVersion, Classifier, list[Prediction]]]:
    """The claimed rows grouped by the version they run with, each with its loaded
    classifier. The common case (every row on the active version) costs no query. A
    version retired since, or whose files cannot be loaded, gives way to the active
    one: the row is classified now rather than held back; it records who classified it."""
    other_ids = {p.assigned_version_id for p in claimed if p.assigned_version_id not in (None, active.pk)}
    if not other_ids:
        return [(active, classifier, claimed)]
    usable: dict[int, tuple[ModelVersion, Classifier]] = {}
    for model_version in ModelVersion.objects.filter(pk__in=other_ids).exclude(status=ModelVersionStatus.RETIRED):
        try:
            usable[model_version.pk] = (model_version, runtime.classifier_for(model_version=model_version))
        except ModelUnavailableError as error:
            logger.warning("%s cannot be loaded, its predictions run with %s: %s", model_version, active, error)
    groups: dict[int, tuple[ModelVersion, Classifier, list[Prediction]]] = {active.pk: (active, classifier, [])}
    for prediction in claimed:
        version, version_classifier = usable.get(prediction.assigned_version_id or active.pk, (active, classifier))
        groups.setdefault(version.pk, (version, version_classifier, []))[2].append(prediction)
    return [group for group in groups.values() if group[2]]

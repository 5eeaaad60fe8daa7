"""Every write and business rule of imagerec. Views, API views, tasks, admin
actions and commands call these functions; none of them writes rows itself.

The life of one image::

    prediction_create() -> row (pending) + file -> on commit: tasks.prediction_run(id)
    -> prediction_process(): prediction_claim() takes it and the predictions waiting
       beside it, the runner classifies them in one call, prediction_complete_many()
       stores every outcome at once, events.prediction_final_publish() wakes the waiters.
"""

from __future__ import annotations

import csv
import functools
import io
import logging
import os
import time
import uuid
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from celery import current_app
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import UploadedFile
from django.db import InterfaceError, OperationalError, connections, transaction
from django.db.models import F, Field, Q
from django.utils import timezone
from kombu.exceptions import KombuError

from . import events, selectors
from .exceptions import ApplicationError, ConflictError, InvalidModelError, ModelUnavailableError, NotFoundError
from .images import DAMAGED_MESSAGE, check_upload_size, thumbnail_jpeg, validate_image_bytes
from .inference import (
    Classifier,
    ExportedModel,
    ImageResult,
    LabelScore,
    ModelLoadError,
    classifier_for,
    export_read,
    loaded_classifiers,
    release_except,
    version_key,
)
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
    WorkerHeartbeat,
)

logger = logging.getLogger(__name__)
batch_logger = logging.getLogger("predictions.batch")


@dataclass
class SubmissionOutcome:
    """One file of a multi-file submission: the created prediction or why it was refused."""

    filename: str
    prediction: Prediction | None = None
    error: ApplicationError | None = None


def _read_upload(uploaded_file: UploadedFile[bytes]) -> bytes:
    if uploaded_file.size is not None:
        check_upload_size(uploaded_file.size)
    uploaded_file.seek(0)
    content: bytes = uploaded_file.read(settings.MAX_UPLOAD_BYTES + 1)  # the stubs type File.read as Any
    return content


def _clean_filename(name: str | None) -> str:
    # Keep only the last path component, printable, and bounded in length: it is
    # shown to people, never used as a path.
    base = (name or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip() or "upload"
    return base[-255:]


def prediction_create(*, user: User, uploaded_file: UploadedFile[bytes], top_k: int | None = None) -> Prediction:
    """Check an upload, store the file and a row, and queue it after commit.

    The row is ``pending``, or already ``succeeded`` with ``cached=True`` when the same
    bytes were classified by the same model version before (``RESULT_CACHE``). The
    version is chosen here (``assigned_version``: the active one, or an A/B candidate for
    the user's share, ``selectors.model_version_for_user``) and the worker runs it.
    Raises ``InvalidImageError`` (or a subclass) before anything is written.
    """
    received = time.perf_counter()
    top_k = settings.DEFAULT_TOP_K if top_k is None else top_k
    if not 1 <= top_k <= settings.MAX_TOP_K:
        raise ApplicationError(f"top_k must be between 1 and {settings.MAX_TOP_K}.", field="top_k")
    content = _read_upload(uploaded_file)
    checked = validate_image_bytes(content)
    now = timezone.now()
    prediction = Prediction(
        user=user,
        created_at=now,
        enqueued_at=now,  # sent on commit; cleared if the broker refuses (prediction_enqueue)
        original_filename=_clean_filename(uploaded_file.name),
        image_format=checked.image_format,
        size_bytes=checked.size_bytes,
        width=checked.width,
        height=checked.height,
        sha256=checked.sha256,
        top_k=top_k,
        assigned_version=selectors.model_version_for_user(user=user),
    )
    earlier = selectors.prediction_reusable(
        user=user, sha256=checked.sha256, top_k=top_k, model_version=prediction.assigned_version
    )
    if earlier is not None:
        _copy_result(source=earlier, target=prediction, received=received)
    prediction.image.save(f"upload.{checked.extension}", ContentFile(content), save=False)
    try:
        with transaction.atomic():
            # clean_fields, not full_clean: the unique check would cost a query for a fresh UUID.
            prediction.clean_fields(exclude=["image", "thumbnail", "user", "model_version", "assigned_version"])
            prediction.save(force_insert=True)
            if earlier is None:
                transaction.on_commit(lambda: prediction_enqueue(prediction_id=prediction.id), robust=True)
    except BaseException:
        prediction.image.delete(save=False)
        raise
    return prediction


def _copy_result(*, source: Prediction, target: Prediction, received: float) -> None:
    """Give ``target`` the stored result of ``source`` (same bytes, same active model)."""
    target.status = PredictionStatus.SUCCEEDED
    target.cached = True
    target.enqueued_at = None
    target.model_version_id = source.model_version_id
    target.label, target.class_id, target.confidence = source.label, source.class_id, source.confidence
    target.entropy, target.margin, target.uncertain = source.entropy, source.margin, source.uncertain
    # A multi-label result keeps its passing labels below the top-k too (``_stored_top``).
    target.top_predictions = [
        entry for rank, entry in enumerate(source.top_predictions) if rank < target.top_k or entry.get("positive")
    ]
    target.started_at = target.completed_at = timezone.now()
    target.queue_ms = target.preprocess_ms = target.inference_ms = 0.0
    target.total_ms = round((time.perf_counter() - received) * 1000, 3)


def prediction_create_many(
    *, user: User, uploaded_files: Iterable[UploadedFile[bytes]], top_k: int | None = None
) -> list[SubmissionOutcome]:
    """Submit several files; a bad one gets its own error and does not sink the others.

    Raises ``ApplicationError`` for more than ``MAX_FILES_PER_REQUEST`` files.
    """
    uploaded_files = list(uploaded_files)
    if len(uploaded_files) > settings.MAX_FILES_PER_REQUEST:
        raise ApplicationError(f"Send at most {settings.MAX_FILES_PER_REQUEST} images at a time.", field="image")
    outcomes = []
    for uploaded_file in uploaded_files:
        outcome = SubmissionOutcome(filename=_clean_filename(uploaded_file.name))
        try:
            outcome.prediction = prediction_create(user=user, uploaded_file=uploaded_file, top_k=top_k)
        except ApplicationError as error:
            outcome.error = error
        outcomes.append(outcome)
    return outcomes


# The task is named, not imported: the tasks import the services, never the reverse.
PREDICTION_RUN_TASK = "predictions.tasks.prediction_run"


def prediction_enqueue(*, prediction_id: PredictionId, rerun: bool = False) -> bool:
    """Send the task. A broker outage is logged, not raised: the row stays pending
    and ``prediction_reconcile`` sends it again later. ``rerun``: a prediction finished
    before and sent again (reprocessing), which a worker must not skip as done."""
    try:
        # The registered task when this process has imported it (eager mode, tests),
        # else a message by name, routed to the inference queue like the task itself.
        kwargs = {"rerun": True} if rerun else {}
        current_app.signature(PREDICTION_RUN_TASK, args=[str(prediction_id)], kwargs=kwargs).apply_async(retry=False)
    except broker_errors() as error:
        logger.warning("Broker unavailable, prediction %s stays pending: %s", prediction_id, error)
        # Unsent: the reconciler picks it up once it is older than its threshold.
        Prediction.objects.filter(id=prediction_id).update(enqueued_at=None)
        return False
    return True


def prediction_enqueue_many(*, prediction_ids: Iterable[PredictionId]) -> int:
    """Send the task of each prediction and record the time (the reconciler re-sends a
    message at most once per threshold, instead of flooding a long but healthy queue)."""
    sent = [prediction_id for prediction_id in prediction_ids if prediction_enqueue(prediction_id=prediction_id)]
    Prediction.objects.filter(id__in=sent).update(enqueued_at=timezone.now())
    return len(sent)


@functools.cache
def broker_errors() -> tuple[type[BaseException], ...]:
    """What the configured transport raises when the broker is unreachable."""
    connection = current_app.connection_for_write()
    return (KombuError, OSError, *connection.connection_errors, *connection.channel_errors)


# --- The worker's side: claim a batch, classify it in one model call, store it -------


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

    def log_line(self) -> str:
        return (
            f"batch size={self.size} succeeded={self.succeeded} failed={self.failed} claim_ms={self.claim_ms:.2f} "
            f"preprocess_ms={self.preprocess_ms:.2f} inference_ms={self.inference_ms:.2f} "
            f"store_ms={self.store_ms:.2f} notify_ms={self.notify_ms:.2f}"
        )


class _FinishedIds:
    """Ids this worker process finished lately. A prediction classified as part of an
    earlier batch still has its own message in the queue; when that message arrives it
    is answered from here, without a query."""

    def __init__(self, size: int = 4096) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def add(self, ids: Iterable[object]) -> None:
        for prediction_id in ids:
            self._ids[str(prediction_id)] = None
        while len(self._ids) > self._size:
            self._ids.popitem(last=False)

    def __contains__(self, prediction_id: object) -> bool:
        return str(prediction_id) in self._ids


_finished_here = _FinishedIds()

FAILED_SERVER_MESSAGE = "The image could not be classified because of a problem on our side. Please try again."
MODEL_UNAVAILABLE_MESSAGE = (
    "The classifier was not available for several minutes, so this image could not be classified. "
    "Please try again later."
)
TOO_LONG_MESSAGE = "Classification took too long and was stopped. Please try again."
MISSING_FILE_MESSAGE = "The stored image file is missing, so it could not be classified. Please upload it again."


def prediction_claim(*, prediction_id: PredictionId, batch_size: int = 1) -> tuple[uuid.UUID, list[Prediction]]:
    """Claim ``prediction_id`` and up to ``batch_size - 1`` of the oldest other pending
    predictions for this worker, in one conditional UPDATE; returns the claim token and
    the claimed rows (empty when there was nothing to do).

    Only ``pending`` rows are claimed, plus this message's own row when it has been
    ``running`` for longer than ``RECONCILE_AFTER_SECONDS`` (its worker died mid-task).
    A row claimed ``MAX_ATTEMPTS`` times is failed instead, so an image that kills
    workers cannot loop forever. Each claimed row gets the batch's token: completing a
    row later requires it, so a row claimed again by someone else is never completed
    twice.
    """
    now = timezone.now()
    stale = now - timedelta(seconds=settings.RECONCILE_AFTER_SECONDS)
    token = uuid.uuid4()
    own = Q(id=prediction_id) & (
        Q(status=PredictionStatus.PENDING) | Q(status=PredictionStatus.RUNNING, started_at__lt=stale)
    )
    others = selectors.prediction_pending_ids(limit=batch_size - 1, exclude=prediction_id) if batch_size > 1 else []
    claimed = _claim_rows(ids=[prediction_id, *others], token=token, now=now, also=own)
    if not any(str(p.id) == str(prediction_id) for p in claimed):
        exhausted = Prediction.objects.filter(own, id=prediction_id, attempts__gte=settings.MAX_ATTEMPTS)
        if exhausted.exists():
            prediction_fail(
                prediction_id=prediction_id,
                error=f"Gave up after {settings.MAX_ATTEMPTS} attempts: the worker stopped while processing "
                "this image.",
            )
    return token, claimed


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


_OUTCOME_FIELDS = (
    "status", "model_version", "label", "class_id", "confidence", "top_predictions", "entropy", "margin", "uncertain",
    "queue_ms", "preprocess_ms", "inference_ms", "total_ms", "completed_at", "error",
)  # fmt: skip


def prediction_complete_many(
    *, predictions: list[Prediction], token: uuid.UUID, model_version: ModelVersion | None
) -> list[Prediction]:
    """Store the outcome (result or error) of each prediction of a batch, in one
    transaction. Only rows still ``running`` under this batch's claim token are written
    (a row claimed again by another worker is left to it); returns those.

    Succeeded rows record ``model_version``; with ``None`` each keeps the version the
    worker set on it (a batch run on several versions)."""
    for prediction in predictions:
        if prediction.status == PredictionStatus.SUCCEEDED and model_version is not None:
            prediction.model_version = model_version
        # Field validation only: the foreign keys are objects we hold, not user input.
        prediction.clean_fields(exclude=["image", "thumbnail", "user", "model_version", "assigned_version"])
    with transaction.atomic():
        ours = set(
            Prediction.objects.select_for_update()
            .filter(id__in=[p.id for p in predictions], claim=token, status=PredictionStatus.RUNNING)
            .values_list("id", flat=True)
        )
        rows = [p for p in predictions if p.id in ours]
        _update_rows(rows, _OUTCOME_FIELDS)
    return rows


def _update_rows(rows: list[Prediction], field_names: Iterable[str]) -> None:
    """One parametrised UPDATE per row, sent with ``executemany`` (a single round trip
    with psycopg 3's pipeline). ``bulk_update`` builds a CASE WHEN per field instead,
    which cost more CPU than the model call for a batch of 16 (profiled)."""
    if not rows:
        return
    connection = connections[Prediction.objects.db]
    quote = connection.ops.quote_name
    fields = [_stored_field(name) for name in field_names]
    pk, pk_column = _stored_field(Prediction._meta.pk.name)
    assignments = ", ".join(f"{quote(column)} = %s" for _, column in fields)
    sql = f"UPDATE {quote(Prediction._meta.db_table)} SET {assignments} WHERE {quote(pk_column)} = %s"  # noqa: S608
    params = [
        [field.get_db_prep_save(getattr(row, field.attname), connection) for field, _ in fields]
        + [pk.get_db_prep_value(row.pk, connection)]
        for row in rows
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


def _stored_field(name: str) -> tuple[Field[Any, Any], str]:
    """``Prediction``'s field ``name`` and its column (``get_field`` also answers for
    reverse relations, which have none)."""
    field = Prediction._meta.get_field(name)
    assert isinstance(field, Field) and field.column is not None, f"Prediction.{name} has no column"
    return field, field.column


def _set_result(prediction: Prediction, result: ImageResult, completed_at: datetime) -> None:
    assert prediction.started_at is not None  # set when the row was claimed
    prediction.completed_at = completed_at
    prediction.queue_ms = _ms(prediction.started_at - _timed_from(prediction))
    prediction.preprocess_ms = round(result.preprocess_ms, 3)
    prediction.inference_ms = round(result.inference_ms, 3)
    prediction.total_ms = _ms(completed_at - _timed_from(prediction))
    if result.error:
        logger.info("Prediction %s cannot be decoded: %s", prediction.id, result.error)
        prediction.status = PredictionStatus.FAILED
        prediction.error = DAMAGED_MESSAGE
        return
    top = result.predictions[: prediction.top_k]
    prediction.status = PredictionStatus.SUCCEEDED
    prediction.label, prediction.class_id, prediction.confidence = top[0].label, top[0].class_id, top[0].score
    prediction.top_predictions = _stored_top(top, result)
    how_sure = result.uncertainty
    prediction.entropy = None if how_sure is None else round(how_sure.entropy, 6)
    prediction.margin = None if how_sure is None else round(how_sure.margin, 6)
    prediction.uncertain = None if how_sure is None else how_sure.uncertain
    prediction.error = ""


def _stored_top(top: list[LabelScore], result: ImageResult) -> list[dict[str, Any]]:
    """``top_predictions`` of a result: the top-k as ``{label, class_id, score}``. From a
    multi-label model each entry also says whether the image has that class (``positive``:
    its score reached the class's threshold), and passing classes ranked below the top-k
    follow, so every label the image has is stored, still highest score first."""
    entries: list[dict[str, Any]] = [
        {"label": item.label, "class_id": item.class_id, "score": round(item.score, 6)} for item in top
    ]
    if not result.multi_label:
        return entries
    passing = {item.class_id for item in result.labels}
    for entry in entries:
        entry["positive"] = entry["class_id"] in passing
    shown = {item.class_id for item in top}
    entries += [
        {"label": item.label, "class_id": item.class_id, "score": round(item.score, 6), "positive": True}
        for item in result.labels
        if item.class_id not in shown
    ]
    return entries


def _set_failed(prediction: Prediction, message: str, completed_at: datetime) -> None:
    prediction.status = PredictionStatus.FAILED
    prediction.error = message
    prediction.completed_at = completed_at
    prediction.total_ms = _ms(completed_at - _timed_from(prediction))


def _timed_from(prediction: Prediction) -> datetime:
    """Where a prediction's latency starts: its upload, or its last retry."""
    return prediction.retried_at or prediction.created_at


def prediction_process(*, prediction_id: PredictionId, rerun: bool = False) -> BatchReport | None:
    """What the worker runs for one message: claim this prediction and up to
    ``INFERENCE_BATCH_SIZE - 1`` others waiting beside it, classify them in one model
    call, store every outcome in one transaction, announce them. Idempotent: a message
    whose prediction is final, gone or being worked on does nothing.

    Each row runs with the version it was assigned at submission (the active one, or an
    A/B candidate; rows without one, and rows whose version was retired or cannot be
    loaded, with the active one): a batch may mix versions and each group gets its own
    model call (``_classify_by_version``).

    The active model is made ready before anything is claimed: while it is missing (a
    deploy replacing its folder) the message is retried and no row changes. A database error
    after the claim hands the batch back (``pending``) and re-raises for a retry; a task
    past its soft time limit fails the batch with "took too long"; any other error fails
    it with a message for people. Both re-raise.
    """
    if prediction_id in _finished_here and not rerun:
        return None
    report = BatchReport()
    model_version = model_version_get_or_sync_active()
    classifier = classifier_for(model_version=model_version)
    began = time.perf_counter()
    token, claimed = prediction_claim(prediction_id=prediction_id, batch_size=settings.INFERENCE_BATCH_SIZE)
    if not claimed:
        return None
    if settings.INFERENCE_BATCH_WAIT_MS and len(claimed) < settings.INFERENCE_BATCH_SIZE:
        time.sleep(settings.INFERENCE_BATCH_WAIT_MS / 1000)
        claimed += prediction_claim_more(token=token, limit=settings.INFERENCE_BATCH_SIZE - len(claimed))
    report.size = len(claimed)
    report.claim_ms = (time.perf_counter() - began) * 1000
    try:
        _classify_by_version(claimed, active=model_version, classifier=classifier, report=report)
        began = time.perf_counter()
        stored = prediction_complete_many(predictions=claimed, token=token, model_version=None)
        report.store_ms = (time.perf_counter() - began) * 1000
    except (OperationalError, InterfaceError, ModelUnavailableError):
        prediction_release(predictions=claimed, token=token, lead_id=prediction_id)
        raise
    except BaseException as error:
        logger.exception("Batch of %d predictions failed: %s", len(claimed), [str(p.id) for p in claimed])
        message = TOO_LONG_MESSAGE if isinstance(error, SoftTimeLimitExceeded) else FAILED_SERVER_MESSAGE
        now = timezone.now()
        for prediction in claimed:
            _set_failed(prediction, message, now)
        prediction_complete_many(predictions=claimed, token=token, model_version=None)
        events.prediction_final_publish(p.id for p in claimed)
        raise
    began = time.perf_counter()
    events.prediction_final_publish(p.id for p in stored)
    report.notify_ms = (time.perf_counter() - began) * 1000
    # Not the failed ones: a retry makes them pending again, and its message must be worked.
    _finished_here.add(p.id for p in claimed if p.status != PredictionStatus.FAILED)
    report.succeeded = sum(p.status == PredictionStatus.SUCCEEDED for p in stored)
    report.failed = len(stored) - report.succeeded
    batch_logger.info(report.log_line())
    return report


def prediction_claim_more(*, token: uuid.UUID, limit: int) -> list[Prediction]:
    """Add up to ``limit`` more pending predictions to the batch holding ``token``."""
    ids = selectors.prediction_pending_ids(limit=limit)
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
    paths: list[str] = []
    now = timezone.now()
    for prediction in claimed:
        try:
            path = prediction.image.path
        except (ValueError, NotImplementedError):
            path = ""
        if path and Path(path).exists():
            readable.append(prediction)
            paths.append(path)
        else:
            _set_failed(prediction, MISSING_FILE_MESSAGE, now)
    if not readable:
        return
    results = classifier.classify(paths, top_k=max(p.top_k for p in readable))
    completed_at = timezone.now()
    for prediction, result in zip(readable, results, strict=True):
        _set_result(prediction, result, completed_at)
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
            usable[model_version.pk] = (model_version, classifier_for(model_version=model_version))
        except ModelUnavailableError as error:
            logger.warning("%s cannot be loaded, its predictions run with %s: %s", model_version, active, error)
    groups: dict[int, tuple[ModelVersion, Classifier, list[Prediction]]] = {active.pk: (active, classifier, [])}
    for prediction in claimed:
        version, version_classifier = usable.get(prediction.assigned_version_id or active.pk, (active, classifier))
        groups.setdefault(version.pk, (version, version_classifier, []))[2].append(prediction)
    return [group for group in groups.values() if group[2]]


def prediction_fail(*, prediction_id: PredictionId, error: str) -> bool:
    """Mark a non-final prediction ``failed`` with a readable reason."""
    now = timezone.now()
    failed = (
        Prediction.objects.filter(
            id=prediction_id, status__in=[PredictionStatus.PENDING, PredictionStatus.RUNNING]
        ).update(status=PredictionStatus.FAILED, error=error[:2000], completed_at=now)
        == 1
    )
    if failed:
        events.prediction_final_publish([prediction_id])
    return failed


def prediction_thumbnail(*, prediction: Prediction) -> str:
    """The storage name of the prediction's thumbnail, made and stored on first use:
    pages show it without decoding the original again."""
    storage = prediction.thumbnail.storage
    if prediction.thumbnail.name and storage.exists(prediction.thumbnail.name):
        return prediction.thumbnail.name
    content = thumbnail_jpeg(prediction.image.path)
    name = storage.save(f"thumbnails/{prediction.created_at:%Y/%m/%d}/{prediction.id.hex}.jpg", ContentFile(content))
    Prediction.objects.filter(id=prediction.id).update(thumbnail=name)
    prediction.thumbnail.name = name
    return name


def prediction_delete(*, prediction: Prediction) -> None:
    """Delete a prediction and, once the deletion is committed, its image file, its
    thumbnail and its explanations' overlays (each shows the image)."""
    storage = prediction.image.storage
    names = [name for name in (prediction.image.name, prediction.thumbnail.name) if name]
    with transaction.atomic():
        names += [name for name in prediction.explanations.values_list("image", flat=True) if name]
        prediction.delete()
        for name in names:
            transaction.on_commit(functools.partial(storage.delete, name), robust=True)


def prediction_reconcile(*, older_than_seconds: int | None = None) -> int:
    """Re-enqueue predictions stuck in pending/running (broker outage, lost message).

    Safe to run any time: the task is idempotent. Returns how many were sent.
    """
    age = settings.RECONCILE_AFTER_SECONDS if older_than_seconds is None else older_than_seconds
    cutoff = timezone.now() - timedelta(seconds=age)
    return prediction_enqueue_many(prediction_ids=selectors.prediction_stuck_ids(before=cutoff))


_RETRY_RESET: dict[str, Any] = {
    "status": PredictionStatus.PENDING, "error": "", "label": "", "class_id": "", "confidence": None,
    "top_predictions": [], "entropy": None, "margin": None, "uncertain": None,
    "model_version": None, "cached": False, "claim": None, "attempts": 0,
    "queue_ms": None, "preprocess_ms": None, "inference_ms": None, "total_ms": None,
    "started_at": None, "completed_at": None,
}  # fmt: skip


def prediction_retry(*, prediction: Prediction) -> Prediction:
    """Send a failed prediction to the workers again: the row goes back to ``pending``
    with its error, result and timings cleared and ``attempts`` back to 0 (a fresh
    budget of ``MAX_ATTEMPTS`` claims), keeping the image, its thumbnail and
    ``created_at``; ``retried_at`` is set and timings count from it. Queued after commit.

    Only a failed prediction is retried, with one conditional update, so two clicks at
    once send it once. Anything else raises ``ConflictError`` (409) and changes nothing.
    """
    now = timezone.now()
    with transaction.atomic():
        updated = Prediction.objects.filter(id=prediction.id, status=PredictionStatus.FAILED).update(
            **_RETRY_RESET, retried_at=now, enqueued_at=now
        )
        if updated != 1:
            current = Prediction.objects.filter(id=prediction.id).values_list("status", flat=True).first()
            raise ConflictError(
                f"Only a failed prediction can be retried; this one is {current or 'deleted'}.", field="status"
            )
        transaction.on_commit(lambda: prediction_enqueue(prediction_id=prediction.id), robust=True)
    prediction.refresh_from_db()
    logger.info("Prediction %s retried", prediction.id)
    return prediction


# --- Corrections: the owner's right label, and the dataset for the next fine-tune ---


def _model_class_for(model_version: ModelVersion | None, label: str) -> tuple[str, str]:
    """``(label, class_id)``: the model class whose label matches ``label`` ignoring case,
    spelled as the model spells it; else the text as given and no class (a new class)."""
    wanted = label.casefold()
    for entry in model_version.classes if model_version is not None else []:
        if str(entry.get("label", "")).casefold() == wanted:
            return str(entry["label"]), str(entry.get("class_id", ""))
    return label, ""


def _prediction_lock_succeeded(*, prediction: Prediction, action: str) -> Prediction:
    """The prediction's row, locked for this transaction, with its model version; raises
    ``ConflictError`` (409) unless it succeeded. ``action``: "corrected", "confirmed"."""
    # Locked: a review and a status change (delete, retry, reprocess) do not interleave.
    # FOR UPDATE OF the prediction only: PostgreSQL refuses to lock the nullable side of
    # the outer join to the model version.
    current = (
        Prediction.objects.select_for_update(of=("self",))
        .select_related("model_version")
        .filter(id=prediction.id)
        .first()
    )
    if current is None or current.status != PredictionStatus.SUCCEEDED:
        raise ConflictError(
            f"Only a succeeded prediction can be {action}; "
            f"this one is {current.status if current is not None else 'deleted'}.",
            field="status",
        )
    return current


def _review_save(*, prediction: Prediction, user: User, label: str, class_id: str, confirmed: bool) -> Correction:
    """Store the prediction's one review, replacing an earlier one of either kind
    (``created_at`` stays). ``prediction`` is locked by the caller."""
    now = timezone.now()
    review = Correction.objects.filter(prediction=prediction).first() or Correction(
        prediction=prediction, created_at=now
    )
    review.prediction = prediction  # the locked row, loaded: callers (async views) read it
    review.confirmed = confirmed
    review.label = label
    review.class_id = class_id
    review.predicted_label = prediction.label
    review.model_version = prediction.model_version
    review.corrected_by = user
    review.updated_at = now
    review.full_clean()
    review.save()
    return review


@transaction.atomic
def correction_set(*, prediction: Prediction, user: User, label: str) -> Correction:
    """Record that the model got ``prediction`` wrong and what it shows: ``label`` is
    matched to the predicting model's classes (case-insensitively; the class's own
    spelling and ``class_id`` are kept) or kept as given for a new class. It replaces
    the prediction's earlier review, a correction or a confirmation (``created_at``
    stays). The prediction's own result is never changed, and nothing the worker writes
    touches a correction.

    Raises ``ApplicationError`` (400) for an empty label or the one the model gave (that
    is a confirmation: ``prediction_confirm``), ``ConflictError`` (409) when the
    prediction has not succeeded.
    """
    label = " ".join(label.split())
    if not label:
        raise ApplicationError("Give the right label.", field="label")
    max_length = Correction._meta.get_field("label").max_length or 200
    if len(label) > max_length:
        raise ApplicationError(f"A label has at most {max_length} characters.", field="label")
    current = _prediction_lock_succeeded(prediction=prediction, action="corrected")
    label, class_id = _model_class_for(current.model_version, label)
    if label.casefold() == current.label.casefold():
        raise ApplicationError(
            f"{current.label!r} is what the model said; if it is right, confirm it instead of correcting it.",
            field="label",
        )
    correction = _review_save(prediction=current, user=user, label=label, class_id=class_id, confirmed=False)
    logger.info("Prediction %s corrected: %r -> %r", current.id, current.label, label)
    return correction


@transaction.atomic
def prediction_confirm(*, prediction: Prediction, user: User) -> Correction:
    """Record that the model got ``prediction`` right: a review with ``confirmed`` set and
    the model's own label and ``class_id``. It replaces the prediction's earlier review
    (a correction or a confirmation), as ``correction_set`` does, with the same lock.

    Raises ``ConflictError`` (409) when the prediction has not succeeded.
    """
    current = _prediction_lock_succeeded(prediction=prediction, action="confirmed")
    confirmation = _review_save(
        prediction=current, user=user, label=current.label, class_id=current.class_id, confirmed=True
    )
    logger.info("Prediction %s confirmed: %r", current.id, current.label)
    return confirmation


@transaction.atomic
def correction_withdraw(*, prediction: Prediction, confirmed: bool) -> None:
    """Withdraw the owner's review of ``prediction``: its confirmation when ``confirmed``,
    else its correction. Raises ``NotFoundError`` (404) when it has no review of that
    kind (a confirmation is not withdrawn by withdrawing a correction, nor the reverse)."""
    current = Prediction.objects.select_for_update(of=("self",)).filter(id=prediction.id).first()
    deleted, _ = Correction.objects.filter(prediction_id=prediction.id, confirmed=confirmed).delete()
    if current is None or not deleted:
        kind = "confirmation" if confirmed else "correction"
        raise NotFoundError(f"This prediction has no {kind} to withdraw.")
    logger.info("Prediction %s: %s withdrawn", current.id, "confirmation" if confirmed else "correction")


_FOLDER_UNSAFE = str.maketrans({character: "_" for character in '/\\:*?"<>|\0'})


def correction_folder_name(label: str) -> str:
    """The class folder of ``label`` in an exported dataset: the label itself, with the
    characters no file system takes (and a leading dot) replaced."""
    name = label.translate(_FOLDER_UNSAFE).strip()
    return "_" + name[1:] if name.startswith(".") else name or "_"


@dataclass
class CorrectionExport:
    """What an export wrote (or would write): one file per review (correction or
    confirmation), and the manifest."""

    files: list[tuple[str, Correction]]  # (path inside the dataset, review)
    manifest: str
    replaced: int = 0

    @property
    def confirmed(self) -> int:
        """Files of confirmed predictions (the rest are corrected ones)."""
        return sum(review.confirmed for _, review in self.files)


_FORMAT_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tiff"}

MANIFEST_HEADER = [
    "path", "label", "class_id", "predicted_label", "confidence", "model", "model_version",
    "prediction_id", "sha256", "corrected_at", "review",
]  # fmt: skip
# The manifest's "review" column: how the owner gave the label.
REVIEW_CONFIRMED = "confirmed"  # the model's own label, confirmed
REVIEW_CORRECTED = "corrected"  # the right label in place of the model's


def correction_export_plan(*, corrections: Iterable[Correction]) -> CorrectionExport:
    """The dataset layout: ``<label>/<prediction id>.<ext>`` per review, corrected or
    confirmed (a folder per class, as ``training.finetune`` reads), and ``manifest.csv``
    listing every file (``review``: corrected or confirmed; ``corrected_at``: when)."""
    files = []
    manifest = io.StringIO()
    writer = csv.writer(manifest, lineterminator="\n")
    writer.writerow(MANIFEST_HEADER)
    for correction in corrections:
        prediction = correction.prediction
        # From the decoded format, not the client's file name: what the image really is.
        extension = _FORMAT_EXTENSIONS.get(prediction.image_format.upper()) or (
            Path(prediction.image.name or "").suffix.lower() or ".img"
        )
        path = f"{correction_folder_name(correction.label)}/{prediction.id}{extension}"
        files.append((path, correction))
        version = correction.model_version
        writer.writerow([
            path, correction.label, correction.class_id, correction.predicted_label,
            "" if prediction.confidence is None else f"{prediction.confidence:.6f}",
            version.name if version else "", version.version if version else "",
            prediction.id, prediction.sha256, correction.updated_at.isoformat(),
            REVIEW_CONFIRMED if correction.confirmed else REVIEW_CORRECTED,
        ])  # fmt: skip
    return CorrectionExport(files=files, manifest=manifest.getvalue())


def correction_export_directory(
    *, corrections: Iterable[Correction], directory: Path, overwrite: bool = False
) -> CorrectionExport:
    """Copy the reviewed images into ``directory/<label>/`` and write ``manifest.csv``.

    Never overwrites silently: when a file the export would write is already there (and
    differs), nothing is written and ``ConflictError`` names it, unless ``overwrite``,
    which replaces such files and counts them in ``replaced``. Identical files (a re-run)
    are left as they are.
    """
    plan = correction_export_plan(corrections=corrections)
    manifest = plan.manifest.encode()
    # One image in memory at a time: read to compare, read again to write.
    sources: list[tuple[Path, Callable[[], bytes]]] = [
        (directory / path, functools.partial(_image_bytes, correction.prediction)) for path, correction in plan.files
    ]
    sources.append((directory / "manifest.csv", lambda: manifest))
    written = {target for target, read in sources if not target.exists() or target.read_bytes() != read()}
    clashes = [target for target, _ in sources if target in written and target.exists()]
    if clashes and not overwrite:
        shown = ", ".join(str(target.relative_to(directory)) for target in clashes[:5])
        raise ConflictError(
            f"{len(clashes)} file(s) in {directory} differ from what the export would write ({shown}"
            f"{', ...' if len(clashes) > 5 else ''}); nothing was written. Use a new directory or overwrite."
        )
    for target, read in sources:
        if target in written:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(read())
    plan.replaced = len(clashes)
    return plan


def _image_bytes(prediction: Prediction) -> bytes:
    with prediction.image.open("rb") as image:
        content: bytes = image.read()
    return content


def correction_export_zip(*, corrections: Iterable[Correction], target: IO[bytes]) -> CorrectionExport:
    """The same dataset as ``correction_export_directory``, as a zip written to ``target``
    (a binary file object)."""
    plan = correction_export_plan(corrections=corrections)
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path, correction in plan.files:
            archive.writestr(path, _image_bytes(correction.prediction))
        archive.writestr("manifest.csv", plan.manifest)
    return plan


def _ms(delta: timedelta) -> float:
    return round(max(delta.total_seconds(), 0.0) * 1000, 3)


# --- Model versions -----------------------------------------------------------


def _model_metrics(metadata: dict[str, Any]) -> dict[str, Any]:
    """The model card's figures: ``metrics`` when the export writes them, else what the
    builders record (test-photo accuracy, fine-tuning's final metrics, equivalence)."""
    if isinstance(metadata.get("metrics"), dict):
        return dict(metadata["metrics"])
    metrics: dict[str, Any] = {}
    photos = metadata.get("test_photos")
    if isinstance(photos, dict):
        metrics["test_photos"] = {k: photos[k] for k in ("count", "top1_accuracy", "top5_accuracy") if k in photos}
    training = metadata.get("training")
    if isinstance(training, dict) and isinstance(training.get("final_metrics"), dict):
        metrics["training"] = training["final_metrics"]
    test = metadata.get("test_metrics")
    if isinstance(test, dict):  # training.finetune: the held-out test split
        metrics["test"] = _card_figures(test)
    evaluation = metadata.get("evaluation")
    if isinstance(evaluation, dict):  # training.evaluate --data: the latest report
        metrics["evaluation"] = _card_figures(evaluation) | {
            k: evaluation[k] for k in ("split", "created") if isinstance(evaluation.get(k), str)
        }
    equivalence = metadata.get("equivalence")
    if isinstance(equivalence, dict) and "checked" in equivalence:
        metrics["equivalence_checked"] = bool(equivalence["checked"])
    for key in ("parameters", "num_classes"):
        if isinstance(metadata.get(key), int):
            metrics[key] = metadata[key]
    return metrics


_CARD_FIGURES = ("count", "top1", "top5", "ece", "micro_f1", "macro_f1", "exact_match", "mean_average_precision")


def _card_figures(report: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of a test or evaluation report (no per-class rows, confusion
    matrix or reliability bins): what the registry and the stats page show."""
    figures = {k: report[k] for k in _CARD_FIGURES if isinstance(report.get(k), int | float)}
    for average in ("macro", "weighted"):
        if isinstance(report.get(average), dict) and isinstance(report[average].get("f1"), int | float):
            figures[f"{average}_f1"] = report[average]["f1"]
    return figures


def _model_parent(metadata: dict[str, Any]) -> ModelVersion | None:
    """The registered version this one was derived from: ``parent_model`` (what
    ``training.finetune`` writes), ``parent`` or ``base_model`` as ``{"name", "version"}``;
    ``None`` when absent or not registered."""
    parent = metadata.get("parent_model") or metadata.get("parent") or metadata.get("base_model")
    if not isinstance(parent, dict) or "name" not in parent or "version" not in parent:
        return None
    return ModelVersion.objects.filter(name=str(parent["name"]), version=str(parent["version"])).first()


def _model_exported_at(metadata: dict[str, Any]) -> datetime | None:
    try:
        created = datetime.fromisoformat(str(metadata["created"]))
    except (KeyError, ValueError):
        return None
    return created if timezone.is_aware(created) else created.replace(tzinfo=UTC)


def _model_version_store(*, exported: ExportedModel, status: str | None = None) -> ModelVersion:
    """Create or refresh the registry row of an exported folder (files stay where they are)."""
    defaults: dict[str, Any] = {
        "path": str(exported.path),
        "metadata": exported.metadata,
        "classes": [{"class_id": entry["class_id"], "label": entry["label"]} for entry in exported.labels],
        "metrics": _model_metrics(exported.metadata),
        "parent": _model_parent(exported.metadata),
        "exported_at": _model_exported_at(exported.metadata),
    }
    model_version, created = ModelVersion.objects.update_or_create(
        name=exported.name, version=exported.version, defaults=defaults
    )
    if status is not None and not model_version.is_active and model_version.status != status:
        model_version.status = status
        model_version.traffic_percent = 0  # a share of traffic belongs to a candidate only
        model_version.full_clean()
        model_version.save(update_fields=["status", "traffic_percent"])
    elif created:
        model_version.full_clean()
    return model_version


def model_version_sync(*, model_dir: Path | None = None) -> list[ModelVersion]:
    """Register every exported model under ``MODEL_DIR`` and activate the default
    (``MODEL_NAME``, highest version) if none is active yet. A folder the runner would
    refuse is skipped with a warning."""
    root = Path(model_dir or settings.MODEL_DIR)
    found = []
    for metadata_path in sorted(root.glob("*/*/metadata.json")):
        try:
            exported = export_read(metadata_path.parent)
        except ModelLoadError as error:
            logger.warning("Skipping %s: %s", metadata_path.parent, error)
            continue
        found.append(_model_version_store(exported=exported))
    if found and not ModelVersion.objects.filter(is_active=True).exists():
        default = [v for v in found if v.name == settings.MODEL_NAME] or found
        model_version_activate(
            model_version=max(default, key=lambda v: version_key(v.version)), kind=ModelActivationKind.DEFAULT
        )
    return found


def model_version_register(*, model_dir: Path, candidate: bool = False) -> ModelVersion:
    """Register one exported folder in place (nothing is copied) after checking it as
    the runner reads it (``metadata.json`` format_version and input_size, ``labels.json``
    one entry per class). It is then ``available`` (``candidate`` with ``candidate=True``),
    a retired version included; registering again refreshes classes, metrics and parent
    and leaves the active version active. Raises ``InvalidModelError``."""
    try:
        exported = export_read(Path(model_dir).resolve())
    except ModelLoadError as error:
        raise InvalidModelError(str(error)) from error
    status = ModelVersionStatus.CANDIDATE if candidate else ModelVersionStatus.AVAILABLE
    return _model_version_store(exported=exported, status=status)


def model_version_retire(*, model_version: ModelVersion) -> ModelVersion:
    """Take a version out of use: it keeps its predictions but cannot be activated (or
    rolled back to) until registered again. Raises ``ConflictError`` for the active one."""
    # Conditional: a version activated meanwhile (another request) is not retired.
    retired = ModelVersion.objects.filter(pk=model_version.pk, is_active=False).update(
        status=ModelVersionStatus.RETIRED, traffic_percent=0
    )
    if not retired:
        raise ConflictError(
            f"{model_version.name} v{model_version.version} is active; activate another version before retiring it."
        )
    model_version.refresh_from_db()
    return model_version


@transaction.atomic
def model_version_activate(
    *, model_version: ModelVersion, user: User | None = None, kind: str = ModelActivationKind.ACTIVATE
) -> ModelVersion:
    """Make ``model_version`` the one new predictions use and record the switch (who,
    when, from which version). Workers resolve the active version before each batch, so
    the next prediction uses it without a restart. Activating the active version changes
    nothing. Raises ``ConflictError`` for a retired version, ``ModelUnavailableError``
    when its files are missing or unreadable."""
    # Lock the current active row so two switches at once cannot both record "from" it.
    current = ModelVersion.objects.select_for_update().filter(is_active=True).first()
    if current is not None and current.pk == model_version.pk:
        return current
    if model_version.status == ModelVersionStatus.RETIRED:
        raise ConflictError(f"{model_version} is retired; register it again to use it.")
    try:
        export_read(model_version.path)
    except ModelLoadError as error:
        logger.warning("Not activating %s: %s", model_version, error)
        raise ModelUnavailableError(
            f"{model_version} cannot be activated: its exported files are missing (see the server log for where)."
        ) from error
    if current is not None:
        current.is_active = False
        current.status = ModelVersionStatus.AVAILABLE
        current.save(update_fields=["is_active", "status"])
    model_version.is_active = True
    model_version.status = ModelVersionStatus.ACTIVE
    model_version.traffic_percent = 0  # an A/B candidate activated: the test is over, it gets everything
    model_version.full_clean()
    model_version.save(update_fields=["is_active", "status", "traffic_percent"])
    activation = ModelActivation(
        model_version=model_version, previous=current, kind=kind, activated_by=user, activated_at=timezone.now()
    )
    activation.full_clean()
    activation.save()
    logger.info("Model %s activated (%s, from %s, by %s)", model_version, kind, current, user or "the system")
    return model_version


def model_version_traffic_check(*, model_version: ModelVersion, traffic_percent: int, lock: bool = False) -> None:
    """The rules of a share of traffic (``model_version_set_traffic``; the admin form
    asks them too): 0-100, a candidate only, one candidate at a time."""
    if not 0 <= traffic_percent <= 100:
        raise ApplicationError("traffic_percent must be between 0 and 100.", field="traffic_percent")
    if traffic_percent and model_version.status != ModelVersionStatus.CANDIDATE:
        raise ApplicationError(
            f"{model_version} is {model_version.status}; only a candidate version gets a share of traffic "
            "(register_model --candidate).",
            field="traffic_percent",
        )
    others = ModelVersion.objects.filter(traffic_percent__gt=0).exclude(pk=model_version.pk)
    other = (others.select_for_update() if lock else others).first()
    if traffic_percent and other is not None:
        raise ConflictError(
            f"{other} already gets {other.traffic_percent} % of traffic; set it to 0 first (one A/B test at a time).",
            field="traffic_percent",
        )


@transaction.atomic
def model_version_set_traffic(
    *, model_version: ModelVersion, traffic_percent: int, user: User | None = None
) -> ModelVersion:
    """Give a candidate version ``traffic_percent`` (0-100) of users for an A/B test:
    their new predictions run with it (``selectors.model_version_for_user``, sticky per
    user), everyone else's with the active version; 0 ends the test. Predictions already
    submitted keep the version they were given.

    Raises ``ApplicationError`` (400, field ``traffic_percent``) for a value out of range
    or a version that is not a candidate, ``ConflictError`` when another candidate
    already has a share (one test at a time)."""
    locked = ModelVersion.objects.select_for_update().get(pk=model_version.pk)
    model_version_traffic_check(model_version=locked, traffic_percent=traffic_percent, lock=True)
    locked.traffic_percent = traffic_percent
    locked.full_clean()
    locked.save(update_fields=["traffic_percent"])
    logger.info("Model %s gets %d %% of traffic (by %s)", locked, traffic_percent, user or "the system")
    model_version.traffic_percent = traffic_percent
    return locked


@transaction.atomic
def model_version_rollback(*, user: User | None = None) -> ModelVersion:
    """Activate the version that was active before the current one (recorded as a
    rollback; rolling back again goes one further back). Raises ``ConflictError`` when
    there is none to go back to."""
    active = ModelVersion.objects.select_for_update().filter(is_active=True).first()
    if active is None:
        raise ConflictError("No model version is active, so there is nothing to roll back.")
    target = selectors.model_version_rollback_target(active=active)
    if target is None:
        raise ConflictError(f"{active} was the first active version; there is no previous one to roll back to.")
    if target.status == ModelVersionStatus.RETIRED:
        raise ConflictError(f"The previous version, {target}, is retired; activate another version instead.")
    return model_version_activate(model_version=target, user=user, kind=ModelActivationKind.ROLLBACK)


def model_version_get_or_sync_active() -> ModelVersion:
    """The active model version, registering models from disk on first use."""
    active = selectors.model_version_active()
    if active is None:
        model_version_sync()
        active = selectors.model_version_active()
    if active is None:
        raise ModelUnavailableError(f"No model is installed under {settings.MODEL_DIR}; run `make model` to build one.")
    return active


def model_version_release_unused() -> list[str]:
    """Release from this process's memory every loaded model that is no longer in use
    (``selectors.model_version_in_use``: not the active version, not the A/B candidate,
    given to no waiting prediction). Returns ``name:version`` of each model still
    loaded, as the runner read it, in use first (the active one first). A batch already
    running with a released model finishes with it. The worker's heartbeat calls this."""
    in_use = [str(Path(model_version.path).resolve()) for model_version in selectors.model_version_in_use()]
    release_except(in_use)
    rank = {model_dir: index for index, model_dir in enumerate(in_use)}
    loaded = {str(classifier.model_dir.resolve()): classifier for classifier in loaded_classifiers()}
    in_order = sorted(loaded, key=lambda model_dir: rank.get(model_dir, len(rank)))
    return [f"{loaded[model_dir].name}:{loaded[model_dir].version}" for model_dir in in_order]


# --- Reprocessing: finished predictions run again with the active model -------------

REPROCESS_STEP_TASK = "predictions.tasks.reprocess_step"
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
            scope=scope, model_version=model_version_get_or_sync_active(), created_by=user, created_at=timezone.now()
        )
        job.full_clean()
        job.save()
        job.total = selectors.reprocess_remaining(job=job).count()
        job.save(update_fields=["total"])
        transaction.on_commit(lambda: _reprocess_step_send(job_id=job.pk, countdown=0), robust=True)
    logger.info("Reprocess job %s started by %s: %d predictions", job.pk, user or "the system", job.total)
    return job


def _reprocess_step_send(*, job_id: int, countdown: float = REPROCESS_STEP_SECONDS) -> None:
    try:
        current_app.signature(REPROCESS_STEP_TASK, args=[job_id]).apply_async(countdown=countdown, retry=False)
    except broker_errors() as error:
        logger.warning("Broker unavailable, reprocess job %s waits for Resume: %s", job_id, error)


def reprocess_job_step(*, job_id: int) -> bool:
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
        selectors.reprocess_remaining(job=job)
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
            **_RETRY_RESET, assigned_version=job.model_version, reprocess_job=job, retried_at=now, enqueued_at=now
        )
        sent = Prediction.objects.filter(id__in=ids, reprocess_job=job, status=PredictionStatus.PENDING)
        transaction.on_commit(functools.partial(_reprocess_send, ids=list(sent.values_list("id", flat=True))))
    return True


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
    transaction.on_commit(lambda: _reprocess_step_send(job_id=job.pk, countdown=0), robust=True)
    return job


def reprocess_job_cancel(*, job: ReprocessJob) -> ReprocessJob:
    """Send nothing more, ever (those sent finish). ``ConflictError`` for a done or cancelled job."""
    return _reprocess_job_move(
        job=job, allowed=[ReprocessJobStatus.RUNNING, ReprocessJobStatus.PAUSED], status=ReprocessJobStatus.CANCELLED
    )


# --- Worker heartbeats (written by predictions.worker, read by readiness and /metrics) ---


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

"""Submitting images and what an owner does with a prediction afterwards: create (one or
many), queue, retry, delete, the thumbnail, and re-sending what a broker outage left
unsent.
"""

from __future__ import annotations

import functools
import io
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from celery import current_app
from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone

from imagerec.celery import broker_errors
from predictions import selectors
from predictions.exceptions import (
    ApplicationError,
    ConflictError,
    StorageUnavailableError,
)
from predictions.images import check_upload_size, thumbnail_jpeg, validate_image_bytes
from predictions.models import (
    ModelVersion,
    Prediction,
    PredictionId,
    PredictionStatus,
)
from predictions.registry import selectors as registry_selectors
from predictions.storage import media_read, media_store

logger = logging.getLogger(__name__)


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
    the user's share, ``registry_selectors.model_version_for_user``) and the worker runs it.
    Raises ``InvalidImageError`` (or a subclass) before anything is written.
    """
    outcome = prediction_create_many(user=user, uploaded_files=[uploaded_file], top_k=top_k)[0]
    if outcome.error is not None:
        raise outcome.error
    assert outcome.prediction is not None
    return outcome.prediction


def prediction_create_many(
    *,
    user: User,
    uploaded_files: Iterable[UploadedFile[bytes]],
    top_k: int | None = None,
    before_queue: Callable[[Sequence[PredictionId]], None] | None = None,
) -> list[SubmissionOutcome]:
    """Submit one or several files; a bad one gets its own error and does not sink the others.

    What a request costs does not grow with its files beyond what each needs (checking,
    storing): the model version is chosen once, and the accepted files' rows are written
    in **one INSERT in one transaction**, their messages sent once it commits.
    ``before_queue`` is called with the new rows' ids inside that transaction, before
    anything is queued: a request that waits for them subscribes there, so that no
    announcement can come before it listens.

    Raises ``ApplicationError`` for more than ``MAX_FILES_PER_REQUEST`` files or a bad
    ``top_k``, and ``StorageUnavailableError`` when the media store is down before any
    file was stored (nothing written: the whole request is answered 503). Once one is
    stored, the files after an outage each get that error instead of being tried.
    """
    received = time.perf_counter()
    uploaded_files = list(uploaded_files)
    if len(uploaded_files) > settings.MAX_FILES_PER_REQUEST:
        raise ApplicationError(f"Send at most {settings.MAX_FILES_PER_REQUEST} images at a time.", field="image")
    top_k = settings.DEFAULT_TOP_K if top_k is None else top_k
    if not 1 <= top_k <= settings.MAX_TOP_K:
        raise ApplicationError(f"top_k must be between 1 and {settings.MAX_TOP_K}.", field="top_k")
    version = registry_selectors.model_version_for_user(user=user)
    outcomes: list[SubmissionOutcome] = []
    stored: list[Prediction] = []
    outage: StorageUnavailableError | None = None
    for uploaded_file in uploaded_files:
        outcome = SubmissionOutcome(filename=_clean_filename(uploaded_file.name), error=outage)
        if outage is None:
            try:
                outcome.prediction = _prediction_stored(
                    user=user, uploaded_file=uploaded_file, top_k=top_k, version=version, received=received
                )
                stored.append(outcome.prediction)
            except StorageUnavailableError as error:
                if not stored:
                    raise
                outcome.error = outage = error
            except ApplicationError as error:
                outcome.error = error
        outcomes.append(outcome)
    if stored:
        _predictions_insert(predictions=stored, before_queue=before_queue)
    return outcomes


def _prediction_stored(
    *, user: User, uploaded_file: UploadedFile[bytes], top_k: int, version: ModelVersion | None, received: float
) -> Prediction:
    """One file checked and stored, and its row built (not saved yet)."""
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
        decode_bytes=checked.decode_bytes,
        sha256=checked.sha256,
        top_k=top_k,
        assigned_version=version,
    )
    earlier = selectors.prediction_reusable(user=user, sha256=checked.sha256, top_k=top_k, model_version=version)
    if earlier is not None:
        _copy_result(source=earlier, target=prediction, received=received)
    # clean_fields, not full_clean: the unique check would cost a query for a fresh UUID.
    prediction.clean_fields(exclude=["image", "thumbnail", "user", "model_version", "assigned_version"])
    with media_store():  # an outage: StorageUnavailableError (503) before any row is written
        prediction.image.save(f"upload.{checked.extension}", ContentFile(content), save=False)
    return prediction


def _predictions_insert(
    *,
    predictions: list[Prediction],
    before_queue: Callable[[Sequence[PredictionId]], None] | None,
    keep_files: bool = False,
) -> None:
    """The rows in one INSERT and one transaction, each not cached queued after commit;
    on any failure no row is written and the stored files are deleted (unless
    ``keep_files``: a direct upload's object, which a second commit must not delete)."""
    queued = [prediction.id for prediction in predictions if not prediction.cached]
    try:
        with transaction.atomic():
            Prediction.objects.bulk_create(predictions)
            if before_queue is not None:
                before_queue([prediction.id for prediction in predictions])
            if queued:
                transaction.on_commit(lambda: _enqueue_chunks(queued), robust=True)
    except BaseException:
        for prediction in predictions if not keep_files else ():
            prediction.image.delete(save=False)
        raise


def _enqueue_chunks(prediction_ids: Sequence[PredictionId]) -> None:
    # One message per chunk of up to INFERENCE_BATCH_SIZE rows (what one batch takes), not
    # one per row: its worker claims the first with its batch and sends on the chunk's rows
    # that batch did not take (``batches.prediction_claim``), so every row is still sent.
    size = max(1, int(settings.INFERENCE_BATCH_SIZE))
    for start in range(0, len(prediction_ids), size):
        first, *rest = prediction_ids[start : start + size]
        prediction_enqueue(prediction_id=first, chunk=rest)


def _copy_result(*, source: Prediction, target: Prediction, received: float) -> None:
    """Give ``target`` the stored result of ``source`` (same bytes, same active model)."""
    target.status = PredictionStatus.SUCCEEDED
    target.cached = True
    target.enqueued_at = None
    target.model_version = source.model_version  # the object: the answer shows it without a query
    target.label, target.class_id, target.confidence = source.label, source.class_id, source.confidence
    target.entropy, target.margin, target.uncertain = source.entropy, source.margin, source.uncertain
    # A multi-label result keeps its passing labels below the top-k too (``_stored_top``).
    target.top_predictions = [
        entry for rank, entry in enumerate(source.top_predictions) if rank < target.top_k or entry.get("positive")
    ]
    target.started_at = target.completed_at = timezone.now()
    target.queue_ms = target.preprocess_ms = target.inference_ms = 0.0
    target.total_ms = round((time.perf_counter() - received) * 1000, 3)


# The task is named, not imported: the tasks import the services, never the reverse.
PREDICTION_RUN_TASK = "predictions.tasks.prediction_run"


def prediction_enqueue(
    *,
    prediction_id: PredictionId,
    rerun: bool = False,
    countdown: float | None = None,
    chunk: Sequence[PredictionId] = (),
) -> bool:
    """Send the task. A broker outage is logged, not raised: the rows stay pending
    and ``prediction_reconcile`` sends them again later. ``rerun``: a prediction finished
    before and sent again (reprocessing), which a worker must not skip as done.
    ``countdown``: seconds before a worker may take it (a row whose user is at the in-flight limit).
    ``chunk``: more rows of the same submission in the same message (``_enqueue_chunks``)."""
    try:
        # The registered task when this process has imported it (eager mode, tests),
        # else a message by name, routed to the inference queue like the task itself.
        kwargs: dict[str, Any] = {"rerun": True} if rerun else {}
        if chunk:
            kwargs["chunk"] = [str(i) for i in chunk]
        signature = current_app.signature(PREDICTION_RUN_TASK, args=[str(prediction_id)], kwargs=kwargs)
        if countdown:
            signature.apply_async(retry=False, countdown=countdown)
        else:
            signature.apply_async(retry=False)
    except broker_errors() as error:
        logger.warning("Broker unavailable, prediction %s stays pending: %s", prediction_id, error)
        # Unsent: the reconciler picks them up once older than its threshold.
        Prediction.objects.filter(id__in=[prediction_id, *chunk]).update(enqueued_at=None)
        return False
    return True


def prediction_chunk_forward(*, chunk: Sequence[PredictionId], taken: Sequence[Prediction] = ()) -> bool:
    """Send on, in one message, the rows of a message's chunk still pending that its batch
    did not take (``taken``; none when it failed before claiming); ``False`` when none is."""
    claimed = {str(p.id) for p in taken}
    rest = [i for i in chunk if str(i) not in claimed]
    if not rest:
        return False
    pending = list(
        Prediction.objects.filter(id__in=rest, status=PredictionStatus.PENDING)
        .order_by("created_at")
        .values_list("id", flat=True)
    )
    if not pending:
        return False
    return prediction_enqueue(prediction_id=pending[0], chunk=pending[1:])


def prediction_enqueue_many(*, prediction_ids: Iterable[PredictionId]) -> int:
    """Send the task of each prediction and record the time (the reconciler re-sends a
    message at most once per threshold, instead of flooding a long but healthy queue)."""
    sent = [prediction_id for prediction_id in prediction_ids if prediction_enqueue(prediction_id=prediction_id)]
    Prediction.objects.filter(id__in=sent).update(enqueued_at=timezone.now())
    return len(sent)


def prediction_thumbnail(*, prediction: Prediction) -> str:
    """The storage name of the prediction's thumbnail, made and stored on first use:
    pages show it without decoding the original again."""
    storage = prediction.thumbnail.storage
    with media_store():
        if prediction.thumbnail.name and storage.exists(prediction.thumbnail.name):
            return prediction.thumbnail.name
        content = thumbnail_jpeg(io.BytesIO(media_read(prediction.image)))
        name = storage.save(
            f"thumbnails/{prediction.created_at:%Y/%m/%d}/{prediction.id.hex}.jpg", ContentFile(content)
        )
    Prediction.objects.filter(id=prediction.id).update(thumbnail=name)
    prediction.thumbnail.name = name
    return name


def prediction_delete(*, prediction: Prediction) -> None:
    """Delete a prediction and, once the deletion is committed, its image file, its
    thumbnail and its explanations' overlays (each shows the image)."""
    names = [name for name in (prediction.image.name, prediction.thumbnail.name) if name]
    with transaction.atomic():
        names += [name for name in prediction.explanations.values_list("image", flat=True) if name]
        prediction.delete()
        transaction.on_commit(functools.partial(media_delete, names=names), robust=True)


# Named, not imported, like PREDICTION_RUN_TASK.
MEDIA_DELETE_TASK = "predictions.tasks.media_delete"


def media_delete(*, names: list[str], retry_later: bool = True) -> list[str]:
    """Delete stored files (an image, its thumbnail, overlays) by name; returns those
    left because the media store is unavailable. With ``retry_later`` those are handed to
    the ``media_delete`` task (maintenance queue), which retries until the store is back,
    so a deletion during an outage still removes the objects."""
    left = []
    for name in names:
        try:
            with media_store():
                default_storage.delete(name)
        except StorageUnavailableError:
            left.append(name)
    if left and retry_later:
        try:
            current_app.signature(MEDIA_DELETE_TASK, args=[left]).apply_async(retry=False)
        except broker_errors() as error:
            logger.error("Media store and broker unavailable, files left behind: %s (%s)", left, error)
    return left


def prediction_reconcile(*, older_than_seconds: int | None = None) -> int:
    """Re-enqueue predictions stuck in pending/running (broker outage, lost message).

    Safe to run any time: the task is idempotent. Returns how many were sent.
    """
    age = settings.RECONCILE_AFTER_SECONDS if older_than_seconds is None else older_than_seconds
    cutoff = timezone.now() - timedelta(seconds=age)
    return prediction_enqueue_many(prediction_ids=selectors.prediction_stuck_ids(before=cutoff))


RETRY_RESET: dict[str, Any] = {
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
            **RETRY_RESET, retried_at=now, enqueued_at=now
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

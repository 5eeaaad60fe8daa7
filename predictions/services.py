"""Every write and business rule of imagerec. Views, API views, tasks, admin
actions and commands call these functions; none of them writes rows itself.

The life of one image::

    prediction_create() -> row (pending) + file -> on commit: tasks.prediction_run(id)
    -> prediction_process(): prediction_start() claims it, the runner classifies,
       prediction_complete() / prediction_fail() store the outcome.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from kombu.exceptions import KombuError

from . import selectors
from .exceptions import ApplicationError, ModelUnavailableError
from .images import check_upload_size, validate_image_bytes
from .inference import Classifier, ImageResult, ModelLoadError, get_classifier
from .models import ModelVersion, Prediction, PredictionStatus

logger = logging.getLogger(__name__)


@dataclass
class SubmissionOutcome:
    """One file of a multi-file submission: the created prediction or why it was refused."""

    filename: str
    prediction: Prediction | None = None
    error: ApplicationError | None = None


def _read_upload(uploaded_file: UploadedFile) -> bytes:
    if uploaded_file.size is not None:
        check_upload_size(uploaded_file.size)
    uploaded_file.seek(0)
    return uploaded_file.read(settings.MAX_UPLOAD_BYTES + 1)


def _clean_filename(name: str | None) -> str:
    # Keep only the last path component, printable, and bounded in length: it is
    # shown to people, never used as a path.
    base = (name or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip() or "upload"
    return base[-255:]


def prediction_create(*, user: AbstractBaseUser, uploaded_file: UploadedFile, top_k: int | None = None) -> Prediction:
    """Validate an upload, store the file and a ``pending`` row, queue it after commit.

    Raises ``InvalidImageError`` (or a subclass) before anything is written.
    """
    top_k = settings.DEFAULT_TOP_K if top_k is None else top_k
    if not 1 <= top_k <= settings.MAX_TOP_K:
        raise ApplicationError(f"top_k must be between 1 and {settings.MAX_TOP_K}.", field="top_k")
    content = _read_upload(uploaded_file)
    checked = validate_image_bytes(content)
    prediction = Prediction(
        user=user,
        created_at=timezone.now(),
        original_filename=_clean_filename(uploaded_file.name),
        image_format=checked.image_format,
        size_bytes=checked.size_bytes,
        width=checked.width,
        height=checked.height,
        sha256=checked.sha256,
        top_k=top_k,
    )
    prediction.image.save(f"upload.{checked.extension}", ContentFile(content), save=False)
    try:
        with transaction.atomic():
            prediction.full_clean()
            prediction.save(force_insert=True)
            transaction.on_commit(lambda: prediction_enqueue(prediction_id=prediction.id), robust=True)
    except BaseException:
        prediction.image.delete(save=False)
        raise
    return prediction


def prediction_create_many(
    *, user: AbstractBaseUser, uploaded_files: Iterable[UploadedFile], top_k: int | None = None
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


def prediction_enqueue(*, prediction_id: object) -> bool:
    """Send the task. A broker outage is logged, not raised: the row stays pending
    and ``prediction_reconcile`` sends it again later."""
    from .tasks import prediction_run

    try:
        prediction_run.apply_async(args=[str(prediction_id)], retry=False)
    except broker_errors() as error:
        logger.warning("Broker unavailable, prediction %s stays pending: %s", prediction_id, error)
        return False
    # Remembered so the reconciler re-sends a message at most once per threshold,
    # instead of flooding a long (but healthy) queue with duplicates.
    Prediction.objects.filter(id=prediction_id).update(enqueued_at=timezone.now())
    return True


@functools.cache
def broker_errors() -> tuple[type[BaseException], ...]:
    """What the configured transport raises when the broker is unreachable."""
    from celery import current_app

    connection = current_app.connection_for_write()
    return (KombuError, OSError, *connection.connection_errors, *connection.channel_errors)


def prediction_start(*, prediction_id: object) -> Prediction | None:
    """Claim a prediction for this worker; ``None`` when it is final, gone, or being
    worked on right now.

    A conditional update makes duplicate deliveries harmless. A ``running`` row is
    claimed again only once it is older than ``RECONCILE_AFTER_SECONDS`` (its worker
    died mid-task); after ``MAX_ATTEMPTS`` claims it is failed instead, so an image
    that kills workers cannot loop forever.
    """
    now = timezone.now()
    stale = now - timedelta(seconds=settings.RECONCILE_AFTER_SECONDS)
    claimable = Prediction.objects.filter(id=prediction_id).filter(
        Q(status=PredictionStatus.PENDING) | Q(status=PredictionStatus.RUNNING, started_at__lt=stale)
    )
    if claimable.filter(attempts__gte=settings.MAX_ATTEMPTS).exists():
        prediction_fail(
            prediction_id=prediction_id,
            error=f"Gave up after {settings.MAX_ATTEMPTS} attempts: the worker stopped while processing this image.",
        )
        return None
    claimed = claimable.filter(attempts__lt=settings.MAX_ATTEMPTS).update(
        status=PredictionStatus.RUNNING, started_at=now, attempts=F("attempts") + 1
    )
    if claimed != 1:
        return None
    return Prediction.objects.select_related("model_version").get(id=prediction_id)


def prediction_release(*, prediction_id: object) -> None:
    """Give a claimed prediction back (``running`` -> ``pending``) for a retry."""
    Prediction.objects.filter(id=prediction_id, status=PredictionStatus.RUNNING).update(status=PredictionStatus.PENDING)


def prediction_complete(*, prediction: Prediction, result: ImageResult, model_version: ModelVersion) -> bool:
    """Store a successful classification; only a ``running`` row is completed (exactly once)."""
    completed_at = timezone.now()
    top = result.top
    prediction.status = PredictionStatus.SUCCEEDED
    prediction.model_version = model_version
    prediction.label = top.label
    prediction.class_id = top.class_id
    prediction.confidence = top.score
    prediction.top_predictions = [
        {"label": item.label, "class_id": item.class_id, "score": round(item.score, 6)} for item in result.predictions
    ]
    prediction.queue_ms = _ms(prediction.started_at - prediction.created_at)
    prediction.preprocess_ms = round(result.preprocess_ms, 3)
    prediction.inference_ms = round(result.inference_ms, 3)
    prediction.total_ms = _ms(completed_at - prediction.created_at)
    prediction.completed_at = completed_at
    prediction.error = ""
    prediction.full_clean(exclude=["image"])
    fields = [
        "status", "model_version", "label", "class_id", "confidence", "top_predictions",
        "queue_ms", "preprocess_ms", "inference_ms", "total_ms", "completed_at", "error",
    ]  # fmt: skip
    return (
        Prediction.objects.filter(id=prediction.id, status=PredictionStatus.RUNNING).update(
            **{name: getattr(prediction, name) for name in fields}
        )
        == 1
    )


def prediction_fail(*, prediction_id: object, error: str) -> bool:
    """Mark a non-final prediction ``failed`` with a readable reason."""
    now = timezone.now()
    return (
        Prediction.objects.filter(
            id=prediction_id, status__in=[PredictionStatus.PENDING, PredictionStatus.RUNNING]
        ).update(status=PredictionStatus.FAILED, error=error[:2000], completed_at=now)
        == 1
    )


def prediction_process(*, prediction_id: object) -> None:
    """Run one prediction end to end in the worker. Idempotent."""
    prediction = prediction_start(prediction_id=prediction_id)
    if prediction is None:
        logger.info("Prediction %s is final or gone; nothing to do", prediction_id)
        return
    model_version = model_version_get_or_sync_active()
    classifier = classifier_for(model_version=model_version)
    try:
        image_path = prediction.image.path
    except (ValueError, NotImplementedError):
        image_path = ""
    if not image_path or not Path(image_path).exists():
        prediction_fail(prediction_id=prediction.id, error="The stored image file is missing.")
        return
    result = classifier.classify([image_path], top_k=prediction.top_k)[0]
    if result.error:
        prediction_fail(prediction_id=prediction.id, error=result.error)
        return
    prediction_complete(prediction=prediction, result=result, model_version=model_version)


def prediction_delete(*, prediction: Prediction) -> None:
    """Delete a prediction and, once the deletion is committed, its image file."""
    storage, name = prediction.image.storage, prediction.image.name
    with transaction.atomic():
        prediction.delete()
        if name:
            transaction.on_commit(lambda: storage.delete(name), robust=True)


def prediction_reconcile(*, older_than_seconds: int | None = None) -> int:
    """Re-enqueue predictions stuck in pending/running (broker outage, lost message).

    Safe to run any time: the task is idempotent. Returns how many were sent.
    """
    age = settings.RECONCILE_AFTER_SECONDS if older_than_seconds is None else older_than_seconds
    cutoff = timezone.now() - timedelta(seconds=age)
    sent = 0
    for prediction_id in selectors.prediction_stuck_ids(before=cutoff):
        sent += prediction_enqueue(prediction_id=prediction_id)
    return sent


def _ms(delta: timedelta) -> float:
    return round(max(delta.total_seconds(), 0.0) * 1000, 3)


# --- Model versions -----------------------------------------------------------


def model_version_sync(*, model_dir: Path | None = None) -> list[ModelVersion]:
    """Register every exported model under ``MODEL_DIR`` and activate the default
    (``MODEL_NAME``, highest version) if none is active yet."""
    root = Path(model_dir or settings.MODEL_DIR)
    found = []
    for metadata_path in sorted(root.glob("*/*/metadata.json")):
        try:
            metadata = json.loads(metadata_path.read_text())
        except (OSError, ValueError) as error:
            logger.warning("Skipping %s: unreadable metadata (%s)", metadata_path, error)
            continue
        version, _ = ModelVersion.objects.update_or_create(
            name=str(metadata.get("name", metadata_path.parent.parent.name)),
            version=str(metadata.get("version", metadata_path.parent.name)),
            defaults={"path": str(metadata_path.parent), "metadata": metadata},
        )
        found.append(version)
    if found and not ModelVersion.objects.filter(is_active=True).exists():
        default = [v for v in found if v.name == settings.MODEL_NAME] or found
        model_version_activate(model_version=max(default, key=lambda v: _version_key(v.version)))
    return found


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (-1, version)


@transaction.atomic
def model_version_activate(*, model_version: ModelVersion) -> ModelVersion:
    """Make ``model_version`` the one new predictions use."""
    if not (Path(model_version.path) / "metadata.json").exists():
        raise ModelUnavailableError(f"{model_version} has no exported files at {model_version.path}.")
    ModelVersion.objects.filter(is_active=True).exclude(pk=model_version.pk).update(is_active=False)
    model_version.is_active = True
    model_version.full_clean()
    model_version.save(update_fields=["is_active"])
    return model_version


def model_version_get_or_sync_active() -> ModelVersion:
    """The active model version, registering models from disk on first use."""
    active = selectors.model_version_active()
    if active is None:
        model_version_sync()
        active = selectors.model_version_active()
    if active is None:
        raise ModelUnavailableError(f"No model is installed under {settings.MODEL_DIR}; run `make model` to build one.")
    return active


def classifier_for(*, model_version: ModelVersion) -> Classifier:
    """The loaded classifier of ``model_version`` in this process (loaded once, then cached)."""
    try:
        return get_classifier(Path(model_version.path), engine=settings.MODEL_ENGINE, threads=settings.MODEL_THREADS)
    except ModelLoadError as error:
        raise ModelUnavailableError(str(error)) from error


def model_warmup() -> None:
    """Load and warm up the active model in this (worker) process."""
    classifier_for(model_version=model_version_get_or_sync_active())


def _login_key(*, ip_address: str, username: str) -> str:
    digest = hashlib.sha256(f"{ip_address}|{username.lower()}".encode()).hexdigest()
    return f"login-failures:{digest}"


def login_attempt_allowed(*, ip_address: str, username: str) -> bool:
    """False once this address has failed ``LOGIN_FAILURE_LIMIT`` times for this username
    within ``LOGIN_FAILURE_WINDOW_SECONDS``."""
    failures = cache.get(_login_key(ip_address=ip_address, username=username), 0)
    return failures < settings.LOGIN_FAILURE_LIMIT


def login_failure_record(*, ip_address: str, username: str) -> None:
    """Count one failed login for this address and username (window starts at the first)."""
    key = _login_key(ip_address=ip_address, username=username)
    if cache.add(key, 1, timeout=settings.LOGIN_FAILURE_WINDOW_SECONDS):
        return
    try:
        cache.incr(key)
    except ValueError:  # expired between add() and incr()
        cache.set(key, 1, timeout=settings.LOGIN_FAILURE_WINDOW_SECONDS)


def login_failures_clear(*, ip_address: str, username: str) -> None:
    """Forget the failures after a successful login."""
    cache.delete(_login_key(ip_address=ip_address, username=username))


@transaction.atomic
def token_rotate(*, user: AbstractBaseUser) -> str:
    """Replace the user's API token with a new one and return its key."""
    from rest_framework.authtoken.models import Token

    Token.objects.filter(user=user).delete()
    return Token.objects.create(user=user).key

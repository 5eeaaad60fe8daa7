"""Explanations (Grad-CAM) of succeeded predictions: the writes and the rules (reads are
in ``selectors``).

The life of one explanation::

    POST -> explanation_request() -> Explanation row (pending) -> on commit:
    tasks.explanation_compute(id) (inference queue) -> explanation_compute(): the
    runner (``ml.gradcam``) draws the heat map over the image -> PNG in media,
    row succeeded (or failed with a reason in words) -> GET: the page / API serve the PNG.

Nothing is left pending for good: the task's failure hook fails the row, a worker that
dies mid-task has its message delivered again (late acks), and a request (POST) for a
row still pending after ``RECONCILE_AFTER_SECONDS`` sends it again. A failed explanation is
tried again by a request made ``RETRY_FAILED_AFTER_SECONDS`` after it failed.
"""

from __future__ import annotations

import functools
import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone

from imagerec.celery import broker_errors
from ml.export import ModelLoadError
from ml.gradcam import ExplanationUnsupportedError
from predictions.exceptions import ConflictError, NotFoundError
from predictions.models import Explanation, ExplanationStatus, Prediction, PredictionStatus
from predictions.registry import runtime
from predictions.storage import media_read, media_store

logger = logging.getLogger(__name__)


RETRY_FAILED_AFTER_SECONDS = 60


FAILED_SERVER_MESSAGE = "The explanation could not be computed because of a problem on our side. Please try again."


TOO_LONG_MESSAGE = "Computing the explanation took too long and was stopped. Please try again."


MISSING_IMAGE_MESSAGE = "The stored image file is missing, so it cannot be explained."


MODEL_MISSING_MESSAGE = (
    "The model version that made this prediction is not available any more, so it cannot be explained."
)


def explanation_request(
    *, prediction: Prediction, user: User | AnonymousUser, class_id: str | None = None
) -> Explanation:
    """The explanation of ``prediction`` for ``class_id`` (default: its top class): the
    stored one, or a new one queued for the inference worker after commit.

    Only the owner's succeeded predictions are explained (404 for anyone else's, 409 for
    one not succeeded) and only for one of the prediction's top-k classes (409 too: which
    classes it has is the prediction's state, not something a request can get wrong by its form). A stored
    explanation is computed again when the prediction was re-run by another model
    version since, when it is still pending after ``RECONCILE_AFTER_SECONDS`` (its message
    was lost), or when it failed ``RETRY_FAILED_AFTER_SECONDS`` ago or longer."""
    if prediction.user_id != getattr(user, "pk", None):
        raise NotFoundError("No such prediction.")
    if prediction.status != PredictionStatus.SUCCEEDED:
        raise ConflictError(
            f"Only a succeeded prediction can be explained; this one is {prediction.status}.", field="status"
        )
    top_classes = [str(entry.get("class_id", "")) for entry in prediction.top_predictions if isinstance(entry, dict)]
    wanted = class_id or prediction.class_id
    if wanted not in top_classes:
        raise ConflictError(
            f"class_id must be one of this prediction's top {len(top_classes)} classes: {', '.join(top_classes)}.",
            field="class_id",
        )
    now = timezone.now()
    with transaction.atomic():
        explanation, created = Explanation.objects.get_or_create(
            prediction=prediction,
            class_id=wanted,
            defaults={"model_version": prediction.model_version, "created_at": now, "enqueued_at": now},
        )
        if created:
            logger.info("Explanation %s of prediction %s for %s requested", explanation.pk, prediction.id, wanted)
        elif _needs_recompute(explanation, prediction=prediction, now=now):
            stale_image = explanation.image.name
            # Conditional on what was read: of two requests at once, one sends it again.
            reset = Explanation.objects.filter(
                pk=explanation.pk, status=explanation.status, enqueued_at=explanation.enqueued_at
            ).update(
                status=ExplanationStatus.PENDING, error="", image="", layer="", compute_ms=None, finished_at=None,
                model_version=prediction.model_version, enqueued_at=now,
            )  # fmt: skip
            if reset != 1:
                explanation.refresh_from_db()
                return explanation
            logger.info("Explanation %s (%s) sent again", explanation.pk, explanation.status)
            if stale_image:
                storage = explanation.image.storage
                transaction.on_commit(functools.partial(storage.delete, stale_image), robust=True)
            explanation.refresh_from_db()
        else:
            return explanation
        explanation_id = explanation.pk
        transaction.on_commit(lambda: explanation_enqueue(explanation_id=explanation_id), robust=True)
    return explanation


def _needs_recompute(explanation: Explanation, *, prediction: Prediction, now: datetime) -> bool:
    if explanation.model_version_id != prediction.model_version_id:
        return True
    if explanation.status == ExplanationStatus.PENDING:
        return explanation.enqueued_at < now - timedelta(seconds=settings.RECONCILE_AFTER_SECONDS)
    if explanation.status == ExplanationStatus.FAILED:
        finished = explanation.finished_at or explanation.enqueued_at
        return finished < now - timedelta(seconds=RETRY_FAILED_AFTER_SECONDS)
    return False


def explanation_enqueue(*, explanation_id: int) -> bool:
    """Send the task (routed to the inference queue). A broker outage is logged: the row
    stays pending and a request after the reconcile threshold sends it again."""
    from .tasks import explanation_compute  # the tasks import the services, so imported here

    try:
        explanation_compute.apply_async(args=(explanation_id,), retry=False)
    except broker_errors() as error:
        logger.warning("Broker unavailable, explanation %s stays pending: %s", explanation_id, error)
        return False
    return True


def explanation_compute(*, explanation_id: int) -> Explanation | None:
    """Compute a pending explanation with the model version that made the prediction
    and store the overlay PNG; runs in the inference worker. A failure a person can act
    on (no Keras graph in an old export, the model or the image gone, a class the model
    does not have) fails the row with that reason; anything else propagates to the
    task, whose failure hook fails the row with a general message. Returns ``None`` when the row is gone or no
    longer pending (a duplicate delivery)."""
    explanation = (
        Explanation.objects.select_related("prediction", "model_version")
        .filter(pk=explanation_id, status=ExplanationStatus.PENDING)
        .first()
    )
    if explanation is None:
        return None
    model_version = explanation.model_version
    if model_version is None:
        explanation_fail(explanation_id=explanation_id, error=MODEL_MISSING_MESSAGE)
        return _reloaded(explanation_id)
    try:
        explainer = runtime.explainer_for(model_version=model_version)  # TensorFlow loads here, in the worker
    except ExplanationUnsupportedError as error:
        explanation_fail(explanation_id=explanation_id, error=str(error))
        return _reloaded(explanation_id)
    except ModelLoadError as error:
        logger.error("Explanation %s: %s", explanation_id, error)
        explanation_fail(explanation_id=explanation_id, error=MODEL_MISSING_MESSAGE)
        return _reloaded(explanation_id)
    if explanation.class_id not in explainer.class_ids:
        message = f"Model {explainer.name} v{explainer.version} has no class {explanation.class_id!r} to explain."
        explanation_fail(explanation_id=explanation_id, error=message)
        return _reloaded(explanation_id)
    try:
        image_bytes = media_read(explanation.prediction.image)  # an outage raises: the task retries
    except FileNotFoundError:
        explanation_fail(explanation_id=explanation_id, error=MISSING_IMAGE_MESSAGE)
        return _reloaded(explanation_id)
    result = explainer.explain(image_bytes, explanation.class_id)
    storage = explanation.image.storage
    with media_store():
        name = storage.save(
            explanation.image.field.generate_filename(explanation, "explanation.png"), ContentFile(result.png())
        )
    # Only if still pending for the version it was computed with (not reset meanwhile).
    stored = Explanation.objects.filter(
        pk=explanation_id, status=ExplanationStatus.PENDING, model_version=model_version
    ).update(
        status=ExplanationStatus.SUCCEEDED, image=name, error="", layer=result.layer_name,
        compute_ms=result.compute_ms, finished_at=timezone.now(),
    )  # fmt: skip
    if stored != 1:  # finished or reset meanwhile: this file is nobody's
        storage.delete(name)
        return _reloaded(explanation_id)
    logger.info(
        "Explanation %s: %s of %s on %s in %.0f ms", explanation_id, explanation.class_id,
        explanation.prediction_id, result.layer_name, result.compute_ms,
    )  # fmt: skip
    return _reloaded(explanation_id)


def _reloaded(explanation_id: int) -> Explanation | None:
    return Explanation.objects.filter(pk=explanation_id).first()


def explanation_fail(*, explanation_id: int, error: str) -> bool:
    """Mark a pending explanation ``failed`` with a reason the owner can read."""
    failed = Explanation.objects.filter(pk=explanation_id, status=ExplanationStatus.PENDING).update(
        status=ExplanationStatus.FAILED, error=error[:2000], finished_at=timezone.now()
    )
    if failed:
        logger.warning("Explanation %s failed: %s", explanation_id, error)
    return failed == 1

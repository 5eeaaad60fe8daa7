"""Reviews: the owner confirms a prediction or corrects its label; one review per prediction."""

from __future__ import annotations

import logging
import unicodedata

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from predictions.exceptions import (
    ApplicationError,
    ConflictError,
    NotFoundError,
    UnknownClassError,
)
from predictions.models import (
    Correction,
    ModelVersion,
    Prediction,
    PredictionStatus,
)
from predictions.registry import selectors as registry_selectors

logger = logging.getLogger(__name__)


def _correction_class(*, model_version: ModelVersion | None, label: str, new_class: bool) -> tuple[str, str, bool]:
    """``(label, class_id, new_class)`` of a correction to ``label``: the model class whose
    label it is (ignoring case; spelled as the model spells it), else, when the owner
    said so, a new class. Raises ``UnknownClassError`` naming the closest classes when
    it is neither."""
    found = registry_selectors.model_class_find(model_version=model_version, label=label)
    if found is not None:
        return found.label, found.class_id, False
    if new_class:
        return label, "", True
    closest = registry_selectors.model_class_closest(model_version=model_version, text=label)
    count = len(model_version.classes) if model_version is not None else 0
    hint = f"the closest are: {', '.join(closest)}" if closest else "none is close to it"
    raise UnknownClassError(
        f"{label!r} is not one of the model's {count} classes; {hint}. Pick one of the model's classes, "
        "or say that it is a new class (one the model does not have yet).",
        field="label",
    )


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


def _review_save(
    *, prediction: Prediction, user: User, label: str, class_id: str, confirmed: bool, new_class: bool = False
) -> Correction:
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
    review.new_class = new_class
    review.predicted_label = prediction.label
    review.model_version = prediction.model_version
    review.corrected_by = user
    review.updated_at = now
    review.full_clean()
    review.save()
    return review


@transaction.atomic
def correction_set(*, prediction: Prediction, user: User, label: str, new_class: bool = False) -> Correction:
    """Record that the model got ``prediction`` wrong and what it shows: ``label`` is one
    of the predicting model's classes (matched ignoring case; the class's own spelling
    and ``class_id`` are kept) or, with ``new_class``, a class the model does not have
    (stored as given, marked ``new_class``). It replaces the prediction's earlier
    review, a correction or a confirmation (``created_at`` stays). The prediction's own
    result is never changed, and nothing the worker writes touches a correction.

    Raises ``UnknownClassError`` (400) for a label that is none of the model's classes
    without ``new_class`` (the message names the closest), ``ApplicationError`` (400)
    for an empty label, ``ConflictError`` (409) for the one the model gave (that is a
    confirmation: ``prediction_confirm``; which label it gave is the prediction's state)
    or when the prediction has not succeeded.
    """
    # NFC: "café" typed on a Mac and on a PC is one label (and one folder in an export).
    label = unicodedata.normalize("NFC", " ".join(label.split()))
    if not label:
        raise ApplicationError("Give the right label.", field="label")
    max_length = Correction._meta.get_field("label").max_length or 200
    if len(label) > max_length:
        raise ApplicationError(f"A label has at most {max_length} characters.", field="label")
    current = _prediction_lock_succeeded(prediction=prediction, action="corrected")
    if label.casefold() == current.label.casefold():
        raise ConflictError(
            f"{current.label!r} is what the model said; if it is right, confirm it instead of correcting it.",
            field="label",
        )
    label, class_id, new_class = _correction_class(
        model_version=current.model_version, label=label, new_class=new_class
    )
    correction = _review_save(
        prediction=current, user=user, label=label, class_id=class_id, confirmed=False, new_class=new_class
    )
    logger.info("Prediction %s corrected: %r -> %r%s", current.id, current.label, label, " (new class)" * new_class)
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

"""Storing outcomes: a batch's results (or reasons) written to its rows in one transaction,
and a prediction failed with a reason people can read.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.db import connections, transaction
from django.db.models import Field
from django.utils import timezone

from ml.runner import ImageResult, LabelScore
from predictions import events
from predictions.images import DAMAGED_MESSAGE
from predictions.models import (
    ModelVersion,
    Prediction,
    PredictionId,
    PredictionStatus,
)

logger = logging.getLogger(__name__)

FAILED_SERVER_MESSAGE = "The image could not be classified because of a problem on our side. Please try again."


MODEL_UNAVAILABLE_MESSAGE = (
    "The classifier was not available for several minutes, so this image could not be classified. "
    "Please try again later."
)


MODEL_INTEGRITY_MESSAGE = (
    "The classifier's files did not match their published checksums, so this image was not classified with them. "
    "Please try again later."
)


TOO_LONG_MESSAGE = "Classification took too long and was stopped. Please try again."


MISSING_FILE_MESSAGE = "The stored image file is missing, so it could not be classified. Please upload it again."


_OUTCOME_FIELDS = (
    "status", "model_version", "label", "class_id", "confidence", "top_predictions", "entropy", "margin", "uncertain",
    "queue_ms", "preprocess_ms", "inference_ms", "total_ms", "completed_at", "error", "sha256",
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
    assert isinstance(field, Field), f"Prediction.{name} is a relation, not a field"
    assert field.column is not None, f"Prediction.{name} has no column"
    return field, field.column


def prediction_result_set(prediction: Prediction, result: ImageResult, completed_at: datetime) -> None:
    assert prediction.started_at is not None  # set when the row was claimed
    prediction.completed_at = completed_at
    prediction.queue_ms = _ms(prediction.started_at - _timed_from(prediction))
    prediction.preprocess_ms = round(result.preprocess_ms, 3)
    prediction.inference_ms = round(result.inference_ms, 3)
    prediction.total_ms = _ms(completed_at - _timed_from(prediction))
    if result.error:
        logger.info("Prediction %s cannot be decoded: %s", prediction.id, result.error)
        prediction.status = PredictionStatus.FAILED
        prediction.error = result.error if result.too_costly else DAMAGED_MESSAGE
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


def prediction_failure_set(prediction: Prediction, message: str, completed_at: datetime) -> None:
    prediction.status = PredictionStatus.FAILED
    prediction.error = message
    prediction.completed_at = completed_at
    prediction.total_ms = _ms(completed_at - _timed_from(prediction))


def _timed_from(prediction: Prediction) -> datetime:
    """Where a prediction's latency starts: its upload, or its last retry."""
    return prediction.retried_at or prediction.created_at


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


def _ms(delta: timedelta) -> float:
    return round(max(delta.total_seconds(), 0.0) * 1000, 3)

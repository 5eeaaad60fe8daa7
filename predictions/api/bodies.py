"""A prediction as JSON, written directly: what ``PredictionOutputSerializer`` (and
``SubmittedPredictionSerializer``) answer, field for field, for the hot paths (submit,
submit-and-wait, poll, batch).

Why not the serializer: a DRF serializer deep-copies its declared fields every time one
is built, and this one nests six others; that was ~2.7 ms of CPU per request, a fifth of
a submission's cost in the web process (``make bench-frontdoor``). The serializers stay
the documented shape (the OpenAPI schema is generated from them) and the list view's;
``tests/predictions/test_api_bodies.py`` holds the two equal on every kind of prediction.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.urls import reverse
from rest_framework import serializers
from rest_framework.request import Request

from ..models import Prediction

_DATETIME = serializers.DateTimeField()  # its ISO 8601 with "Z", in the current time zone


def _datetime(value: Any) -> str | None:
    return None if value is None else str(_DATETIME.to_representation(value))


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _label_score(entry: dict[str, Any]) -> dict[str, Any]:
    body = {"label": str(entry["label"]), "class_id": str(entry["class_id"]), "score": float(entry["score"])}
    if "positive" in entry and entry["positive"] is not None:
        body["positive"] = bool(entry["positive"])
    elif "positive" in entry:
        body["positive"] = None
    return body


def prediction_body(
    prediction: Prediction, request: Request | HttpRequest | None, *, submitted: bool = False
) -> dict[str, Any]:
    """``PredictionOutputSerializer(prediction).data`` (``submitted``: that of
    ``SubmittedPredictionSerializer``, with the deprecated ``filename``)."""
    detail = reverse("api:prediction-detail", kwargs={"prediction_id": prediction.id})
    image = reverse("api:prediction-image", args=[prediction.id])
    if request is not None:
        detail, image = request.build_absolute_uri(detail), request.build_absolute_uri(image)
    passing = prediction.passing_labels
    version = prediction.model_version
    body: dict[str, Any] = {
        "id": str(prediction.id),
        "url": detail,
        "status": str(prediction.status),
        "created_at": _datetime(prediction.created_at),
        "started_at": _datetime(prediction.started_at),
        "completed_at": _datetime(prediction.completed_at),
        "label": str(prediction.label),
        "class_id": str(prediction.class_id),
        "confidence": _float(prediction.confidence),
        "top_k": prediction.top_k,
        "predictions": [_label_score(entry) for entry in prediction.top_predictions],
        "labels": None if passing is None else [_label_score(entry) for entry in passing],
        "uncertainty": {"entropy": _float(prediction.entropy), "margin": _float(prediction.margin)},
        "uncertain": None if prediction.uncertain is None else bool(prediction.uncertain),
        "timings_ms": {
            "queue": _float(prediction.queue_ms),
            "preprocess": _float(prediction.preprocess_ms),
            "inference": _float(prediction.inference_ms),
            "total": _float(prediction.total_ms),
        },
        "model": None if version is None else {"name": version.name, "version": version.version},
        "image": {
            "url": image,
            "thumbnail_url": image + "?size=thumb",
            "sha256": prediction.sha256,
            "width": prediction.width,
            "height": prediction.height,
            "filename": prediction.original_filename,
        },
        "error": str(prediction.error),
        "cached": bool(prediction.cached),
    }
    if submitted:
        body["filename"] = prediction.original_filename
    return body

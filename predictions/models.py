"""Predictions: data and its invariants (no I/O, no model running here).

``predictions`` is the one Django app (one migration history); each room keeps its own
models beside its services (``registry``, ``reviews``, ``reprocessing``,
``explanations``, ``operations``). Importing them here registers them with the app.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import models

from .explanations.models import Explanation, ExplanationStatus, explanation_upload_to
from .learning.models import LearningControl, LearningCycle, LearningCycleState
from .operations.models import WorkerHeartbeat
from .registry.models import ModelActivation, ModelActivationKind, ModelVersion, ModelVersionStatus
from .reprocessing.models import ReprocessJob, ReprocessJobStatus, ReprocessScope
from .reviews.models import Correction

# Re-exported for migrations (0011 names ``predictions.models.explanation_upload_to``)
# and for code that reads every model of the app at once (the admin, the tests).
__all__ = [
    "FINAL_STATUSES", "Correction", "Explanation", "ExplanationStatus", "LearningControl", "LearningCycle",
    "LearningCycleState", "ModelActivation", "ModelActivationKind",
    "ModelVersion", "ModelVersionStatus", "Prediction", "PredictionId", "PredictionStatus", "ReprocessJob",
    "ReprocessJobStatus", "ReprocessScope", "WorkerHeartbeat", "explanation_upload_to", "prediction_upload_to",
]  # fmt: skip


class PredictionStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


FINAL_STATUSES = (PredictionStatus.SUCCEEDED, PredictionStatus.FAILED)


# A prediction's id as views, tasks and messages carry it: the UUID, or its text (from a
# URL or a Celery message).
PredictionId = uuid.UUID | str


def prediction_upload_to(instance: Prediction, filename: str) -> str:
    # Never the client's name as a path: a generated name keeps traversal and
    # collisions out; the original name is kept in original_filename.
    extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else "img"
    return f"uploads/{instance.created_at:%Y/%m/%d}/{instance.id.hex}.{extension[:5]}"


class Prediction(models.Model):
    """One submitted image and, once the worker is done, its classification."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="predictions")
    status = models.CharField(max_length=10, choices=PredictionStatus.choices, default=PredictionStatus.PENDING)
    image = models.ImageField(upload_to=prediction_upload_to, max_length=200)
    original_filename = models.CharField(max_length=255)
    image_format = models.CharField(max_length=10)
    size_bytes = models.PositiveBigIntegerField()
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    decode_bytes = models.PositiveBigIntegerField(
        default=0,
        help_text="What decoding it costs the worker, in bytes of raw pixel data, reduced if it is decoded reduced "
        "(ml.decoding); 0: not recorded",
    )
    sha256 = models.CharField(max_length=64, db_index=True)
    top_k = models.PositiveSmallIntegerField(default=5)

    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="predictions"
    )
    reprocess_job = models.ForeignKey(
        "ReprocessJob",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="predictions",
        help_text="The last reprocess job that sent it to the workers again",
    )
    assigned_version = models.ForeignKey(
        ModelVersion,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The version chosen at submission to classify it (the active one, or an A/B candidate); "
        "empty: the active version when the worker runs it",
    )
    label = models.CharField(max_length=200, blank=True)
    class_id = models.CharField(max_length=20, blank=True)
    confidence = models.FloatField(null=True, blank=True)
    top_predictions = models.JSONField(default=list, blank=True)
    # How sure the model was (ml.uncertainty.Uncertainty); null before it was recorded.
    entropy = models.FloatField(
        null=True, blank=True, help_text="Normalised entropy of the probabilities, 0 (certain) .. 1 (uniform)"
    )
    margin = models.FloatField(
        null=True,
        blank=True,
        help_text="Top-1 minus top-2 probability (multi-label: the closest score's distance from its threshold)",
    )
    uncertain = models.BooleanField(
        null=True, blank=True, help_text='"Not sure": past the model\'s calibrated thresholds (null: not recorded)'
    )
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    claim = models.UUIDField(
        null=True, blank=True, editable=False, help_text="Token of the worker batch that claimed this prediction last"
    )
    cached = models.BooleanField(
        default=False, help_text="The result was reused from an earlier prediction of the same bytes and model"
    )
    thumbnail = models.ImageField(upload_to="thumbnails/", max_length=200, blank=True)
    retried_at = models.DateTimeField(
        null=True, blank=True, help_text="Last time a failed prediction was sent again; timings count from here"
    )

    queue_ms = models.FloatField(null=True, blank=True)
    preprocess_ms = models.FloatField(null=True, blank=True)
    inference_ms = models.FloatField(null=True, blank=True)
    total_ms = models.FloatField(null=True, blank=True)

    created_at = models.DateTimeField()
    enqueued_at = models.DateTimeField(null=True, blank=True, help_text="Last time the task was handed to the broker")
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["user", "-created_at"], name="prediction_user_created"),
            models.Index(fields=["status", "created_at"], name="prediction_status_created"),
            models.Index(fields=["created_at"], name="prediction_created"),
            models.Index(fields=["label"], name="prediction_label"),
            models.Index(fields=["model_version", "created_at"], name="prediction_model_created"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(status=PredictionStatus.SUCCEEDED)
                | (models.Q(confidence__isnull=False) & models.Q(completed_at__isnull=False)),
                name="prediction_succeeded_has_result",
            ),
            models.CheckConstraint(
                condition=models.Q(top_k__gte=1) & models.Q(top_k__lte=20),
                name="prediction_top_k_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.original_filename} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def passing_labels(self) -> list[dict[str, Any]] | None:
        """From a multi-label model, the stored entries whose class the image has (score at
        or above the class's threshold: ``positive``), highest score first; ``None`` for a
        single-label model's result (its entries carry no ``positive``)."""
        entries = [entry for entry in self.top_predictions if isinstance(entry, dict)]
        if not any("positive" in entry for entry in entries):
            return None
        return [entry for entry in entries if entry.get("positive")]

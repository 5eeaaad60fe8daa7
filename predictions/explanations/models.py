"""Explanations: Grad-CAM overlays of succeeded predictions."""

from __future__ import annotations

import uuid

from django.db import models

from ..registry.models import ModelVersion


class ExplanationStatus(models.TextChoices):
    PENDING = "pending", "Pending"  # asked for; the inference worker computes it
    SUCCEEDED = "succeeded", "Succeeded"  # ``image`` holds the overlay
    FAILED = "failed", "Failed"  # ``error`` says why, in words for the owner


def explanation_upload_to(instance: Explanation, filename: str) -> str:
    # The class id is the model's text (a WordNet id, a folder name): kept out of the path.
    return f"explanations/{instance.prediction_id.hex}/{uuid.uuid4().hex}.png"


class Explanation(models.Model):
    """Grad-CAM of one succeeded prediction for one of its top-k classes: a heat map of
    where the model looked, blended over the image (a PNG in media), computed on demand
    by the inference worker (``predictions.explanations``) and kept."""

    prediction = models.ForeignKey("predictions.Prediction", on_delete=models.CASCADE, related_name="explanations")
    class_id = models.CharField(max_length=20, help_text="One of the prediction's top-k classes")
    model_version = models.ForeignKey(
        ModelVersion,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The version that made the prediction when it was explained; a prediction re-run by "
        "another version is explained again",
    )
    status = models.CharField(max_length=10, choices=ExplanationStatus.choices, default=ExplanationStatus.PENDING)
    error = models.TextField(blank=True)
    image = models.ImageField(upload_to=explanation_upload_to, max_length=200, blank=True)
    layer = models.CharField(max_length=100, blank=True, help_text="The feature-map layer explained")
    compute_ms = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField()
    enqueued_at = models.DateTimeField(help_text="Last time the task was handed to the broker")
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["prediction", "class_id"], name="explanation_unique_class"),
            models.CheckConstraint(
                condition=~models.Q(status=ExplanationStatus.SUCCEEDED) | ~models.Q(image=""),
                name="explanation_succeeded_has_image",
            ),
        ]

    def __str__(self) -> str:
        return f"Grad-CAM of {self.class_id} for {self.prediction_id} ({self.status})"

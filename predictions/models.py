"""Data and its invariants: no I/O, no model running here."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.core.validators import MaxValueValidator
from django.db import models


class ModelVersionStatus(models.TextChoices):
    """Where a registered version stands. ``is_active`` mirrors ``ACTIVE`` (a constraint
    keeps the two equal) because many reads filter on it."""

    AVAILABLE = "available", "Available"  # registered and loadable; may be activated
    CANDIDATE = "candidate", "Candidate"  # registered for evaluation (register_model --candidate)
    ACTIVE = "active", "Active"  # the one new predictions use
    RETIRED = "retired", "Retired"  # kept for the predictions it made; not offered for activation


class ModelVersion(models.Model):
    """One exported model on disk (``MODEL_DIR/<name>/<version>``); at most one is active."""

    name = models.CharField(max_length=100)
    version = models.CharField(max_length=50)
    path = models.CharField(max_length=500, help_text="Directory of the exported model")
    status = models.CharField(
        max_length=10, choices=ModelVersionStatus.choices, default=ModelVersionStatus.AVAILABLE, db_index=True
    )
    is_active = models.BooleanField(default=False)
    metadata = models.JSONField(default=dict, blank=True)
    classes = models.JSONField(
        default=list, blank=True, help_text="The output classes in index order: class_id and label (labels.json)"
    )
    metrics = models.JSONField(default=dict, blank=True, help_text="The model card's figures (metadata.json)")
    parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="children",
        help_text="The version it was fine-tuned from (metadata.json parent / base_model)",
    )
    exported_at = models.DateTimeField(null=True, blank=True, help_text="When it was built (metadata.json created)")
    traffic_percent = models.PositiveSmallIntegerField(
        default=0,
        validators=[MaxValueValidator(100)],
        help_text="A/B test: the share of users (0-100) whose new predictions a candidate classifies instead of "
        "the active version; each user stays on the same side. Candidates only, one at a time.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "version"]
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="model_version_unique"),
            models.CheckConstraint(
                condition=models.Q(traffic_percent=0)
                | models.Q(status=ModelVersionStatus.CANDIDATE, traffic_percent__lte=100),
                name="model_version_traffic_candidate_only",
                violation_error_message="Only a candidate version gets a share of traffic (0-100 %).",
            ),
            # One A/B test at a time: every row with traffic is a candidate, so "unique
            # status among rows with traffic" means at most one such row.
            models.UniqueConstraint(
                fields=["status"],
                condition=models.Q(traffic_percent__gt=0),
                name="model_version_one_with_traffic",
                violation_error_message="Another candidate already gets a share of traffic; set it to 0 first.",
            ),
            models.UniqueConstraint(
                fields=["is_active"],
                condition=models.Q(is_active=True),
                name="model_version_one_active",
            ),
            models.CheckConstraint(
                condition=models.Q(is_active=True, status=ModelVersionStatus.ACTIVE)
                | (models.Q(is_active=False) & ~models.Q(status=ModelVersionStatus.ACTIVE)),
                name="model_version_active_status",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}{' (active)' if self.is_active else ''}"

    @property
    def key(self) -> str:
        return f"{self.name}:{self.version}"


class ModelActivationKind(models.TextChoices):
    ACTIVATE = "activate", "Activate"
    ROLLBACK = "rollback", "Roll back"
    DEFAULT = "default", "Default on first sync"


class ModelActivation(models.Model):
    """One switch of the active model version: who, when, from which to which."""

    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="activations")
    previous = models.ForeignKey(
        ModelVersion,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The version active before (none on the first activation)",
    )
    kind = models.CharField(max_length=10, choices=ModelActivationKind.choices, default=ModelActivationKind.ACTIVATE)
    activated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Empty when a command or the first sync did it",
    )
    activated_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-activated_at", "-id"]

    def __str__(self) -> str:
        return f"{self.previous or 'none'} -> {self.model_version} ({self.kind}, {self.activated_at:%Y-%m-%d %H:%M})"


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
    # How sure the model was (predictions.inference.Uncertainty); null before it was recorded.
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


class Correction(models.Model):
    """The owner's review of a succeeded prediction: the right label, either a correction
    (the model was wrong) or a confirmation (``confirmed``: the model was right, and
    ``label`` / ``class_id`` are its own).

    A row of its own rather than fields on Prediction: the model's answer stays as it
    was (history, stats and the result cache keep reading it), nothing the worker writes
    can overwrite the user's label, and the next fine-tune's dataset is one query. One
    per prediction (one-to-one), so a prediction has at most one review: a later
    correction or confirmation replaces the earlier, whichever kind each is. Live top-1
    is confirmed / reviewed.
    """

    prediction = models.OneToOneField(Prediction, on_delete=models.CASCADE, related_name="correction")
    confirmed = models.BooleanField(
        default=False, help_text="The owner confirmed the model's own label (else corrected it)"
    )
    label = models.CharField(max_length=200, help_text="The right label, as the model's class label or new text")
    class_id = models.CharField(
        max_length=20, blank=True, help_text="The model class the label matches; empty for a new class"
    )
    predicted_label = models.CharField(
        max_length=200, blank=True, help_text="What the model said when it was corrected"
    )
    model_version = models.ForeignKey(
        ModelVersion,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="corrections",
        help_text="The version that made the corrected prediction",
    )
    corrected_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["-updated_at"]
        indexes = [models.Index(fields=["model_version", "label"], name="correction_model_label")]
        constraints = [
            models.CheckConstraint(condition=~models.Q(label=""), name="correction_label_not_empty"),
            # A confirmation says the model's answer was right: its label is that answer.
            models.CheckConstraint(
                condition=models.Q(confirmed=False) | models.Q(label=models.F("predicted_label")),
                name="correction_confirmed_is_predicted_label",
            ),
        ]
        verbose_name = "review"

    def __str__(self) -> str:
        if self.confirmed:
            return f"{self.label} (confirmed)"
        return f"{self.predicted_label or '?'} -> {self.label}"


class ReprocessScope(models.TextChoices):
    ALL = "all", "Every prediction"
    OLDER_VERSIONS = "older_versions", "Only predictions made by older versions"


class ReprocessJobStatus(models.TextChoices):
    RUNNING = "running", "Running"  # chunks are being sent
    PAUSED = "paused", "Paused"  # no more chunks until resumed; those sent finish
    CANCELLED = "cancelled", "Cancelled"  # no more chunks, ever; those sent finish
    DONE = "done", "Done"  # everything sent, and every sent prediction is final


class ReprocessJob(models.Model):
    """Staff re-running finished predictions with the active model, in the background.

    The maintenance task sends the matching predictions (made before the job) to the
    workers in chunks, each a prediction marked with this job, reset to ``pending`` with
    ``assigned_version`` = ``model_version``; the live counts are read from those rows.
    """

    scope = models.CharField(max_length=20, choices=ReprocessScope.choices, default=ReprocessScope.OLDER_VERSIONS)
    status = models.CharField(max_length=10, choices=ReprocessJobStatus.choices, default=ReprocessJobStatus.RUNNING)
    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, related_name="+", help_text="The active version when it was started"
    )
    total = models.PositiveIntegerField(default=0, help_text="Predictions that matched when it was started")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Reprocess job {self.pk or '(new)'}: {self.get_scope_display().lower()} ({self.status})"


class WorkerHeartbeat(models.Model):
    """Last sign of life of one Celery worker process, written by the worker itself.

    Readiness ("a worker consuming the inference queue with its model loaded") and the
    worker metrics read this table, so they work with every broker, including the
    filesystem one.
    """

    hostname = models.CharField(max_length=255, unique=True)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    last_seen_at = models.DateTimeField(db_index=True)
    queues = models.JSONField(default=list, blank=True, help_text="Names of the queues this worker consumes")
    model_loaded = models.BooleanField(default=False, help_text="The active model is loaded and warmed up")
    model_version = models.CharField(max_length=160, blank=True)
    model_load_seconds = models.FloatField(null=True, blank=True)
    model_error = models.CharField(max_length=300, blank=True, help_text="Why the model is not loaded (yet)")

    class Meta:
        ordering = ["hostname"]

    def __str__(self) -> str:
        return f"{self.hostname} (seen {self.last_seen_at:%Y-%m-%d %H:%M:%S})"


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

    prediction = models.ForeignKey(Prediction, on_delete=models.CASCADE, related_name="explanations")
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

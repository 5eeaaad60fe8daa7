"""Model versions and the record of switches between them: data and invariants only."""

from __future__ import annotations

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
    LEARNING = "learning", "Promoted by the learning loop"


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

"""The continuous learning loop's records: one row per cycle (train, measure, A/B test,
decide) with every step's reason, and the operators' pause switch. Data only."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from ..registry.models import ModelVersion


class LearningCycleState(models.TextChoices):
    QUEUED = "queued", "Waiting for the training worker"
    TRAINING = "training", "Training"
    REJECTED = "rejected", "Rejected (worse on the held-back reviews)"
    FAILED = "failed", "Failed"
    TESTING = "testing", "A/B testing"
    PROMOTED = "promoted", "Promoted"
    RETIRED = "retired", "Retired"
    ENDED = "ended", "Ended by an operator"


OPEN_STATES = (LearningCycleState.QUEUED, LearningCycleState.TRAINING, LearningCycleState.TESTING)


class LearningCycle(models.Model):
    """One turn of the loop: from the active version (``base``) and the reviews so far, a
    fine-tuned ``candidate``, its offline comparison on held-back reviews, its A/B test and
    the decision. ``events`` lists every step as ``{"at", "message"}``, oldest first."""

    base = models.ForeignKey(
        ModelVersion,
        on_delete=models.PROTECT,
        related_name="learning_cycles",
        help_text="The active version it learns from",
    )
    candidate = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="learning_origin"
    )
    state = models.CharField(max_length=10, choices=LearningCycleState.choices, default=LearningCycleState.QUEUED)
    is_open = models.BooleanField(default=True, help_text="Queued, training or testing: one cycle at a time")
    reason = models.TextField(blank=True, help_text="Why it is in its state, in words")
    events = models.JSONField(default=list, blank=True)
    new_reviews = models.PositiveIntegerField(default=0, help_text="Usable reviews new since the previous cycle")
    classes = models.JSONField(default=list, blank=True, help_text="The class ids it trains on")
    training_reviews = models.JSONField(
        default=list, blank=True, help_text="Ids of the reviews whose images it was trained on"
    )
    holdout_reviews = models.JSONField(
        default=list, blank=True, help_text="Ids of the held-back reviews both versions were measured on"
    )
    prior_files = models.PositiveIntegerField(
        default=0, help_text="Images from the base version's own fine-tuning folder, when it was fine-tuned here"
    )
    dataset_dir = models.CharField(max_length=500, blank=True)
    offline = models.JSONField(default=dict, blank=True, help_text="Top-1 of both versions on the held-back slice")
    live = models.JSONField(
        default=dict, blank=True, help_text="The A/B test's reviews per arm and P(candidate better)"
    )
    created_at = models.DateTimeField()
    trained_at = models.DateTimeField(null=True, blank=True)
    testing_since = models.DateTimeField(null=True, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_open"], condition=models.Q(is_open=True), name="learning_cycle_one_open"
            ),
        ]

    def __str__(self) -> str:
        return f"Learning cycle {self.pk} from {self.base} ({self.state})"


class LearningControl(models.Model):
    """The operators' pause switch (one row): paused, the loop starts nothing and decides
    nothing until resumed; a test in progress keeps its share of users."""

    paused = models.BooleanField(default=False)
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    changed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "learning switch"

    def __str__(self) -> str:
        return "Learning paused" if self.paused else "Learning running"

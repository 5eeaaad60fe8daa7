"""Reprocess jobs: finished predictions run again with the active model."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from ..registry.models import ModelVersion


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
        # The status is a column of its own, read live; a name that kept it would go stale.
        return f"Reprocess job {self.pk or '(new)'}: {self.get_scope_display().lower()}"

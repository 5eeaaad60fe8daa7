"""The learning loop in the admin: every cycle with its state, reason and steps (read
only: the loop writes them), and the pause switch."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html_join

from predictions.admin_tables import request_user
from predictions.learning import services as learning_services
from predictions.learning.models import LearningControl, LearningCycle


@admin.register(LearningCycle)
class LearningCycleAdmin(admin.ModelAdmin[LearningCycle]):
    list_display = ["pk", "base", "candidate", "state", "reason", "created_at", "decided_at"]
    list_filter = ["state"]
    readonly_fields = [
        "base", "candidate", "state", "is_open", "reason", "steps", "new_reviews", "classes", "prior_files",
        "dataset_dir", "offline", "live", "created_at", "trained_at", "testing_since", "decided_at",
        "training_reviews", "holdout_reviews",
    ]  # fmt: skip
    exclude = ["events"]

    @admin.display(description="Steps")
    def steps(self, cycle: LearningCycle) -> str:
        return format_html_join("", "<p>{}: {}</p>", ((e.get("at", ""), e.get("message", "")) for e in cycle.events))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(LearningControl)
class LearningControlAdmin(admin.ModelAdmin[LearningControl]):
    """Pause or resume the loop (``learning_pause_set``)."""

    list_display = ["__str__", "changed_by", "changed_at"]
    fields = ["paused", "changed_by", "changed_at"]
    readonly_fields = ["changed_by", "changed_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return not LearningControl.objects.exists()

    def save_model(self, request: HttpRequest, obj: LearningControl, form: Any, change: bool) -> None:
        saved = learning_services.learning_pause_set(paused=obj.paused, user=request_user(request))
        obj.pk, obj.changed_by, obj.changed_at = saved.pk, saved.changed_by, saved.changed_at

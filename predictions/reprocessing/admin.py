"""Admin of reprocess jobs: start, pause, resume, cancel."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse

from predictions import access
from predictions.admin_tables import request_user
from predictions.exceptions import ApplicationError
from predictions.models import ReprocessJob
from predictions.reprocessing import selectors as reprocess_selectors
from predictions.reprocessing import services as reprocess_services


@admin.register(ReprocessJob)
class ReprocessJobAdmin(admin.ModelAdmin[ReprocessJob]):
    """Re-running finished predictions with the active model: "Add" starts a job (the
    scope is the one choice), the list shows each job's live counts, the actions pause,
    resume and cancel. Needs ``predictions.add_reprocessjob`` (``predictions.access``)."""

    list_display = ["__str__", "status", "total", "waiting", "running", "done", "failed", "created_by", "created_at"]
    list_filter = ["status", "scope"]
    fieldsets = [(None, {"fields": ["scope"], "description": reprocess_services.REPROCESS_WARNING})]
    readonly_fields = ["status", "model_version", "total", "waiting", "running", "done", "failed", "created_by",
                       "created_at", "finished_at"]  # fmt: skip
    actions = ["pause", "resume", "cancel"]

    def get_fieldsets(self, request: HttpRequest, obj: ReprocessJob | None = None) -> Any:
        if obj is None:
            return self.fieldsets
        return [
            (None, {"fields": ["scope", *self.readonly_fields], "description": reprocess_services.REPROCESS_WARNING})
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: ReprocessJob | None = None) -> Any:
        return ["scope", *self.readonly_fields] if obj is not None else []

    def _counts(self, job: ReprocessJob) -> reprocess_selectors.ReprocessCounts:
        # Read once per row and request: the four columns share it.
        cache: dict[int, reprocess_selectors.ReprocessCounts] = self.__dict__.setdefault("_counts_cache", {})
        if job.pk not in cache:
            cache[job.pk] = reprocess_selectors.reprocess_job_counts(job=job)
        return cache[job.pk]

    @admin.display(description="Waiting")
    def waiting(self, job: ReprocessJob) -> int:
        return self._counts(job).waiting

    @admin.display(description="Running")
    def running(self, job: ReprocessJob) -> int:
        return self._counts(job).running

    @admin.display(description="Done")
    def done(self, job: ReprocessJob) -> int:
        return self._counts(job).done

    @admin.display(description="Failed")
    def failed(self, job: ReprocessJob) -> int:
        return self._counts(job).failed

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        self.__dict__.pop("_counts_cache", None)  # live counts on every view
        return super().changelist_view(request, extra_context)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None) -> Any:
        self.__dict__.pop("_counts_cache", None)
        return super().change_view(request, object_id, form_url, extra_context)

    def has_view_permission(self, request: HttpRequest, obj: ReprocessJob | None = None) -> bool:
        return access.can_reprocess_predictions(request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return access.can_reprocess_predictions(request.user)

    def has_change_permission(self, request: HttpRequest, obj: ReprocessJob | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ReprocessJob | None = None) -> bool:
        return False

    def has_reprocess_permission(self, request: HttpRequest) -> bool:
        return access.can_reprocess_predictions(request.user)

    def save_model(self, request: HttpRequest, obj: ReprocessJob, form: Any, change: bool) -> None:
        try:
            job = reprocess_services.reprocess_job_start(user=request_user(request), scope=obj.scope)
        except ApplicationError as error:
            self.message_user(request, error.message, messages.ERROR)
            obj.pk = None
            return
        obj.__dict__.update({k: v for k, v in job.__dict__.items() if k != "_state"})  # the admin logs what started
        self.message_user(request, f"{job.total} prediction(s) will run again. {reprocess_services.REPROCESS_WARNING}")

    def response_add(self, request: HttpRequest, obj: ReprocessJob, post_url_continue: str | None = None) -> Any:
        return HttpResponseRedirect(reverse("admin:predictions_reprocessjob_changelist"))

    def _move(self, request: HttpRequest, queryset: QuerySet[ReprocessJob], move: Any, done: str) -> None:
        for job in queryset:
            try:
                move(job=job)
            except ApplicationError as error:
                self.message_user(request, error.message, messages.ERROR)
            else:
                self.message_user(request, f"Job {job.pk} {done}.")

    @admin.action(description="Pause the selected jobs", permissions=["reprocess"])
    def pause(self, request: HttpRequest, queryset: QuerySet[ReprocessJob]) -> None:
        self._move(request, queryset, reprocess_services.reprocess_job_pause, "paused")

    @admin.action(description="Resume the selected jobs", permissions=["reprocess"])
    def resume(self, request: HttpRequest, queryset: QuerySet[ReprocessJob]) -> None:
        self._move(request, queryset, reprocess_services.reprocess_job_resume, "resumed")

    @admin.action(description="Cancel the selected jobs", permissions=["reprocess"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[ReprocessJob]) -> None:
        self._move(request, queryset, reprocess_services.reprocess_job_cancel, "cancelled")

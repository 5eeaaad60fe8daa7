"""Admin: predictions are a read-only log; model versions are managed through services.

What an admin account sees follows its Django permissions (``predictions.access``):
``view_prediction`` to read the log, ``delete_prediction`` to delete, and
``change_modelversion`` to activate a model or roll back, ``change_prediction`` to retry
failed predictions (the log itself stays read-only). ``is_staff`` alone shows nothing.
"""

from __future__ import annotations

import tempfile
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import FileResponse, HttpRequest, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator

from predictions import access, services
from predictions.registry import services as registry_services
from predictions.reprocessing import selectors as reprocess_selectors
from predictions.reprocessing import services as reprocess_services
from predictions.reviews import export as review_export

from .exceptions import ApplicationError
from .models import Correction, ModelActivation, ModelVersion, Prediction, PredictionStatus, ReprocessJob
from .templatetags.imagerec_ui import label_text

# The log and the model pages need the width more than a second navigation column does.
admin.site.enable_nav_sidebar = False

if TYPE_CHECKING:
    # ModelAdmin is generic in django-stubs only: subscripting it at run time would fail
    # (without django_stubs_ext.monkeypatch), so the parameters exist for mypy alone.
    PredictionModelAdmin = admin.ModelAdmin[Prediction]
    ModelVersionModelAdmin = admin.ModelAdmin[ModelVersion]
    ModelActivationModelAdmin = admin.ModelAdmin[ModelActivation]
    CorrectionModelAdmin = admin.ModelAdmin[Correction]
    ModelVersionModelForm = forms.ModelForm[ModelVersion]
    ReprocessJobModelAdmin = admin.ModelAdmin[ReprocessJob]
else:
    PredictionModelAdmin = ModelVersionModelAdmin = ModelActivationModelAdmin = admin.ModelAdmin
    CorrectionModelAdmin = admin.ModelAdmin
    ModelVersionModelForm = forms.ModelForm
    ReprocessJobModelAdmin = admin.ModelAdmin


@admin.register(Prediction)
class PredictionAdmin(PredictionModelAdmin):
    # Few, narrow columns so the log fits a laptop screen (Django's admin lets a wide
    # table scroll inside its box on a phone); the rest is on each prediction's page.
    # "image_thumb", not "thumbnail": a model field of that name (the stored file) would
    # win over the method and show its storage path.
    list_display = ["image_thumb", "original_filename", "user", "result", "model_version", "total", "created"]
    list_display_links = ["image_thumb", "original_filename"]
    list_filter = ["status", "model_version", "created_at", "label"]
    date_hierarchy = "created_at"
    search_fields = ["user__username", "label", "class_id", "original_filename", "sha256"]
    list_select_related = ["user", "model_version"]
    # The stored file fields are left out: their "Currently: <path>" links point at
    # MEDIA_URL, which is never served (uploads are private); the image comes through
    # the permission-checked admin image view instead.
    fieldsets = [
        (None, {"fields": ["image_preview", "original_filename", "user", "status", "error"]}),
        ("Result", {"fields": ["label", "class_id", "confidence_pct", "top_k_table", "model_version",
                               "assigned_version", "cached", "top_k"]}),
        ("Timings (ms)", {"fields": ["queue_ms", "preprocess_ms", "inference_ms", "total_ms"]}),
        ("Times", {"fields": ["created_at", "enqueued_at", "started_at", "completed_at", "retried_at"]}),
        ("File", {"fields": ["image_format", "width", "height", "size_bytes", "sha256", "attempts", "reprocess_job"]}),
    ]  # fmt: skip
    readonly_fields = ["image_preview", "confidence_pct", "top_k_table"]
    list_per_page = 50
    actions = ["retry"]

    @admin.display(description="Image")
    def image_thumb(self, prediction: Prediction) -> str:
        url = reverse("admin-prediction-image", args=[prediction.id])
        name = (
            f"{label_text(prediction.label)}: {prediction.original_filename}"
            if prediction.label
            else prediction.original_filename
        )
        return format_html(
            '<img src="{}?size=thumb" style="height:48px;width:64px;object-fit:cover" alt="{}">', url, name
        )

    @admin.display(description="Image")
    def image_preview(self, prediction: Prediction) -> str:
        url = reverse("admin-prediction-image", args=[prediction.id])
        return format_html(
            '<a href="{}" target="_blank" rel="noopener">'
            '<img src="{}" style="max-height:320px;max-width:100%" alt="{}"></a>'
            '<br><a href="{}" target="_blank" rel="noopener">Open full size</a>',
            url, url, prediction.original_filename, url,
        )  # fmt: skip

    @admin.display(description="Result", ordering="label")
    def result(self, prediction: Prediction) -> str:
        if prediction.status == PredictionStatus.SUCCEEDED:
            shown = label_text(prediction.label)  # as the site shows it: first letter capitalised
            return f"{shown[:1].upper()}{shown[1:]} · {self.confidence_pct(prediction)}"
        if prediction.status == PredictionStatus.FAILED:
            return f"Failed: {Truncator(prediction.error).chars(60)}"
        return prediction.get_status_display()

    @admin.display(description="Total ms", ordering="total_ms")
    def total(self, prediction: Prediction) -> str:
        return "" if prediction.total_ms is None else f"{prediction.total_ms:.0f}"

    @admin.display(description="Uploaded", ordering="created_at")
    def created(self, prediction: Prediction) -> str:
        return f"{timezone.localtime(prediction.created_at):%Y-%m-%d %H:%M}"

    @admin.display(description="Confidence", ordering="confidence")
    def confidence_pct(self, prediction: Prediction) -> str:
        return "" if prediction.confidence is None else f"{prediction.confidence:.1%}"

    @admin.display(description="Top-k")
    def top_k_table(self, prediction: Prediction) -> str:
        if not prediction.top_predictions:
            return "-"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((label_text(str(item.get("label", ""))), item.get("class_id", ""), f"{float(item.get('score', 0)):.1%}")
             for item in prediction.top_predictions),
        )  # fmt: skip
        return format_html("<table><thead><tr><th>Label</th><th>Class</th><th>Score</th></tr></thead>"
                           "<tbody>{}</tbody></table>", rows)  # fmt: skip

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Prediction | None = None) -> bool:
        return False

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return access.can_retry_any_prediction(request.user)

    @admin.action(description="Retry the selected failed predictions", permissions=["retry"])
    def retry(self, request: HttpRequest, queryset: QuerySet[Prediction]) -> None:
        failed = list(queryset.filter(status=PredictionStatus.FAILED))
        retried = 0
        for prediction in failed:
            try:
                services.prediction_retry(prediction=prediction)
            except ApplicationError:
                continue  # it changed meanwhile (retried by its owner): nothing to do
            retried += 1
        skipped = queryset.count() - retried
        self.message_user(
            request,
            f"{retried} prediction(s) sent again"
            + (f"; {skipped} skipped (only failed ones are retried)." if skipped else "."),
        )

    def delete_model(self, request: HttpRequest, obj: Prediction) -> None:
        services.prediction_delete(prediction=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Prediction]) -> None:
        for prediction in queryset:
            services.prediction_delete(prediction=prediction)


class ModelVersionForm(ModelVersionModelForm):
    """The change form: a candidate's share of traffic, checked as the API checks it (the
    model's constraints name ``status``, read-only here, so Django's form skips them)."""

    class Meta:
        model = ModelVersion
        fields = ["traffic_percent"]

    def clean_traffic_percent(self) -> int:
        traffic_percent: int = self.cleaned_data["traffic_percent"]
        try:
            registry_services.model_version_traffic_check(model_version=self.instance, traffic_percent=traffic_percent)
        except ApplicationError as error:
            raise ValidationError(error.message) from error
        return traffic_percent


@admin.register(ModelVersion)
class ModelVersionAdmin(ModelVersionModelAdmin):
    form = ModelVersionForm
    list_display = [
        "name", "version", "status", "traffic", "parent", "exported_at", "created_at", "prediction_count",
    ]  # fmt: skip
    list_filter = ["status", "name"]
    readonly_fields = [
        "name", "version", "path", "status", "is_active", "parent", "metrics_table", "class_count", "exported_at",
        "metadata_table", "created_at",
    ]  # fmt: skip
    exclude = ["classes", "metrics", "metadata"]
    actions = ["activate", "rollback", "retire", "sync_from_disk"]

    @admin.display(description="Predictions")
    def prediction_count(self, model_version: ModelVersion) -> int:
        return model_version.predictions.count()

    @admin.display(description="Classes")
    def class_count(self, model_version: ModelVersion) -> int:
        return len(model_version.classes)

    @admin.display(description="Metrics")
    def metrics_table(self, model_version: ModelVersion) -> str:
        return _key_value_table(model_version.metrics)

    @admin.display(description="Metadata")
    def metadata_table(self, model_version: ModelVersion) -> str:
        return _key_value_table(model_version.metadata)

    @admin.display(description="A/B traffic", ordering="traffic_percent")
    def traffic(self, model_version: ModelVersion) -> str:
        return f"{model_version.traffic_percent} %" if model_version.traffic_percent else ""

    def save_model(self, request: HttpRequest, obj: ModelVersion, form: Any, change: bool) -> None:
        # traffic_percent is the one editable field; ModelVersionForm checked it with the service's rules.
        registry_services.model_version_set_traffic(
            model_version=obj, traffic_percent=obj.traffic_percent, user=_user(request)
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: ModelVersion | None = None) -> bool:
        return access.can_change_model_versions(request.user)

    @admin.action(description="Activate the selected model version", permissions=["change"])
    def activate(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one model version.", messages.ERROR)
            return
        try:
            version = registry_services.model_version_activate(model_version=queryset.get(), user=_user(request))
        except ApplicationError as error:
            self.message_user(request, error.message, messages.ERROR)
            return
        self.message_user(request, f"{version} is now used for new predictions.")

    @admin.action(description="Roll back to the previous version (select any row)", permissions=["change"])
    def rollback(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        try:
            version = registry_services.model_version_rollback(user=_user(request))
        except ApplicationError as error:
            self.message_user(request, error.message, messages.ERROR)
            return
        self.message_user(request, f"Rolled back: {version} is now used for new predictions.")

    @admin.action(description="Retire the selected model versions", permissions=["change"])
    def retire(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        for model_version in queryset:
            try:
                registry_services.model_version_retire(model_version=model_version)
            except ApplicationError as error:
                self.message_user(request, error.message, messages.ERROR)
            else:
                self.message_user(request, f"{model_version} is retired.")

    @admin.action(description="Register model versions found on disk", permissions=["change"])
    def sync_from_disk(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        found = registry_services.model_version_sync()
        self.message_user(request, f"{len(found)} model version(s) on disk registered.")


@admin.register(ModelActivation)
class ModelActivationAdmin(ModelActivationModelAdmin):
    """The history of switches: read-only, written by the services only."""

    list_display = ["activated_at", "model_version", "previous", "kind", "activated_by"]
    list_filter = ["kind", "model_version"]
    list_select_related = ["model_version", "previous", "activated_by"]
    date_hierarchy = "activated_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: ModelActivation | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ModelActivation | None = None) -> bool:
        return False


@admin.register(Correction)
class CorrectionAdmin(CorrectionModelAdmin):
    """Users' reviews (corrections and confirmations), read-only; whoever reads every
    prediction (``access.can_view_all_predictions``) sees them and exports them as a
    dataset (filter on "confirmed" to export corrections only)."""

    list_display = [
        "thumbnail", "predicted_label", "label", "confirmed", "class_id", "model_version", "corrected_by", "updated_at",
    ]  # fmt: skip
    list_filter = ["confirmed", "model_version", "updated_at"]
    search_fields = ["label", "predicted_label", "class_id", "corrected_by__username"]
    list_select_related = ["prediction", "model_version", "corrected_by"]
    date_hierarchy = "updated_at"
    actions = ["export_dataset"]

    @admin.display(description="Image")
    def thumbnail(self, correction: Correction) -> str:
        url = reverse("admin-prediction-image", args=[correction.prediction_id])
        return format_html('<img src="{}?size=thumb" style="height:48px" alt="{}">', url, correction.label)

    def has_view_permission(self, request: HttpRequest, obj: Correction | None = None) -> bool:
        return access.can_view_all_predictions(request.user)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return access.can_view_all_predictions(request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Correction | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Correction | None = None) -> bool:
        return False

    def has_export_permission(self, request: HttpRequest) -> bool:
        return access.can_view_all_predictions(request.user)

    @admin.action(description="Export the selected as a dataset (zip: a folder per label, manifest.csv)",
                  permissions=["export"])  # fmt: skip
    def export_dataset(self, request: HttpRequest, queryset: QuerySet[Correction]) -> FileResponse:
        # Spooled: a few hundred images stay in memory, a large export goes to a temp file.
        # FileResponse closes it once sent, so no context manager here.
        archive = tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024)  # noqa: SIM115
        corrections = queryset.select_related("prediction", "model_version").order_by("label", "created_at")
        review_export.correction_export_zip(corrections=corrections, target=archive)
        archive.seek(0)
        name = f"corrections-{timezone.now():%Y%m%d-%H%M%S}.zip"
        return FileResponse(archive, as_attachment=True, filename=name, content_type="application/zip")


@admin.register(ReprocessJob)
class ReprocessJobAdmin(ReprocessJobModelAdmin):
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
            job = reprocess_services.reprocess_job_start(user=_user(request), scope=obj.scope)
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


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested JSON as ("a.b.c", "value") rows; lists of plain values joined by commas."""
    if isinstance(value, dict):
        rows: list[tuple[str, str]] = []
        for key, item in value.items():
            rows += _flatten(item, f"{prefix}.{key}" if prefix else str(key))
        return rows
    if isinstance(value, list) and all(not isinstance(item, dict | list) for item in value):
        text = ", ".join(str(item) for item in value[:50]) + (f", … ({len(value)} in all)" if len(value) > 50 else "")
        return [(prefix, text)]
    if isinstance(value, list):
        return [row for index, item in enumerate(value) for row in _flatten(item, f"{prefix}[{index}]")]
    return [(prefix, "" if value is None else str(value))]


def _key_value_table(value: Any) -> str:
    """JSON (model metrics, metadata) as a readable two-column table instead of raw JSON."""
    rows = _flatten(value or {})
    if not rows:
        return "-"
    body = format_html_join("", '<tr><th scope="row">{}</th><td>{}</td></tr>', rows)
    return format_html("<table>{}</table>", body)


def _user(request: HttpRequest) -> User | None:
    return request.user if isinstance(request.user, User) else None

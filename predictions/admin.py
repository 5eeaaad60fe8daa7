"""Admin: predictions are a read-only log; model versions are managed through services.

What an admin account sees follows its Django permissions (``predictions.access``):
``view_prediction`` to read the log, ``delete_prediction`` to delete, and
``change_modelversion`` to activate a model or roll back, ``change_prediction`` to retry
failed predictions (the log itself stays read-only). ``is_staff`` alone shows nothing.
"""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator

from predictions import access, services

from .exceptions import ApplicationError

# Each room registers its own models' admin pages; importing them here (the module the
# admin autodiscovers) registers them.
from .learning import admin as learning_admin  # noqa: F401
from .models import Prediction, PredictionStatus
from .registry import admin as registry_admin  # noqa: F401
from .reprocessing import admin as reprocessing_admin  # noqa: F401
from .reviews import admin as reviews_admin  # noqa: F401
from .templatetags.imagerec_ui import label_text

# The log and the model pages need the width more than a second navigation column does.
admin.site.enable_nav_sidebar = False


@admin.register(Prediction)
class PredictionAdmin(admin.ModelAdmin[Prediction]):
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
        return format_html('<img src="{}?size=thumb" class="log-thumb" alt="{}">', url, name)

    @admin.display(description="Image")
    def image_preview(self, prediction: Prediction) -> str:
        url = reverse("admin-prediction-image", args=[prediction.id])
        return format_html(
            '<a href="{}" target="_blank" rel="noopener">'
            '<img src="{}" class="log-image" alt="{}"></a>'
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

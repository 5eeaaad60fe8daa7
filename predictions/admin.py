"""Admin: predictions are a read-only log; model versions are managed through services.

What an admin account sees follows its Django permissions (``predictions.access``):
``view_prediction`` to read the log, ``delete_prediction`` to delete, and
``change_modelversion`` to activate a model. ``is_staff`` alone shows nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from . import services
from .exceptions import ApplicationError
from .models import ModelVersion, Prediction

if TYPE_CHECKING:
    # ModelAdmin is generic in django-stubs only: subscripting it at run time would fail
    # (without django_stubs_ext.monkeypatch), so the parameters exist for mypy alone.
    PredictionModelAdmin = admin.ModelAdmin[Prediction]
    ModelVersionModelAdmin = admin.ModelAdmin[ModelVersion]
else:
    PredictionModelAdmin = ModelVersionModelAdmin = admin.ModelAdmin


@admin.register(Prediction)
class PredictionAdmin(PredictionModelAdmin):
    list_display = [
        "thumbnail", "original_filename", "user", "status", "label", "confidence_pct",
        "model_version", "total_ms", "created_at", "completed_at",
    ]  # fmt: skip
    list_filter = ["status", "model_version", "created_at", "label"]
    date_hierarchy = "created_at"
    search_fields = ["user__username", "label", "class_id", "original_filename", "sha256"]
    list_select_related = ["user", "model_version"]
    readonly_fields = ["thumbnail_large"]
    list_per_page = 50

    @admin.display(description="Image")
    def thumbnail(self, prediction: Prediction) -> str:
        url = reverse("admin-prediction-image", args=[prediction.id])
        return format_html('<img src="{}?size=thumb" style="height:48px" alt="">', url)

    @admin.display(description="Image")
    def thumbnail_large(self, prediction: Prediction) -> str:
        url = reverse("admin-prediction-image", args=[prediction.id])
        return format_html('<img src="{}" style="max-height:320px" alt="">', url)

    @admin.display(description="Confidence", ordering="confidence")
    def confidence_pct(self, prediction: Prediction) -> str:
        return "" if prediction.confidence is None else f"{prediction.confidence:.1%}"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Prediction | None = None) -> bool:
        return False

    def delete_model(self, request: HttpRequest, obj: Prediction) -> None:
        services.prediction_delete(prediction=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Prediction]) -> None:
        for prediction in queryset:
            services.prediction_delete(prediction=prediction)


@admin.register(ModelVersion)
class ModelVersionAdmin(ModelVersionModelAdmin):
    list_display = ["name", "version", "is_active", "path", "created_at", "prediction_count"]
    readonly_fields = ["name", "version", "path", "is_active", "metadata", "created_at"]
    actions = ["activate", "sync_from_disk"]

    @admin.display(description="Predictions")
    def prediction_count(self, model_version: ModelVersion) -> int:
        return model_version.predictions.count()

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Activate the selected model version", permissions=["change"])
    def activate(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one model version.", messages.ERROR)
            return
        try:
            version = services.model_version_activate(model_version=queryset.get())
        except ApplicationError as error:
            self.message_user(request, error.message, messages.ERROR)
            return
        self.message_user(request, f"{version} is now used for new predictions.")

    @admin.action(description="Register model versions found on disk", permissions=["change"])
    def sync_from_disk(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        found = services.model_version_sync()
        self.message_user(request, f"{len(found)} model version(s) on disk registered.")

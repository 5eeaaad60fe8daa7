"""Admin of model versions and their activations: managed through the registry's services."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest

from predictions import access
from predictions.admin_tables import key_value_table, request_user
from predictions.exceptions import ApplicationError
from predictions.models import ModelActivation, ModelVersion
from predictions.registry import services as registry_services


class ModelVersionForm(forms.ModelForm[ModelVersion]):
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
class ModelVersionAdmin(admin.ModelAdmin[ModelVersion]):
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
        return key_value_table(model_version.metrics)

    @admin.display(description="Metadata")
    def metadata_table(self, model_version: ModelVersion) -> str:
        return key_value_table(model_version.metadata)

    @admin.display(description="A/B traffic", ordering="traffic_percent")
    def traffic(self, model_version: ModelVersion) -> str:
        return f"{model_version.traffic_percent} %" if model_version.traffic_percent else ""

    def save_model(self, request: HttpRequest, obj: ModelVersion, form: Any, change: bool) -> None:
        # traffic_percent is the one editable field; ModelVersionForm checked it with the service's rules.
        registry_services.model_version_set_traffic(
            model_version=obj, traffic_percent=obj.traffic_percent, user=request_user(request)
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
            version = registry_services.model_version_activate(model_version=queryset.get(), user=request_user(request))
        except ApplicationError as error:
            self.message_user(request, error.message, messages.ERROR)
            return
        self.message_user(request, f"{version} is now used for new predictions.")

    @admin.action(description="Roll back to the previous version (select any row)", permissions=["change"])
    def rollback(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        try:
            version = registry_services.model_version_rollback(user=request_user(request))
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
class ModelActivationAdmin(admin.ModelAdmin[ModelActivation]):
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

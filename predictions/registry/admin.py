"""Admin of model versions and their activations: managed through the registry's services."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from predictions import access
from predictions.admin_tables import key_value_table, request_user
from predictions.exceptions import ApplicationError
from predictions.models import ModelActivation, ModelVersion, ModelVersionStatus
from predictions.operations.stats import figures as figures_selectors
from predictions.registry import selectors as registry_selectors
from predictions.registry import services as registry_services
from predictions.registry.switches import (
    ACTIVE_SHOWN_FIELD,
    CONFIRM_FIELD,
    WINDOW_DAYS,
    active_shown_value,
    active_unchanged,
)
from predictions.registry.switches import switch_confirmed as _confirmed


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

    # --- Switches: activation, rollback and a share of traffic, each confirmed first ---

    def get_urls(self) -> list[URLPattern]:
        activate = path(
            "<path:object_id>/activate/",
            self.admin_site.admin_view(self.activate_view),
            name="predictions_modelversion_activate",
        )
        return [activate, *super().get_urls()]  # before the catch-all "<object_id>/" redirect

    def changeform_view(
        self, request: HttpRequest, object_id: str | None = None, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        """The change form; a new share of traffic is applied only once confirmed."""
        model_version = self.get_object(request, object_id) if object_id else None
        if request.method == "POST" and model_version is not None and not _confirmed(request):
            confirmation = self._traffic_confirmation(request, model_version)
            if confirmation is not None:
                return confirmation
        can_activate = (
            model_version is not None
            and not model_version.is_active
            and model_version.status != ModelVersionStatus.RETIRED
            and self.has_change_permission(request, model_version)
        )
        extra_context = {**(extra_context or {}), "can_activate": can_activate}
        return super().changeform_view(request, object_id, form_url, extra_context)

    def _traffic_confirmation(self, request: HttpRequest, model_version: ModelVersion) -> TemplateResponse | None:
        """The confirmation page of a change of ``model_version``'s share of traffic, or
        ``None`` when the post changes none (or is invalid: the form says why)."""
        if not self.has_change_permission(request, model_version):
            return None
        form = self.get_form(request, model_version)(
            request.POST, instance=ModelVersion.objects.get(pk=model_version.pk)
        )
        if not form.is_valid() or form.cleaned_data["traffic_percent"] == model_version.traffic_percent:
            return None
        share = form.cleaned_data["traffic_percent"]
        active = registry_selectors.model_version_active()
        keeping = f"{active} for everyone else" if active else "no active version for everyone else"
        effect = (
            f"{share} % of users (each always on the same side) will have their new predictions classified by "
            f"{model_version} instead of the active version, at once; {keeping}. Predictions already submitted "
            "keep their version."
            if share
            else f"The A/B test of {model_version} ends: every user's new predictions are classified by "
            f"{active or 'the active version'} at once."
        )
        return self._switch_confirmation(
            request,
            title=f"Give {model_version} {share} % of traffic (now {model_version.traffic_percent} %)?",
            effect=effect,
            columns=[
                ("Active version", active),
                (f"Candidate: {model_version.traffic_percent} % → {share} % of users", model_version),
            ],
            hidden_fields=[
                (name, value)
                for name, values in request.POST.lists()
                for value in values
                if name != "csrfmiddlewaretoken"
            ],
            confirm_label=f"Yes, give it {share} %",
        )

    def _activation_confirmation(
        self,
        request: HttpRequest,
        model_version: ModelVersion,
        *,
        hidden_fields: list[tuple[str, object]],
        cancel_url: str = "",
    ) -> HttpResponse | None:
        """The confirmation page of activating ``model_version``, or ``None`` once the
        post confirmed what the page showed (the version active then is still active)."""
        active = registry_selectors.model_version_active()
        if _confirmed(request) and active_unchanged(request, active):
            return None
        if _confirmed(request):
            self.message_user(
                request, f"The active version changed meanwhile, to {active}: look again.", messages.WARNING
            )
        return self._switch_confirmation(
            request,
            title=f"Activate {model_version}?",
            effect=f"Every user's new predictions will be classified by {model_version} instead of "
            f"{active or 'no version'}, at once and without a restart. Predictions already made keep their result; "
            "rolling back is one more confirmed click.",
            columns=[("Active now", active), ("To be activated", model_version)],
            hidden_fields=[*hidden_fields, (ACTIVE_SHOWN_FIELD, active_shown_value(active))],
            confirm_label=f"Yes, activate {model_version.name} v{model_version.version}",
            cancel_url=cancel_url,
        )

    def _switch_confirmation(
        self,
        request: HttpRequest,
        *,
        title: str,
        effect: str,
        columns: list[tuple[str, ModelVersion | None]],
        hidden_fields: list[tuple[str, object]],
        confirm_label: str,
        cancel_url: str = "",
    ) -> TemplateResponse:
        figures = [
            (
                heading,
                figures_selectors.model_version_figures(model_version=version, days=WINDOW_DAYS) if version else None,
            )
            for heading, version in columns
        ]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "effect": effect,
            "columns": figures,
            "days": WINDOW_DAYS,
            "hidden_fields": hidden_fields,
            "confirm_field": CONFIRM_FIELD,
            "confirm_label": confirm_label,
            "form_action": request.get_full_path(),
            "cancel_url": cancel_url or request.get_full_path(),
        }
        return TemplateResponse(request, "admin/predictions/modelversion/confirm_switch.html", context)

    def activate_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """ "Activate…" on a version's change page: the confirmation page, then the switch."""
        model_version = self.get_object(request, object_id)
        if model_version is None:
            raise Http404("No such model version.")
        if not self.has_change_permission(request, model_version):
            raise PermissionDenied
        change_url = reverse("admin:predictions_modelversion_change", args=[model_version.pk])
        if model_version.is_active:
            self.message_user(request, f"{model_version} is already active.")
            return redirect(change_url)
        confirmation = self._activation_confirmation(request, model_version, hidden_fields=[], cancel_url=change_url)
        if confirmation is not None:
            return confirmation
        self._activate(request, model_version)
        return redirect(change_url)

    def _activate(self, request: HttpRequest, model_version: ModelVersion) -> None:
        try:
            version = registry_services.model_version_activate(model_version=model_version, user=request_user(request))
        except ApplicationError as error:
            self.message_user(request, error.message, messages.ERROR)
            return
        self.message_user(request, f"{version} is now used for new predictions.")

    @admin.action(description="Activate the selected model version…", permissions=["change"])
    def activate(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> HttpResponse | None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one model version.", messages.ERROR)
            return None
        model_version = queryset.get()
        if model_version.is_active:
            self.message_user(request, f"{model_version} is already active.")
            return None
        hidden: list[tuple[str, object]] = [("action", "activate"), (ACTION_CHECKBOX_NAME, model_version.pk)]
        confirmation = self._activation_confirmation(request, model_version, hidden_fields=hidden)
        if confirmation is not None:
            return confirmation
        self._activate(request, model_version)
        return None

    @admin.action(description="Roll back to the previous version… (select any row)", permissions=["change"])
    def rollback(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> HttpResponse | None:
        try:
            active, target = registry_services.model_version_rollback_check()
        except ApplicationError as error:
            self.message_user(request, error.message, messages.ERROR)
            return None
        if not _confirmed(request) or request.POST.get("rollback_to") != str(target.pk):
            if _confirmed(request):
                self.message_user(request, f"The active version changed meanwhile, to {active}: look again.",
                                  messages.WARNING)  # fmt: skip
            return self._switch_confirmation(
                request,
                title=f"Roll back from {active} to {target}?",
                effect=f"Every user's new predictions will be classified by {target}, the version active before "
                f"{active}, at once and without a restart. Predictions already made keep their result.",
                columns=[("Active now", active), ("Rolled back to", target)],
                hidden_fields=[("action", "rollback"), (ACTION_CHECKBOX_NAME, active.pk), ("rollback_to", target.pk)],
                confirm_label=f"Yes, roll back to {target.name} v{target.version}",
            )
        try:
            version = registry_services.model_version_rollback(user=request_user(request))
        except ApplicationError as error:
            self.message_user(request, error.message, messages.ERROR)
            return None
        self.message_user(request, f"Rolled back: {version} is now used for new predictions.")
        return None

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

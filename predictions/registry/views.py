"""The Models page: the registered versions with their measured figures, the A/B test,
and switches (activate, roll back, a candidate's share of traffic), each shown on a
confirmation page first and applied by the registry services. For accounts holding
``predictions.change_modelversion`` (``predictions.access``); the admin keeps the raw data."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from accounts.http import AuthenticatedHttpRequest
from predictions import access
from predictions.exceptions import ApplicationError
from predictions.models import ModelVersion
from predictions.operations.stats.figures import model_version_figures
from predictions.registry import overview
from predictions.registry import selectors as registry_selectors
from predictions.registry import services as registry_services
from predictions.registry.switches import (
    ACTIVE_SHOWN_FIELD,
    CONFIRM_FIELD,
    WINDOW_DAYS,
    active_shown_value,
    active_unchanged,
    switch_confirmed,
)

View = Callable[..., HttpResponse]


def model_switcher_required(view: View) -> View:
    """Signed in (else the login page) and allowed to switch versions (else 403)."""

    @login_required
    @wraps(view)
    def checked(request: AuthenticatedHttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not access.can_change_model_versions(request.user):
            raise PermissionDenied("Switching model versions needs the change_modelversion permission.")
        return view(request, *args, **kwargs)

    return checked


class TrafficForm(forms.Form):
    traffic_percent = forms.IntegerField(
        min_value=0, max_value=100, label="Share of users", help_text="0 ends the test"
    )


@require_GET
@model_switcher_required
def models_page(request: AuthenticatedHttpRequest) -> HttpResponse:
    return render(request, "operators/models.html", {"overview": overview.models_overview()})


@require_POST
@model_switcher_required
def activate(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """Activate one version: its confirmation page, then (confirmed, the active version
    unchanged since) ``model_version_activate``."""
    model_version = get_object_or_404(ModelVersion, pk=pk)
    active = registry_selectors.model_version_active()
    if not (switch_confirmed(request) and active_unchanged(request, active)):
        if switch_confirmed(request):
            messages.warning(request, f"The active version changed meanwhile, to {active}: look again.")
        return _confirmation(
            request,
            title=f"Activate {model_version.name} v{model_version.version}?",
            effect=f"Every user's new predictions will be classified by {model_version.name} "
            f"v{model_version.version} instead of {_named(active)}, at once and without a restart. "
            "Predictions already made keep their result; rolling back is one more confirmed click.",
            columns=[("Active now", active), ("To be activated", model_version)],
            hidden=[(ACTIVE_SHOWN_FIELD, active_shown_value(active))],
            confirm_label=f"Yes, activate {model_version.name} v{model_version.version}",
        )
    try:
        version = registry_services.model_version_activate(model_version=model_version, user=request.user)
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"{version.name} v{version.version} is now used for new predictions.")
    return redirect("models:list")


@require_POST
@model_switcher_required
def rollback(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Roll back to the version active before: its confirmation page, then
    ``model_version_rollback`` (only when it would still go where the page said)."""
    try:
        active, target = registry_services.model_version_rollback_check()
    except ApplicationError as error:
        messages.error(request, error.message)
        return redirect("models:list")
    confirmed = switch_confirmed(request) and request.POST.get("rollback_to") == str(target.pk)
    if not (confirmed and active_unchanged(request, active)):
        if switch_confirmed(request):
            messages.warning(request, f"The active version changed meanwhile, to {active}: look again.")
        return _confirmation(
            request,
            title=f"Roll back from {active.name} v{active.version} to v{target.version}?",
            effect=f"Every user's new predictions will be classified by {target.name} v{target.version}, the "
            f"version active before v{active.version}, at once and without a restart. Predictions already made "
            "keep their result.",
            columns=[("Active now", active), ("Rolled back to", target)],
            hidden=[(ACTIVE_SHOWN_FIELD, active_shown_value(active)), ("rollback_to", str(target.pk))],
            confirm_label=f"Yes, roll back to v{target.version}",
        )
    try:
        version = registry_services.model_version_rollback(user=request.user)
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"Rolled back: {version.name} v{version.version} is now used for new predictions.")
    return redirect("models:list")


@require_POST
@model_switcher_required
def traffic(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """A candidate's share of traffic (A/B test): checked by the registry's rules, shown on
    a confirmation page, then ``model_version_set_traffic``."""
    model_version = get_object_or_404(ModelVersion, pk=pk)
    form = TrafficForm(request.POST)
    if not form.is_valid():
        messages.error(request, "The share of users must be a whole number from 0 to 100.")
        return redirect("models:list")
    share: int = form.cleaned_data["traffic_percent"]
    try:
        registry_services.model_version_traffic_check(model_version=model_version, traffic_percent=share)
    except ApplicationError as error:
        messages.error(request, error.message)
        return redirect("models:list")
    if share == model_version.traffic_percent:
        messages.info(request, f"{model_version.name} v{model_version.version} already gets {share} % of users.")
        return redirect("models:list")
    active = registry_selectors.model_version_active()
    shown = request.POST.get("traffic_shown") == str(model_version.traffic_percent)
    if not (switch_confirmed(request) and shown and active_unchanged(request, active)):
        if switch_confirmed(request):
            messages.warning(request, "The versions changed meanwhile: look again.")
        effect = (
            f"{share} % of users (each always on the same side) will have their new predictions classified by "
            f"{model_version.name} v{model_version.version} instead of {_named(active)}, at once. Predictions "
            "already submitted keep their version."
            if share
            else f"The A/B test of v{model_version.version} ends: every user's new predictions are classified by "
            f"{_named(active)} at once."
        )
        return _confirmation(
            request,
            title=f"Give {model_version.name} v{model_version.version} {share} % of users "
            f"(now {model_version.traffic_percent} %)?",
            effect=effect,
            columns=[
                ("Active version", active),
                (f"Candidate: {model_version.traffic_percent} % → {share} %", model_version),
            ],
            hidden=[
                (ACTIVE_SHOWN_FIELD, active_shown_value(active)),
                ("traffic_percent", str(share)),
                ("traffic_shown", str(model_version.traffic_percent)),
            ],
            confirm_label=f"Yes, give it {share} %",
        )
    try:
        registry_services.model_version_set_traffic(
            model_version=model_version, traffic_percent=share, user=request.user
        )
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"{model_version.name} v{model_version.version} now gets {share} % of users.")
    return redirect("models:list")


def _named(version: ModelVersion | None) -> str:
    return f"{version.name} v{version.version}" if version is not None else "no version"


def _confirmation(
    request: AuthenticatedHttpRequest,
    *,
    title: str,
    effect: str,
    columns: list[tuple[str, ModelVersion | None]],
    hidden: list[tuple[str, str]],
    confirm_label: str,
) -> HttpResponse:
    """The page between the click and the switch: both versions' measured figures."""
    figures = [
        (heading, model_version_figures(model_version=version, days=WINDOW_DAYS) if version else None)
        for heading, version in columns
    ]
    context = {
        "title": title,
        "effect": effect,
        "columns": figures,
        "days": WINDOW_DAYS,
        "hidden_fields": hidden,
        "confirm_field": CONFIRM_FIELD,
        "confirm_label": confirm_label,
        "form_action": request.path,
    }
    return render(request, "operators/confirm_switch.html", context)

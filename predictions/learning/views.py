"""The learning loop's one control on the Models page: pause or resume it."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from accounts.http import AuthenticatedHttpRequest
from predictions.learning import services as learning_services
from predictions.registry.views import model_switcher_required


@require_POST
@model_switcher_required
def learning_pause(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Pause (``paused=yes``) or resume the loop; one click, as it switches no model."""
    paused = request.POST.get("paused") == "yes"
    learning_services.learning_pause_set(paused=paused, user=request.user)
    messages.success(request, "Learning is paused." if paused else "Learning is resumed.")
    return redirect("models:list")

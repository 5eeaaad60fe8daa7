"""Pages for explanations (the "Explain" section of a prediction's page): a POST asks
for one (``services.explanation_request``), a GET reads it (``selectors.explanation_get``)."""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from accounts.http import AuthenticatedHttpRequest
from predictions import selectors
from predictions.exceptions import ApplicationError
from predictions.explanations import selectors as explanation_selectors
from predictions.explanations import services as explanations
from predictions.media import explanation_response, outage_answered
from predictions.models import ExplanationStatus


@login_required
@require_POST
def explain(request: AuthenticatedHttpRequest, prediction_id: str) -> HttpResponse:
    """Ask for the explanation of one of the prediction's top-k classes (the buttons of
    its page, a form that works without JavaScript), then show it there."""
    prediction = selectors.prediction_get(user=request.user, prediction_id=prediction_id)
    class_id = request.POST.get("class_id", "")
    try:
        explanation = explanations.explanation_request(prediction=prediction, user=request.user, class_id=class_id)
    except ApplicationError as error:
        messages.error(request, error.message)
        query = {"back": request.POST.get("back", "")}
    else:
        query = {"explain": explanation.class_id, "back": request.POST.get("back", "")}
    query = {key: value for key, value in query.items() if value}
    suffix = f"?{urlencode(query)}" if query else ""
    return redirect(f"{reverse('predictions:detail', args=[prediction.id])}{suffix}#explain")


@login_required
@require_GET
@outage_answered
def explanation_image(request: AuthenticatedHttpRequest, prediction_id: str) -> HttpResponseBase:
    """The overlay PNG to its owner (200); 202 while it is computed (the page's script
    polls this), 409 with the reason when it failed, 404 when it was not asked for."""
    prediction = selectors.prediction_get(user=request.user, prediction_id=prediction_id)
    explanation = explanation_selectors.explanation_get(prediction=prediction, class_id=request.GET.get("class_id"))
    if explanation.status == ExplanationStatus.SUCCEEDED:
        return explanation_response(explanation)
    if explanation.status == ExplanationStatus.FAILED:
        return HttpResponse(explanation.error, status=409, content_type="text/plain; charset=utf-8")
    return HttpResponse("Computing…", status=202, content_type="text/plain; charset=utf-8")

"""The Reviews page: every user's recent corrections and confirmations, filtered, and
their export as a labelled dataset. For accounts that read every prediction
(``access.can_view_all_predictions``); the admin keeps the raw rows."""

from __future__ import annotations

import tempfile
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import FileResponse, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from accounts.http import AuthenticatedHttpRequest
from predictions import access
from predictions import selectors as prediction_selectors
from predictions.exceptions import ApplicationError
from predictions.media import image_response
from predictions.models import Correction, ModelVersion
from predictions.reviews import export as review_export
from predictions.reviews import selectors as review_selectors

PAGE_SIZE = 50


class ReviewFilterForm(forms.Form):
    kind = forms.ChoiceField(choices=review_selectors.ReviewKind.choices, required=False, label="Kind")
    model_version = forms.ModelChoiceField(
        queryset=ModelVersion.objects.order_by("name", "version"), required=False, empty_label="Every version",
        label="Model version",
    )  # fmt: skip
    q = forms.CharField(required=False, max_length=200, label="Label or reviewer contains")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)
        self.fields["model_version"].label_from_instance = lambda v: f"{v.name} v{v.version}"  # type: ignore[attr-defined]


def _reviews(request: AuthenticatedHttpRequest) -> tuple[ReviewFilterForm, QuerySet[Correction]]:
    if not access.can_view_all_predictions(request.user):
        raise PermissionDenied("Reading every user's reviews needs the view_prediction permission.")
    form = ReviewFilterForm(request.GET or None)
    data = form.cleaned_data if form.is_valid() else {}
    reviews = review_selectors.review_search(
        kind=data.get("kind") or "", model_version=data.get("model_version"), text=(data.get("q") or "").strip()
    )
    return form, reviews


@login_required
@require_GET
def reviews_page(request: AuthenticatedHttpRequest) -> HttpResponse:
    form, reviews = _reviews(request)
    page = Paginator(reviews, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "form": form,
        "page": page,
        "query": query.urlencode(),
        "totals": review_selectors.review_totals(reviews=reviews),
    }
    return render(request, "operators/reviews.html", context)


@login_required
@require_GET
def reviews_export(request: AuthenticatedHttpRequest) -> HttpResponseBase:
    """The filtered reviews as a dataset (zip: a folder per label, manifest.csv), as
    ``training.finetune`` reads it; the same export as the admin's action."""
    _, reviews = _reviews(request)
    # Spooled: a few hundred images stay in memory, a large export goes to a temp file that
    # FileResponse closes once sent.
    archive = tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024)  # noqa: SIM115
    try:
        review_export.correction_export_zip(corrections=reviews.order_by("label", "created_at"), target=archive)
    except ApplicationError as error:
        archive.close()
        messages.error(request, error.message)
        return redirect(f"{reverse('reviews:list')}?{request.GET.urlencode()}")
    archive.seek(0)
    name = f"reviews-{timezone.now():%Y%m%d-%H%M%S}.zip"
    return FileResponse(archive, as_attachment=True, filename=name, content_type="application/zip")


@login_required
@require_GET
def review_image(request: AuthenticatedHttpRequest, prediction_id: str) -> HttpResponseBase:
    """A reviewed prediction's thumbnail for the Reviews page (any user's: same policy)."""
    if not access.can_view_all_predictions(request.user):
        raise PermissionDenied
    prediction = prediction_selectors.prediction_get(user=None, prediction_id=prediction_id)
    return image_response(prediction, thumbnail=True)

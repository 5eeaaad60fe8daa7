"""The history pages: the gallery (a grid of thumbnails, or the list view), its filters in
the URL, the CSV export and the multi-select actions (delete, mark correct, export)."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from accounts.http import AuthenticatedHttpRequest
from predictions import selectors, services
from predictions.models import Prediction, PredictionStatus
from predictions.reviews import services as review_services
from predictions.selectors import PredictionFilters

from .exceptions import ApplicationError
from .forms import HistoryFilterForm
from .spreadsheets import spreadsheet_text
from .views import history_url

PAGE_SIZE = 24  # tiles: 2, 3, 4 or 6 to a row, whole rows at every width
FILTERS = ("label", "filename", "status", "sure", "model_version", "created_after", "created_before")


def _history_filters(request: HttpRequest, user: User) -> tuple[HistoryFilterForm, PredictionFilters]:
    versions = selectors.prediction_model_versions(user=user)
    form = HistoryFilterForm(request.GET or None, versions=versions)
    if not form.is_valid():
        return form, PredictionFilters()
    data = form.cleaned_data
    return form, PredictionFilters(
        status=data["status"],
        label=data["label"],
        filename=data["filename"],
        uncertain={"sure": False, "unsure": True}.get(data["sure"]),
        model_version=data["model_version"],
        created_after=data["created_after"],
        created_before=data["created_before"],
    )


@login_required
def history(request: AuthenticatedHttpRequest) -> HttpResponse:
    """The user's predictions as a gallery (``view=list``: a table), filtered; the empty
    state says why nothing is listed."""
    form, filters = _history_filters(request, request.user)
    queryset = selectors.prediction_list(user=request.user, filters=filters)
    if form.errors:  # e.g. a reversed date range: say so instead of listing everything
        queryset = queryset.none()
    page = Paginator(queryset, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    view = "list" if request.GET.get("view") == "list" else "grid"
    grid_query = query.copy()
    grid_query.pop("view", None)
    list_query = grid_query.copy()
    list_query["view"] = "list"
    filtered = any(request.GET.get(name) for name in FILTERS)
    more_filters = sum(1 for name in FILTERS[2:] if request.GET.get(name))
    context = {
        "form": form,
        "page": page,
        "query": query.urlencode(),
        "grid_query": grid_query.urlencode(),
        "list_query": list_query.urlencode(),
        "view": view,
        "back": request.GET.urlencode(),
        "filtered": filtered,
        "more_filters": more_filters,
        "has_any": page.paginator.count > 0 or selectors.prediction_list(user=request.user).exists(),
        "time_zone": timezone.get_current_timezone_name(),
    }
    return render(request, "predictions/history.html", context)


class _Echo:
    def write(self, value: str) -> str:
        return value


CSV_HEADER = [
    "id", "created_at", "completed_at", "filename", "status", "label", "class_id",
    "confidence", "entropy", "margin", "uncertain", "model", "model_version", "queue_ms", "preprocess_ms",
    "inference_ms", "total_ms", "width", "height", "sha256", "cached", "error",
]  # fmt: skip


def _csv_response(predictions: Iterable[Prediction]) -> StreamingHttpResponse:
    writer = csv.writer(_Echo())

    def rows() -> Iterator[str]:
        yield writer.writerow(CSV_HEADER)
        for p in predictions:
            yield writer.writerow([
                p.id, p.created_at.isoformat(), p.completed_at.isoformat() if p.completed_at else "",
                spreadsheet_text(p.original_filename), p.status, p.label, p.class_id,
                "" if p.confidence is None else f"{p.confidence:.6f}",
                "" if p.entropy is None else f"{p.entropy:.6f}", "" if p.margin is None else f"{p.margin:.6f}",
                "" if p.uncertain is None else str(p.uncertain).lower(),
                p.model_version.name if p.model_version else "",
                p.model_version.version if p.model_version else "",
                p.queue_ms, p.preprocess_ms, p.inference_ms, p.total_ms,
                p.width, p.height, p.sha256, "true" if p.cached else "false", spreadsheet_text(p.error),
            ])  # fmt: skip

    response = StreamingHttpResponse(rows(), content_type="text/csv")
    response["Content-Disposition"] = 'attachment; filename="predictions.csv"'
    return response


@login_required
def history_csv(request: AuthenticatedHttpRequest) -> StreamingHttpResponse:
    _, filters = _history_filters(request, request.user)
    queryset = selectors.prediction_list(user=request.user, filters=filters)
    return _csv_response(queryset.iterator(chunk_size=500))


def _plural(count: int, word: str = "prediction") -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _confirm_selected(selected: Iterable[Prediction], request: AuthenticatedHttpRequest) -> str:
    confirmed, skipped = 0, 0
    for prediction in selected:
        if prediction.status != PredictionStatus.SUCCEEDED or prediction.uncertain:
            skipped += 1
            continue
        try:
            review_services.prediction_confirm(prediction=prediction, user=request.user)
        except ApplicationError:
            skipped += 1
        else:
            confirmed += 1
    text = f"Marked {_plural(confirmed)} as correct."
    if skipped:
        text += f" Skipped {skipped} the model was not sure about or that has no result: open each to review it."
    return text


@login_required
@require_POST
def history_selected(request: AuthenticatedHttpRequest) -> HttpResponseBase:
    """The gallery's multi-select: ``action`` is ``delete``, ``confirm`` (the model was
    right about each) or ``export`` (their CSV); then back to the same filtered page.

    "Mark correct" skips the predictions the model was not sure about: their page says
    "Not sure", so confirming its guess in bulk would record an answer nobody read; each
    one's page asks which of the candidates it is instead."""
    selected = selectors.prediction_list_selected(user=request.user, prediction_ids=request.POST.getlist("id"))
    action = request.POST.get("action", "")
    back = request.POST.get("back", "")
    if action == "export":
        return _csv_response(selected)
    if not selected.exists():
        messages.info(request, "Nothing was selected: tick the pictures first.")
        return redirect(history_url(back))
    if action == "delete":
        deleted = 0
        for prediction in selected:
            services.prediction_delete(prediction=prediction)
            deleted += 1
        messages.success(request, f"Deleted {_plural(deleted)}.")
    elif action == "confirm":
        messages.success(request, _confirm_selected(selected, request))
    else:
        messages.error(request, "Choose what to do with the selected pictures.")
    return redirect(history_url(back, "#selection"))  # focus back on the bar acted with

"""Pages for people: parse input, call a service or selector, render."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_required
from django.contrib.staticfiles import finders
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import FileResponse, HttpRequest, HttpResponse, QueryDict, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from accounts.http import AuthenticatedHttpRequest
from predictions import access, images, selectors, services
from predictions.registry import selectors as registry_selectors
from predictions.reviews import services as review_services
from predictions.selectors import PredictionFilters

from .exceptions import ApplicationError, NotFoundError
from .forms import CorrectionForm, HistoryFilterForm, UploadForm
from .media import image_response, outage_answered
from .spreadsheets import spreadsheet_text


def _wants_fragment(request: HttpRequest) -> bool:
    """The upload page's script sends each file on its own and inserts the answer
    (``static/js/upload.js``); without JavaScript the form posts and gets a whole page."""
    return request.headers.get("X-Requested-With") == "fetch"


def _upload_page(request: HttpRequest, form: UploadForm, status: int = 200) -> HttpResponse:
    if _wants_fragment(request):
        errors = [str(error) for error in form.errors.get("images", [])]
        errors += [f"{form.fields[name].label}: {error}" for name, field_errors in form.errors.items()
                   if name != "images" for error in field_errors]  # fmt: skip
        return render(request, "predictions/_upload_outcome.html", {"predictions": [], "errors": errors}, status=status)
    context = {
        "form": form,
        "formats": images.SUPPORTED_DESCRIPTION,
        "max_upload": images.megabytes(settings.MAX_UPLOAD_BYTES),
        "max_upload_bytes": settings.MAX_UPLOAD_BYTES,
        "max_files": settings.MAX_FILES_PER_REQUEST,
    }
    return render(request, "predictions/upload.html", context, status=status)


@login_required
def upload(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Upload form. Good files are submitted even when others in the batch are refused;
    refused files are reported by name (on the form if nothing was accepted).

    The page's script posts one file per request and gets the result card (or the
    refusal) as a fragment to insert; without JavaScript all files go in one post."""
    form = UploadForm(request.POST or None, request.FILES or None)
    if request.method != "POST":
        return _upload_page(request, form)
    if not form.is_valid():
        return _upload_page(request, form, status=400)
    try:
        outcomes = services.prediction_create_many(
            user=request.user, uploaded_files=form.cleaned_data["images"], top_k=form.cleaned_data["top_k"]
        )
    except ApplicationError as error:
        form.add_error("images", error.message)
        response = _upload_page(request, form, status=error.status_code)
        if error.retry_after_seconds:
            response["Retry-After"] = str(error.retry_after_seconds)
        return response
    created = [o.prediction for o in outcomes if o.prediction is not None]
    refused = [(o.filename, o.error) for o in outcomes if o.error is not None]
    if _wants_fragment(request):
        status = 201 if created else max(refusal.status_code for _, refusal in refused)
        errors = [f"{filename}: {refusal.message}" for filename, refusal in refused]
        return render(
            request, "predictions/_upload_outcome.html", {"predictions": created, "errors": errors}, status=status
        )
    if not created:
        for filename, refusal in refused:
            form.add_error("images", f"{filename}: {refusal.message}")
        status = max(refusal.status_code for _, refusal in refused)
        return _upload_page(request, form, status=status)
    for filename, refusal in refused:
        messages.error(request, f"{filename}: {refusal.message}")
    if len(created) == 1 and not refused:
        return redirect("predictions:detail", prediction_id=created[0].id)
    query = "&".join(f"id={p.id}" for p in created)
    return redirect(f"{reverse('predictions:batch')}?{query}")


_HISTORY_PARAMETERS = ("label", "status", "created_after", "created_before", "page")


def _history_url(back: str) -> str:
    """The history page with the filters the person came from (``back`` is the history
    page's query string, passed along by its links; anything else is dropped)."""
    query = QueryDict(back.lstrip("?"))
    kept = {name: value for name in _HISTORY_PARAMETERS if (value := query.get(name))}
    url = reverse("predictions:history")
    return f"{url}?{urlencode(kept)}" if kept else url


def _detail_url(request: HttpRequest, prediction_id: object, anchor: str = "", *, correct: bool = False) -> str:
    """Back to the detail page after a button on it, keeping its way back to the history;
    ``correct``: with the correction form open."""
    url = reverse("predictions:detail", args=[prediction_id])
    query = {"back": request.POST.get("back", ""), "correct": "1" if correct else ""}
    kept = {name: value for name, value in query.items() if value}
    return f"{url}?{urlencode(kept)}{anchor}" if kept else f"{url}{anchor}"


@login_required
def detail(request: AuthenticatedHttpRequest, prediction_id: str) -> HttpResponse:
    """One prediction: the full-size image, the top-k chart, timings, model version,
    review, delete, and the way back to the (filtered) history."""
    prediction = selectors.prediction_get(user=request.user, prediction_id=prediction_id)
    back = request.GET.get("back", "")
    context = {
        "prediction": prediction,
        "back": back,
        "history_url": _history_url(back),
        "model_classes": registry_selectors.model_class_list(model_version=prediction.model_version),
        "correction_open": request.GET.get("correct") == "1",
    }
    return render(request, "predictions/detail.html", context)


@login_required
def batch(request: AuthenticatedHttpRequest) -> HttpResponse:
    ids = request.GET.getlist("id")[: settings.MAX_FILES_PER_REQUEST]
    predictions = [selectors.prediction_get(user=request.user, prediction_id=i) for i in ids]
    return render(request, "predictions/results.html", {"predictions": predictions})


@login_required
def card(request: AuthenticatedHttpRequest, prediction_id: str) -> HttpResponse:
    """The result card alone: the result page polls it until the prediction is final."""
    prediction = selectors.prediction_get(user=request.user, prediction_id=prediction_id)
    return render(request, "predictions/_card.html", {"prediction": prediction})


@login_required
@outage_answered
def image(request: AuthenticatedHttpRequest, prediction_id: str) -> HttpResponseBase:
    """The uploaded image, to its owner only (media is never served publicly)."""
    prediction = selectors.prediction_get(user=request.user, prediction_id=prediction_id)
    return image_response(prediction, thumbnail=request.GET.get("size") == "thumb")


def favicon(request: HttpRequest) -> FileResponse:
    """``/favicon.ico``, which browsers ask for on every site whatever the page links."""
    path = finders.find("favicon.ico")
    if not isinstance(path, str):
        raise NotFoundError("No favicon.")
    response = FileResponse(open(path, "rb"), content_type="image/x-icon")  # noqa: SIM115 - closed by FileResponse
    response["Cache-Control"] = "public, max-age=86400"
    return response


@staff_member_required
@outage_answered
def admin_image(request: HttpRequest, prediction_id: str) -> HttpResponseBase:
    """Any prediction's image, for admin users allowed to read every prediction
    (``access.can_view_all_predictions``); other staff get 403."""
    if not access.can_view_all_predictions(request.user):
        raise PermissionDenied
    prediction = selectors.prediction_get(user=None, prediction_id=prediction_id)
    return image_response(prediction, thumbnail=request.GET.get("size") == "thumb")


def _history_filters(request: HttpRequest) -> tuple[HistoryFilterForm, PredictionFilters]:
    form = HistoryFilterForm(request.GET or None)
    if not form.is_valid():
        return form, PredictionFilters()
    data = form.cleaned_data
    return form, PredictionFilters(
        status=data["status"],
        label=data["label"],
        created_after=data["created_after"],
        created_before=data["created_before"],
    )


@login_required
def history(request: AuthenticatedHttpRequest) -> HttpResponse:
    """The user's predictions, filtered; the empty state says why nothing is listed."""
    form, filters = _history_filters(request)
    queryset = selectors.prediction_list(user=request.user, filters=filters)
    if form.errors:  # e.g. a reversed date range: say so instead of listing everything
        queryset = queryset.none()
    page = Paginator(queryset, 20).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    filtered = any(request.GET.get(name) for name in ("label", "status", "created_after", "created_before"))
    context = {
        "form": form,
        "page": page,
        "query": query.urlencode(),
        "back": request.GET.urlencode(),
        "filtered": filtered,
        "has_any": page.paginator.count > 0 or selectors.prediction_list(user=request.user).exists(),
        "time_zone": timezone.get_current_timezone_name(),
    }
    return render(request, "predictions/history.html", context)


class _Echo:
    def write(self, value: str) -> str:
        return value


@login_required
def history_csv(request: AuthenticatedHttpRequest) -> StreamingHttpResponse:
    _, filters = _history_filters(request)
    queryset = selectors.prediction_list(user=request.user, filters=filters)
    writer = csv.writer(_Echo())
    header = [
        "id", "created_at", "completed_at", "filename", "status", "label", "class_id",
        "confidence", "entropy", "margin", "uncertain", "model", "model_version", "queue_ms", "preprocess_ms",
        "inference_ms", "total_ms", "width", "height", "sha256", "cached", "error",
    ]  # fmt: skip

    def rows() -> Iterator[str]:
        yield writer.writerow(header)
        for p in queryset.iterator(chunk_size=500):
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
@require_POST
def delete(request: AuthenticatedHttpRequest, prediction_id: str) -> HttpResponse:
    prediction = selectors.prediction_get(user=request.user, prediction_id=prediction_id)
    services.prediction_delete(prediction=prediction)
    messages.success(request, f"Deleted {prediction.original_filename}.")
    return redirect(_history_url(request.POST.get("back", "")))


@login_required
@require_POST
def retry(request: AuthenticatedHttpRequest, prediction_id: str) -> HttpResponse:
    """Send the user's failed prediction again (the button on its result card)."""
    prediction = selectors.prediction_get(user=request.user, prediction_id=prediction_id)
    try:
        services.prediction_retry(prediction=prediction)
    except ApplicationError as error:
        messages.info(request, error.message)
    else:
        messages.success(request, f"Sent {prediction.original_filename} again.")
    return redirect(_detail_url(request, prediction.id))


@login_required
@require_POST
def correct(request: AuthenticatedHttpRequest, prediction_id: str) -> HttpResponse:
    """The owner marks the prediction wrong and gives the right label (the form on its
    result card and page): one of the model's classes, or a new class when ticked as one;
    a second correction replaces the first. Back to the prediction's page, which offers
    every class of the model (and says which are closest when the label is none)."""
    prediction = selectors.prediction_get(user=request.user, prediction_id=prediction_id)
    form = CorrectionForm(request.POST)
    valid = form.is_valid()
    try:
        correction = review_services.correction_set(
            prediction=prediction,
            user=request.user,
            label=form.cleaned_data["label"] if valid else "",
            new_class=valid and form.cleaned_data["new_class"],
        )
    except ApplicationError as error:
        messages.error(request, error.message)
        # Back to the form, open, on the page that offers every class of the model.
        return redirect(_detail_url(request, prediction.id, f"#correction-{prediction.id}", correct=True))
    else:
        kind = " (a new class)" if correction.new_class else ""
        messages.success(request, f"Thanks: {prediction.original_filename} is marked as {correction.label}{kind}.")
    return redirect(_detail_url(request, prediction.id, f"#correction-{prediction.id}"))


@login_required
@require_POST
def confirm(request: AuthenticatedHttpRequest, prediction_id: str) -> HttpResponse:
    """The owner says the model's label is right (the "Right" button on its result card
    and history row); it replaces an earlier correction."""
    prediction = selectors.prediction_get(user=request.user, prediction_id=prediction_id)
    try:
        review_services.prediction_confirm(prediction=prediction, user=request.user)
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"Thanks: you confirmed {prediction.original_filename} is {prediction.label}.")
    return redirect(_detail_url(request, prediction.id, f"#review-{prediction.id}"))


@login_required
@require_POST
def withdraw_review(request: AuthenticatedHttpRequest, prediction_id: str) -> HttpResponse:
    """The owner takes back their confirmation or correction (the "Undo" button)."""
    prediction = selectors.prediction_get(user=request.user, prediction_id=prediction_id)
    review = getattr(prediction, "correction", None)
    try:
        review_services.correction_withdraw(prediction=prediction, confirmed=review is not None and review.confirmed)
    except ApplicationError as error:
        messages.info(request, error.message)
    else:
        messages.success(request, f"Withdrawn: {prediction.original_filename} is not reviewed any more.")
    return redirect(_detail_url(request, prediction.id, f"#review-{prediction.id}"))

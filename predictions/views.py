"""Pages for people: parse input, call a service or selector, render."""

from __future__ import annotations

from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_required
from django.contrib.staticfiles import finders
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, HttpRequest, HttpResponse, QueryDict
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from accounts.http import AuthenticatedHttpRequest
from predictions import access, images, selectors, services
from predictions.api import throttles
from predictions.registry import selectors as registry_selectors
from predictions.reviews import services as review_services

from .exceptions import ApplicationError, NotFoundError
from .forms import CorrectionForm, UploadForm
from .media import image_response, outage_answered
from .models import ExplanationStatus


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


def throttled_page(request: HttpRequest, wait: int, *, back: str) -> HttpResponse:
    """429 with ``Retry-After`` for a page that submits too often (``throttles.submit_wait``):
    the refusal fragment for the upload page's script, else a page saying when to try again."""
    message = throttles.throttled_message(wait)
    if _wants_fragment(request):
        context = {"predictions": [], "errors": [message]}
        response = render(request, "predictions/_upload_outcome.html", context, status=429)
    else:
        response = render(request, "429.html", {"message": message, "back": back}, status=429)
    response["Retry-After"] = str(wait)
    return response


def _upload_refused(request: AuthenticatedHttpRequest, form: UploadForm, error: ApplicationError) -> HttpResponse:
    """The upload page with the whole post refused; a transient refusal (the store is down)
    says when to try again."""
    form.add_error("images", error.message)
    response = _upload_page(request, form, status=error.status_code)
    if error.retry_after_seconds:
        response["Retry-After"] = str(error.retry_after_seconds)
    return response


@login_required
def upload(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Upload form. Good files are submitted even when others in the batch are refused;
    refused files are reported by name (on the form if nothing was accepted).

    The page's script posts one file per request and gets the result card (or the
    refusal) as a fragment to insert; without JavaScript all files go in one post."""
    if request.method == "POST" and (wait := throttles.submit_wait(request)) is not None:
        return throttled_page(request, wait, back=reverse("predictions:upload"))  # the API's rate, shared
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
        return _upload_refused(request, form, error)
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


# Every parameter of the history page (filters, view, page), kept on the way back to it.
HISTORY_PARAMETERS = (
    "label", "filename", "status", "sure", "model_version", "created_after", "created_before", "view", "page",
)  # fmt: skip


def history_url(back: str, anchor: str = "") -> str:
    """The history page with the filters the person came from (``back`` is the history
    page's query string, passed along by its links; anything else is dropped)."""
    query = QueryDict(back.lstrip("?"))
    kept = {name: value for name in HISTORY_PARAMETERS if (value := query.get(name))}
    url = reverse("predictions:history")
    return f"{url}?{urlencode(kept)}{anchor}" if kept else f"{url}{anchor}"


def _detail_url(request: HttpRequest, prediction_id: object, anchor: str = "", *, correct: bool = False) -> str:
    """Back to the detail page after a button on it, keeping its way back to the history;
    ``correct``: with the correction form open."""
    url = reverse("predictions:detail", args=[prediction_id])
    query = {"back": request.POST.get("back", ""), "correct": "1" if correct else ""}
    kept = {name: value for name, value in query.items() if value}
    return f"{url}?{urlencode(kept)}{anchor}" if kept else f"{url}{anchor}"


def _after_review(request: HttpRequest, prediction_id: object, anchor: str) -> str:
    """Where a review button leads: back to the history list it was pressed on (to the
    same row, which the page's script focuses), else the prediction's page."""
    if request.POST.get("from") == "history":
        return history_url(request.POST.get("back", ""), f"#row-{prediction_id}")
    return _detail_url(request, prediction_id, anchor)


@login_required
def detail(request: AuthenticatedHttpRequest, prediction_id: str) -> HttpResponse:
    """One prediction: the full-size image, the top-k chart, timings, model version,
    review, delete, and the way back to the (filtered) history."""
    prediction = selectors.prediction_get(user=request.user, prediction_id=prediction_id)
    back = request.GET.get("back", "")
    # One read of the explanations: the picker's marks and the overlay agree even while a worker finishes.
    explanations = [e for e in prediction.explanations.all() if e.model_version_id == prediction.model_version_id]
    asked = request.GET.get("explain")
    labels = {item["class_id"]: item["label"] for item in prediction.top_predictions or []}
    context = {
        "prediction": prediction,
        "explained": {e.class_id for e in explanations if e.status == ExplanationStatus.SUCCEEDED},
        "explanation": next((e for e in explanations if e.class_id == asked), None),
        "explanation_label": labels.get(asked or "", ""),
        "back": back,
        "history_url": history_url(back),
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
    """The result tile alone: the upload, results and history pages poll it until the
    prediction is final (``select=1``: with the history's tick box)."""
    prediction = selectors.prediction_get(user=request.user, prediction_id=prediction_id)
    context = {"prediction": prediction, "selectable": request.GET.get("select") == "1"}
    return render(request, "predictions/_card.html", context)


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


@login_required
@require_POST
def delete(request: AuthenticatedHttpRequest, prediction_id: str) -> HttpResponse:
    prediction = selectors.prediction_get(user=request.user, prediction_id=prediction_id)
    services.prediction_delete(prediction=prediction)
    messages.success(request, f"Deleted {prediction.original_filename}.")
    return redirect(history_url(request.POST.get("back", "")))


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
    """The owner says the model's label is right (the "Correct" button on its page and
    history row); it replaces an earlier correction."""
    prediction = selectors.prediction_get(user=request.user, prediction_id=prediction_id)
    try:
        review_services.prediction_confirm(prediction=prediction, user=request.user)
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"Thanks: you confirmed {prediction.original_filename} is {prediction.label}.")
    return redirect(_after_review(request, prediction.id, f"#review-{prediction.id}"))


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
    return redirect(_after_review(request, prediction.id, f"#review-{prediction.id}"))

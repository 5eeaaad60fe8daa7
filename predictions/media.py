"""Serving an uploaded image, its thumbnail or an explanation's overlay: one response for
pages, the admin and the API, each of which decides first who may see the prediction."""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from typing import Any

from django.http import FileResponse, HttpResponse
from django.http.response import HttpResponseBase

from .exceptions import NotFoundError, StorageUnavailableError
from .images import MEDIA_TYPES, thumbnail_jpeg
from .models import Explanation, Prediction
from .storage import media_read, media_store


def outage_answered(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """A page view serving media answers a media-store outage with 503 and Retry-After
    (the API's views get the same from the API's exception handler)."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> HttpResponseBase:
        try:
            return view(*args, **kwargs)
        except StorageUnavailableError as error:
            response = HttpResponse(error.message, status=503, content_type="text/plain; charset=utf-8")
            response["Retry-After"] = str(error.retry_after_seconds)
            return response

    return wrapped


def image_response(prediction: Prediction, *, thumbnail: bool = False) -> HttpResponseBase:
    """The stored image (or its thumbnail), never cached publicly. The worker stores a
    thumbnail once it has classified the image; until then (or for a failed image) it is
    made for this answer without being stored: a read never writes."""
    response: HttpResponseBase
    try:
        with media_store():  # an outage: StorageUnavailableError, 503 with Retry-After
            if thumbnail:
                content = _stored_thumbnail(prediction) or thumbnail_jpeg(io.BytesIO(media_read(prediction.image)))
                response = FileResponse(io.BytesIO(content), content_type="image/jpeg")
            else:
                response = FileResponse(io.BytesIO(media_read(prediction.image)))
                response["Content-Type"] = MEDIA_TYPES.get(prediction.image_format, "application/octet-stream")
    except FileNotFoundError as error:
        raise NotFoundError("The image file is no longer stored.") from error
    except (OSError, ValueError, SyntaxError) as error:  # a damaged upload has no preview
        raise NotFoundError("This image cannot be shown.") from error
    response["Cache-Control"] = "private, max-age=3600"
    response["X-Content-Type-Options"] = "nosniff"
    return response


def _stored_thumbnail(prediction: Prediction) -> bytes:
    """The stored thumbnail's bytes; empty when none is stored (yet)."""
    try:
        return media_read(prediction.thumbnail)
    except FileNotFoundError:
        return b""


def explanation_response(explanation: Explanation) -> FileResponse:
    """The stored Grad-CAM overlay (PNG) of a succeeded explanation."""
    try:
        response = FileResponse(io.BytesIO(media_read(explanation.image)), content_type="image/png")
    except (FileNotFoundError, ValueError) as error:  # ValueError: no file recorded
        raise NotFoundError("The explanation image is no longer stored.") from error
    # Short: the same URL shows a new overlay once a re-run prediction is explained again.
    response["Cache-Control"] = "private, max-age=300"
    response["X-Content-Type-Options"] = "nosniff"
    return response

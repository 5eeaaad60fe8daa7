"""Serving an uploaded image, its thumbnail or an explanation's overlay: one response for
pages, the admin and the API, each of which decides first who may see the prediction."""

from __future__ import annotations

import io

from django.http import FileResponse
from django.http.response import HttpResponseBase
from PIL import Image

from .exceptions import NotFoundError
from .images import thumbnail_jpeg
from .models import Explanation, Prediction


def image_response(prediction: Prediction, *, thumbnail: bool = False) -> HttpResponseBase:
    """The stored image (or its thumbnail), never cached publicly. The worker stores a
    thumbnail once it has classified the image; until then (or for a failed image) it is
    made for this answer without being stored: a read never writes."""
    response: HttpResponseBase
    try:
        if thumbnail and prediction.thumbnail.name and prediction.thumbnail.storage.exists(prediction.thumbnail.name):
            response = FileResponse(prediction.thumbnail.open("rb"), content_type="image/jpeg")
        elif thumbnail:
            with prediction.image.open("rb") as image:
                response = FileResponse(io.BytesIO(thumbnail_jpeg(image)), content_type="image/jpeg")
        else:
            response = FileResponse(prediction.image.open("rb"))
            response["Content-Type"] = Image.MIME.get(prediction.image_format, "application/octet-stream")
    except FileNotFoundError as error:
        raise NotFoundError("The image file is no longer stored.") from error
    except (OSError, ValueError, SyntaxError) as error:  # a damaged upload has no preview
        raise NotFoundError("This image cannot be shown.") from error
    response["Cache-Control"] = "private, max-age=3600"
    response["X-Content-Type-Options"] = "nosniff"
    return response


def explanation_response(explanation: Explanation) -> FileResponse:
    """The stored Grad-CAM overlay (PNG) of a succeeded explanation."""
    try:
        response = FileResponse(explanation.image.open("rb"), content_type="image/png")
    except (FileNotFoundError, ValueError) as error:  # ValueError: no file recorded
        raise NotFoundError("The explanation image is no longer stored.") from error
    # Short: the same URL shows a new overlay once a re-run prediction is explained again.
    response["Cache-Control"] = "private, max-age=300"
    response["X-Content-Type-Options"] = "nosniff"
    return response

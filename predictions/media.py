"""Serving an uploaded image, its thumbnail or an explanation's overlay: one response for
pages, the admin and the API, each of which decides first who may see the prediction."""

from __future__ import annotations

from django.http import FileResponse, Http404
from PIL import Image

from predictions import services

from .models import Explanation, Prediction


def image_response(prediction: Prediction, *, thumbnail: bool = False) -> FileResponse:
    """The stored image (or its stored thumbnail, made on first use), never cached publicly."""
    try:
        if thumbnail:
            name = services.prediction_thumbnail(prediction=prediction)
            response = FileResponse(prediction.thumbnail.storage.open(name, "rb"))
            response["Content-Type"] = "image/jpeg"
        else:
            response = FileResponse(prediction.image.open("rb"))
            response["Content-Type"] = Image.MIME.get(prediction.image_format, "application/octet-stream")
    except FileNotFoundError as error:
        raise Http404("The image file is no longer stored.") from error
    except (OSError, ValueError, SyntaxError) as error:  # a damaged upload has no preview
        raise Http404("This image cannot be shown.") from error
    response["Cache-Control"] = "private, max-age=3600"
    response["X-Content-Type-Options"] = "nosniff"
    return response


def explanation_response(explanation: Explanation) -> FileResponse:
    """The stored Grad-CAM overlay (PNG) of a succeeded explanation."""
    try:
        response = FileResponse(explanation.image.open("rb"), content_type="image/png")
    except (FileNotFoundError, ValueError) as error:  # ValueError: no file recorded
        raise Http404("The explanation image is no longer stored.") from error
    # Short: the same URL shows a new overlay once a re-run prediction is explained again.
    response["Cache-Control"] = "private, max-age=300"
    response["X-Content-Type-Options"] = "nosniff"
    return response

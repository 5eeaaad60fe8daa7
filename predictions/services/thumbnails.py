"""Thumbnails the worker stores with a batch's results, so that pages show an image
without decoding the original (and a page view never writes one)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from django.core.files.base import ContentFile

from predictions.exceptions import StorageUnavailableError
from predictions.models import Prediction
from predictions.storage import media_store

from .submissions import prediction_thumbnail

logger = logging.getLogger(__name__)


def prediction_thumbnails_store(*, made: Sequence[tuple[Prediction, bytes]]) -> None:
    """Store each classified image's thumbnail once its result is announced (no one waits)
    and record the names in one UPDATE. ``made``: each prediction with the JPEG the
    classifier made from the pixels it decoded (``Classifier.classify(thumbnail_size=)``),
    or ``b""``: that one is made from the stored image (``prediction_thumbnail``). One that
    cannot be stored is left without: pages then make it on each read."""
    named: list[Prediction] = []
    for prediction, content in made:
        try:
            if not content:
                prediction_thumbnail(prediction=prediction)
                continue
            with media_store():
                prediction.thumbnail.name = prediction.thumbnail.storage.save(
                    f"thumbnails/{prediction.created_at:%Y/%m/%d}/{prediction.id.hex}.jpg", ContentFile(content)
                )
            named.append(prediction)
        except (OSError, ValueError, SyntaxError, StorageUnavailableError) as error:
            logger.warning("No thumbnail stored for %s: %s", prediction.id, error)
    if named:
        Prediction.objects.bulk_update(named, ["thumbnail"])

"""The media store as the services use it: an S3 outage (MEDIA_STORAGE=s3) becomes one
transient error, ``StorageUnavailableError``, whatever boto3 raised. The services that
write (an upload) or read (the worker, the image views) wrap their storage calls in
``media_store()``: an upload then answers 503 with Retry-After and writes no row, and a
worker's task hands its batch back and retries (predictions.tasks), never failing an
image because the store was away. A missing object stays ``FileNotFoundError``."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from django.db.models.fields.files import FieldFile

from .exceptions import StorageUnavailableError

logger = logging.getLogger(__name__)

STORAGE_UNAVAILABLE_MESSAGE = "Image storage is unavailable for a moment; nothing was saved. Try again shortly."
# S3 answers that mean "not now" rather than "no": throttling and server-side errors.
_TRANSIENT_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling"}


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` is an object-store outage (worth retrying) rather than a refusal."""
    if isinstance(error, BotoConnectionError | HTTPClientError):
        return True
    if isinstance(error, ClientError):
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return status >= 500 or error.response.get("Error", {}).get("Code") in _TRANSIENT_CODES
    return False


@contextmanager
def media_store() -> Iterator[None]:
    """Around storage calls: an outage is raised as ``StorageUnavailableError``."""
    try:
        yield
    except (BotoConnectionError, HTTPClientError, ClientError) as error:
        if not is_transient(error):
            raise
        logger.warning("Media storage unavailable: %s", error)
        raise StorageUnavailableError(STORAGE_UNAVAILABLE_MESSAGE) from error


def media_read(field_file: FieldFile) -> bytes:
    """The bytes of a stored file. Raises ``FileNotFoundError`` when it is not stored,
    ``StorageUnavailableError`` when the store does not answer."""
    if not field_file.name:
        raise FileNotFoundError("no file recorded")
    storage = field_file.storage
    with media_store():
        read_bytes = getattr(storage, "read_bytes", None)  # S3: one GET (imagerec/s3storage.py)
        if read_bytes is not None:
            content: bytes = read_bytes(field_file.name)
            return content
        with storage.open(field_file.name, "rb") as stored:
            content = stored.read()
    return content

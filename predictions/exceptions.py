"""Application errors: each carries an HTTP status, a stable code and a message a person understands."""

from __future__ import annotations

from django.http import Http404


class ApplicationError(Exception):
    status_code = 400
    code = "invalid"
    retry_after_seconds = 0  # > 0: a transient refusal, answered with Retry-After

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidImageError(ApplicationError):
    code = "invalid_image"


class UnsupportedImageError(InvalidImageError):
    status_code = 415
    code = "unsupported_media_type"


class ImageTooLargeError(InvalidImageError):
    status_code = 413
    code = "too_large"


class ImageTooCostlyError(InvalidImageError):
    """Decoding the image would cost more than ``MAX_DECODE_BYTES`` even reduced; the
    message says how large it may be."""

    code = "image_too_costly"


class TooManyPendingError(ApplicationError):
    """The user already has as many of these waiting as one user may (429); the same
    status as a throttled request, with ``Retry-After``."""

    status_code = 429
    code = "throttled"
    retry_after_seconds = 5


class UnknownClassError(ApplicationError):
    """A correction's label is none of the model's classes and was not said to be a new
    one; the message names the closest classes."""

    code = "unknown_class"


class ModelUnavailableError(ApplicationError):
    status_code = 503
    code = "model_unavailable"


class StorageUnavailableError(ApplicationError):
    """The media store (MEDIA_STORAGE=s3) did not answer: nothing was written, try again
    (an upload answers 503 with Retry-After; a worker's task retries)."""

    status_code = 503
    code = "storage_unavailable"
    retry_after_seconds = 10


class ModelIntegrityError(ModelUnavailableError):
    """A distributed model version whose fetched files do not match their published
    checksums: refused, never served (predictions/registry/distribution.py)."""

    code = "model_integrity"


class ConflictError(ApplicationError):
    """The request is valid but the thing is not in a state that allows it (409)."""

    status_code = 409
    code = "conflict"


class InvalidModelError(ApplicationError):
    """An exported model folder the runner would refuse (register_model)."""

    code = "invalid_model"


class NotFoundError(ApplicationError, Http404):
    """The thing asked for is not there, or not the asker's (404): the one not-found error.

    The API's exception handler answers it in the one error shape; a page view raising
    it gets Django's 404 page (it is an ``Http404`` too)."""

    status_code = 404
    code = "not_found"


class ExplanationFailedError(ConflictError):
    """Computing the asked-for explanation failed; the message says why."""

    code = "explanation_failed"


class DirectUploadUnavailableError(ConflictError):
    """Direct uploads need object storage (MEDIA_STORAGE=s3); the message names the normal path."""

    code = "direct_upload_unavailable"


class UploadExpiredError(ApplicationError):
    """A direct upload committed after its commit window (410); its object is deleted."""

    status_code = 410
    code = "upload_expired"


class UploadMissingError(ConflictError):
    """A direct upload committed before its bytes were PUT to the store (409)."""

    code = "upload_missing"


class AlreadyCommittedError(ConflictError):
    """A direct upload committed a second time (409): it already has its prediction."""

    code = "already_committed"


class UploadMismatchError(ApplicationError):
    """The stored object is not what was declared (another size, or another format)."""

    code = "upload_mismatch"

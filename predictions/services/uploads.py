"""Direct uploads (``MEDIA_STORAGE=s3``): the client PUTs an image straight to the bucket
with a presigned URL, then commits it with a tiny request; the web process never holds
the bytes (docs/operations/object-storage.md, "Direct uploads").

``direct_upload_create`` refuses what a submit would refuse from the declared size and
type (413, 415) before signing anything, and signs a PUT for a fresh key under
``uploads/direct/<user id>/``. The upload id is a signed token (``django.core.signing``)
carrying what was declared: no row is written until the commit, and a token of another
user, or altered, is not found. ``direct_upload_commit`` checks the object (one ranged GET
of its header, which also gives its size, checked by ``images.check_image_header`` as an upload is),
writes the prediction with the object's UUID as its id (a second commit is refused by
the primary key) and queues it as a submit does. The SHA-256 the result cache needs is
computed by the worker, which reads the bytes anyway (``batches._classify``): the commit
never reads the whole object. Objects never committed are deleted by
``direct_upload_sweep`` (Celery beat, maintenance queue).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core import signing
from django.core.files.storage import default_storage
from django.db import IntegrityError
from django.utils import timezone

from predictions.exceptions import (
    AlreadyCommittedError,
    ApplicationError,
    DirectUploadUnavailableError,
    InvalidImageError,
    NotFoundError,
    UnsupportedImageError,
    UploadExpiredError,
    UploadMismatchError,
    UploadMissingError,
)
from predictions.images import (
    MEDIA_TYPES,
    SUPPORTED_DESCRIPTION,
    SUPPORTED_FORMATS,
    ImageHeader,
    check_image_header,
    check_upload_size,
)
from predictions.models import Prediction, PredictionId
from predictions.registry import selectors as registry_selectors
from predictions.storage import media_store

from .submissions import _clean_filename, _predictions_insert

logger = logging.getLogger(__name__)

DIRECT_PREFIX = "uploads/direct/"
# What the commit reads of an image: its header is in the first few KB (a JPEG's EXIF and
# ICC profile included, as a rule); an image whose header does not fit is read whole.
HEADER_BYTES = 64 * 1024
_SALT = "predictions.direct-upload"
# A declared Content-Type -> the extension of the formats it may be ("image/jpeg": a JPEG or an MPO).
CONTENT_TYPES = {media_type: SUPPORTED_FORMATS[image_format] for image_format, media_type in MEDIA_TYPES.items()}
UNAVAILABLE_MESSAGE = (
    "Direct uploads need object storage (MEDIA_STORAGE=s3), which this server does not use. "
    "Send the image with POST /api/v1/predictions/ (multipart) instead."
)


@dataclass(frozen=True)
class DirectUpload:
    """A signed PUT for one image: send exactly ``headers`` with the bytes to ``url``."""

    id: str
    url: str
    headers: dict[str, str]
    expires_at: datetime
    commit_by: datetime


@dataclass(frozen=True)
class _Declared:
    """What the client declared, as the upload id carries it."""

    user_id: int
    object_id: uuid.UUID
    extension: str
    size_bytes: int
    content_type: str
    filename: str
    top_k: int
    commit_by: float  # a Unix time

    @property
    def name(self) -> str:
        return f"{DIRECT_PREFIX}{self.user_id}/{self.object_id.hex}.{self.extension}"


def _direct_storage() -> Any:
    """The media storage, when it can sign uploads (imagerec.s3storage)."""
    if not hasattr(default_storage, "presigned_put"):
        raise DirectUploadUnavailableError(UNAVAILABLE_MESSAGE)
    return default_storage


def direct_upload_available() -> bool:
    return hasattr(default_storage, "presigned_put")


def direct_upload_create(
    *, user: User, filename: str, content_type: str, size_bytes: int, top_k: int | None = None
) -> DirectUpload:
    """Sign a PUT of one image of ``size_bytes`` and ``content_type`` to a fresh key of
    this user's. Refused as a submit would be, before signing: over ``MAX_UPLOAD_BYTES``
    (413 ``too_large``), a type that is not a supported image (415), an empty file or a
    bad ``top_k`` (400); with local media, 409 ``direct_upload_unavailable``. Writes nothing."""
    storage = _direct_storage()
    check_upload_size(size_bytes)
    if size_bytes < 1:
        raise InvalidImageError("The file is empty.", field="size")
    content_type = content_type.strip().lower()
    extension = CONTENT_TYPES.get(content_type)
    if extension is None:
        raise UnsupportedImageError(
            f"content_type is not a supported image type; upload {SUPPORTED_DESCRIPTION}.",
            field="content_type",
        )
    top_k = settings.DEFAULT_TOP_K if top_k is None else top_k
    if not 1 <= top_k <= settings.MAX_TOP_K:
        raise ApplicationError(f"top_k must be between 1 and {settings.MAX_TOP_K}.", field="top_k")
    expires = settings.DIRECT_UPLOAD_EXPIRES_SECONDS
    now = time.time()
    declared = _Declared(
        user_id=user.pk,
        object_id=uuid.uuid4(),
        extension=extension,
        size_bytes=size_bytes,
        content_type=content_type,
        filename=_clean_filename(filename),
        top_k=top_k,
        commit_by=round(now + 2 * expires),
    )
    fields = [declared.user_id, declared.object_id.hex, extension, size_bytes, content_type, declared.filename]
    upload_id = signing.dumps([*fields, top_k, declared.commit_by], salt=_SALT)
    with media_store():
        url = storage.presigned_put(
            declared.name,
            content_type=content_type,
            size_bytes=size_bytes,
            expires_seconds=expires,
            endpoint_url=settings.DIRECT_UPLOAD_ENDPOINT_URL,
        )
    return DirectUpload(
        id=upload_id,
        url=url,
        headers={"Content-Type": content_type, "Content-Length": str(size_bytes), "If-None-Match": "*"},
        expires_at=datetime.fromtimestamp(now + expires, tz=UTC),
        commit_by=datetime.fromtimestamp(declared.commit_by, tz=UTC),
    )


def _declared(*, user: User, upload_id: str) -> _Declared:
    """The declaration the upload id carries; 404 for an id that is not this user's."""
    try:
        fields = signing.loads(upload_id, salt=_SALT)
        declared = _Declared(
            user_id=int(fields[0]),
            object_id=uuid.UUID(fields[1]),
            extension=str(fields[2]),
            size_bytes=int(fields[3]),
            content_type=str(fields[4]),
            filename=str(fields[5]),
            top_k=int(fields[6]),
            commit_by=float(fields[7]),
        )
    except (signing.BadSignature, TypeError, ValueError, IndexError, KeyError) as error:
        raise NotFoundError("No such upload.") from error
    if declared.user_id != user.pk:
        raise NotFoundError("No such upload.")
    return declared


def direct_upload_commit(
    *,
    user: User,
    upload_id: str,
    before_queue: Callable[[Sequence[PredictionId]], None] | None = None,
) -> Prediction:
    """Turn a PUT image into a prediction, queued after commit as a submit's is.

    Checks, each refusal writing no row: the id is this user's (404), within its commit
    window (410 ``upload_expired``), its object stored (409 ``upload_missing``) with the
    declared size and a header of the declared format (400 ``upload_mismatch``) that a
    submit would accept (the submit's codes: 400 ``invalid_image``, 415,
    ``image_too_costly``), not committed before (409 ``already_committed``: the primary
    key, so two commits at once write one row). A refused object is deleted. The object is
    read once: a ranged GET of its first ``HEADER_BYTES`` also says its size (no HEAD).
    ``before_queue``: as in ``prediction_create_many`` (a waiting commit subscribes there).
    """
    storage = _direct_storage()
    declared = _declared(user=user, upload_id=upload_id)
    name = declared.name
    if time.time() > declared.commit_by:
        _refused(storage, declared)
        raise UploadExpiredError("This upload expired; ask for a new one and upload the image again.", field="id")
    try:
        with media_store():
            head, stored_size = storage.read_head(name, HEADER_BYTES)
    except FileNotFoundError as error:
        raise UploadMissingError(
            "Nothing was uploaded yet: PUT the image to the upload URL first.", field="id"
        ) from error
    try:
        header = _checked(storage, name, head=head, declared=declared, stored_size=stored_size)
    except (InvalidImageError, UploadMismatchError):
        _refused(storage, declared)
        raise
    now = timezone.now()
    prediction = Prediction(
        id=declared.object_id,
        user=user,
        created_at=now,
        enqueued_at=now,  # sent on commit; cleared if the broker refuses (prediction_enqueue)
        original_filename=declared.filename,
        image_format=header.image_format,
        size_bytes=stored_size,
        width=header.width,
        height=header.height,
        decode_bytes=header.decode_bytes,
        sha256="",  # the worker's, from the bytes it reads (the commit never reads them all)
        top_k=declared.top_k,
        assigned_version=registry_selectors.model_version_for_user(user=user),
    )
    prediction.image.name = name
    prediction.clean_fields(exclude=["image", "thumbnail", "user", "model_version", "assigned_version", "sha256"])
    try:
        _predictions_insert(predictions=[prediction], before_queue=before_queue, keep_files=True)
    except IntegrityError as error:  # two commits at once: the other one wrote it
        raise AlreadyCommittedError("This upload was committed already.", field="id") from error
    return prediction


def _checked(storage: Any, name: str, *, head: bytes, declared: _Declared, stored_size: int) -> ImageHeader:
    """The stored object's header, checked as an upload's and against the declaration."""
    if stored_size != declared.size_bytes:
        raise UploadMismatchError(
            f"The stored file has {stored_size} bytes, not the {declared.size_bytes} declared.", field="size"
        )
    try:
        header = check_image_header(head)
    except InvalidImageError:
        if len(head) >= stored_size:
            raise
        with media_store():  # a header longer than HEADER_BYTES (a large EXIF block): read it all
            header = check_image_header(storage.read_bytes(name))
    if header.extension != declared.extension:
        raise UploadMismatchError(
            f"The stored file is a {header.image_format} image, not the {declared.content_type} declared.",
            field="content_type",
        )
    return header


def _refused(storage: Any, declared: _Declared) -> None:
    """A refused upload: 409 if it was committed before (its object is the prediction's
    and stays), else its object is deleted (best effort: the sweep deletes what an outage left)."""
    if Prediction.objects.filter(id=declared.object_id).exists():
        raise AlreadyCommittedError("This upload was committed already.", field="id")
    try:
        with media_store():
            storage.delete(declared.name)
    except ApplicationError as error:
        logger.warning("Direct upload %s not deleted now (the sweep will): %s", declared.name, error)


def _object_id(name: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(name.rsplit("/", 1)[-1].split(".", 1)[0])
    except ValueError:  # not a name this module signed: left alone
        return None


def direct_upload_sweep(*, older_than_seconds: float | None = None) -> int:
    """Delete the direct uploads never committed whose commit can no longer come (their
    commit window, twice ``DIRECT_UPLOAD_EXPIRES_SECONDS``, and a minute more, is over).
    Returns how many were deleted. Nothing to do with local media."""
    if not direct_upload_available():
        return 0
    storage = default_storage
    age = 2 * settings.DIRECT_UPLOAD_EXPIRES_SECONDS + 60 if older_than_seconds is None else older_than_seconds
    cutoff = timezone.now() - timedelta(seconds=age)
    with media_store():
        listed = [name for name, written in storage.listed(DIRECT_PREFIX) if written < cutoff]  # type: ignore[attr-defined]
    old = {object_id: name for name in listed if (object_id := _object_id(name)) is not None}
    committed = set(Prediction.objects.filter(id__in=list(old)).values_list("id", flat=True))
    names = [name for object_id, name in old.items() if object_id not in committed]
    for name in names:
        with media_store():
            storage.delete(name)
    if names:
        logger.info("Deleted %d direct uploads never committed", len(names))
    return len(names)

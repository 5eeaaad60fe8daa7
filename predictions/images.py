"""Validation of uploaded bytes with Pillow: one place for size limits, formats,
decompression bombs and truncated files. Nothing is stored before this passes."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from typing import IO

from django.conf import settings
from PIL import Image, UnidentifiedImageError

from ml import decoding
from ml.preprocessing import open_rgb, thumbnail_of

from .exceptions import ImageTooCostlyError, ImageTooLargeError, InvalidImageError, UnsupportedImageError

# Pillow format name -> stored file extension.
SUPPORTED_FORMATS = {
    "JPEG": "jpg",
    "MPO": "jpg",
    "PNG": "png",
    "WEBP": "webp",
    "GIF": "gif",
    "BMP": "bmp",
    "TIFF": "tiff",
    "AVIF": "avif",
}
SUPPORTED_DESCRIPTION = "JPEG, PNG, WebP, AVIF, GIF, BMP or TIFF"
# Pillow format name -> the Content-Type a stored upload is served with (Pillow's own
# Image.MIME, which is filled only once its plugins are loaded); the schema lists the same.
MEDIA_TYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/mpo",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "AVIF": "image/avif",
}


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header declares, checked (``check_image_header``)."""

    image_format: str
    extension: str
    width: int
    height: int
    decode_bytes: int  # what the worker's decode will cost, reduced if it will be decoded reduced


@dataclass(frozen=True)
class ValidatedImage:
    image_format: str
    extension: str
    width: int
    height: int
    sha256: str
    size_bytes: int
    decode_bytes: int  # what the worker's decode will cost, reduced if it will be decoded reduced


def check_upload_size(size_bytes: int) -> None:
    """Refuse (413) a file over ``MAX_UPLOAD_BYTES``; callable before reading it."""
    limit = settings.MAX_UPLOAD_BYTES
    if size_bytes > limit:
        size, most = megabytes(size_bytes), megabytes(limit)
        message = (
            f"The file is {size}; the limit is {most}." if size != most else f"The file is just over the {most} limit."
        )
        raise ImageTooLargeError(message, field="image")


def megabytes(size_bytes: int) -> str:
    """A size as people read it in a file manager: MB of 1,048,576 bytes, at most one
    decimal (the 20,971,520-byte default limit is "20 MB", not "21 MB")."""
    value = size_bytes / 1_048_576
    text = f"{value:.1f}".removesuffix(".0")
    if text == "0":
        text = "0.1" if size_bytes else "0"
    return f"{text} MB"


def validate_image_bytes(content: bytes) -> ValidatedImage:
    """Check what the upload path can check without decoding the pixels: not empty, under
    the size limit, the header (``check_image_header``), and (JPEG, PNG) not cut short.
    Computes the SHA-256.

    The full decode happens once, in the worker, which needs the pixels anyway: decoding a
    12-megapixel JPEG costs ~160 ms of CPU against ~0.05 ms for its header (README
    "Upload path"). A file whose pixel data turns out to be damaged ends ``failed`` there
    with a message for the uploader.

    Raises an ``InvalidImageError`` subclass with a message meant for the uploader.
    """
    if not content:
        raise InvalidImageError("The file is empty.", field="image")
    check_upload_size(len(content))
    header = check_image_header(content)
    if not _is_complete(header.image_format, content):
        raise InvalidImageError(DAMAGED_MESSAGE, field="image")
    return ValidatedImage(
        image_format=header.image_format,
        extension=header.extension,
        width=header.width,
        height=header.height,
        sha256=hashlib.sha256(content).hexdigest(),
        size_bytes=len(content),
        decode_bytes=header.decode_bytes,
    )


def check_image_header(head: bytes) -> ImageHeader:
    """What the first bytes of an image say, checked: a supported format, declared
    dimensions within ``MAX_IMAGE_PIXELS`` (no decompression bomb), a decode that fits
    ``MAX_DECODE_BYTES`` (a JPEG reduced if need be, ``ml.decoding``; anything else over
    it is refused with ``ImageTooCostlyError``). ``head`` may be the whole file or only its
    start (a direct upload's ranged read); a start too short to hold the header reads as
    damaged. Raises an ``InvalidImageError`` subclass with a message meant for the uploader."""
    max_pixels = settings.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(head)) as image:
                image_format = image.format or ""
                width, height = image.size
                cost = decoding.decode_cost(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise InvalidImageError(
            f"The image declares too many pixels; the limit is {max_pixels:,}.", field="image"
        ) from error
    except UnidentifiedImageError as error:
        raise UnsupportedImageError(
            f"The file is not an image in a supported format; upload {SUPPORTED_DESCRIPTION}.",
            field="image",
        ) from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise InvalidImageError(DAMAGED_MESSAGE, field="image") from error
    if image_format not in SUPPORTED_FORMATS:
        raise UnsupportedImageError(
            f"{image_format or 'This'} images are not supported; upload {SUPPORTED_DESCRIPTION}.",
            field="image",
        )
    _check_pixels(width, height, max_pixels)
    fitting = cost.within(settings.MAX_DECODE_BYTES)
    if fitting is None:
        raise ImageTooCostlyError(cost.refusal(settings.MAX_DECODE_BYTES), field="image")
    return ImageHeader(
        image_format=image_format,
        extension=SUPPORTED_FORMATS[image_format],
        width=width,
        height=height,
        decode_bytes=fitting.bytes,
    )


DAMAGED_MESSAGE = "The image is damaged or incomplete and cannot be read. Try exporting or uploading it again."

_PNG_END = b"IEND\xaeB`\x82"


def _is_complete(image_format: str, content: bytes) -> bool:
    """Catch the commonest damage, an upload cut short, from the bytes alone.

    A JPEG's last scan (after its last SOS marker, FFDA) must be followed by the
    end-of-image marker (FFD9): entropy-coded data never contains either (0xFF is
    stuffed), so a file cut inside its pixel data has no FFD9 after its last FFDA. A PNG
    ends with its IEND chunk.
    """
    if image_format in ("JPEG", "MPO"):
        return content.rfind(b"\xff\xd9") > content.rfind(b"\xff\xda")
    if image_format == "PNG":
        return _PNG_END in content[-64:]
    return True


THUMBNAIL_SIZE = 160  # px, the longer side of the thumbnails pages show


def thumbnail_jpeg(source: str | IO[bytes], *, size: int = THUMBNAIL_SIZE) -> bytes:
    """A small upright JPEG of a stored image, a path or an open file (EXIF orientation
    applied, any mode)."""
    with Image.open(source) as image:
        image.draft("RGB", (size * 2, size * 2))  # JPEG: decode at reduced scale, much faster
        return thumbnail_of(open_rgb(image), size)


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width < 1 or height < 1:
        raise InvalidImageError("The image has no pixels.", field="image")
    if width * height > max_pixels:
        raise InvalidImageError(
            f"The image is {width}x{height} pixels; the limit is {max_pixels:,} pixels.",
            field="image",
        )

"""Validation of uploaded bytes with Pillow: one place for size limits, formats,
decompression bombs and truncated files. Nothing is stored before this passes."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from django.conf import settings
from PIL import Image, UnidentifiedImageError

from .exceptions import ImageTooLargeError, InvalidImageError, UnsupportedImageError
from .preprocessing import open_rgb

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


@dataclass(frozen=True)
class ValidatedImage:
    image_format: str
    extension: str
    width: int
    height: int
    sha256: str
    size_bytes: int


def check_upload_size(size_bytes: int) -> None:
    """Refuse (413) a file over ``MAX_UPLOAD_BYTES``; callable before reading it."""
    limit = settings.MAX_UPLOAD_BYTES
    if size_bytes > limit:
        raise ImageTooLargeError(
            f"The file is {size_bytes / 1e6:.1f} MB; the limit is {limit / 1e6:.0f} MB.", field="image"
        )


def validate_image_bytes(content: bytes) -> ValidatedImage:
    """Check that ``content`` is a complete, decodable image of a supported format and size.

    Raises an ``InvalidImageError`` subclass with a message meant for the uploader.
    """
    if not content:
        raise InvalidImageError("The file is empty.", field="image")
    check_upload_size(len(content))
    max_pixels = settings.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(content)) as image:
                image_format = image.format or ""
                width, height = image.size
                if image_format not in SUPPORTED_FORMATS:
                    raise UnsupportedImageError(
                        f"{image_format or 'This'} images are not supported; upload {SUPPORTED_DESCRIPTION}.",
                        field="image",
                    )
                _check_pixels(width, height, max_pixels)
                # verify() then a full decode: verify catches broken PNG chunks,
                # the decode catches truncated JPEG data.
                image.verify()
            rgb = open_rgb(content)
            rgb.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise InvalidImageError(
            f"The image declares too many pixels; the limit is {max_pixels:,}.", field="image"
        ) from error
    except UnidentifiedImageError as error:
        raise UnsupportedImageError(
            f"The file is not an image Pillow can read; upload {SUPPORTED_DESCRIPTION}.",
            field="image",
        ) from error
    except InvalidImageError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise InvalidImageError(
            f"The image is damaged or incomplete and cannot be decoded ({error}).", field="image"
        ) from error
    return ValidatedImage(
        image_format=image_format,
        extension=SUPPORTED_FORMATS[image_format],
        width=width,
        height=height,
        sha256=hashlib.sha256(content).hexdigest(),
        size_bytes=len(content),
    )


def thumbnail_jpeg(path: str, *, size: int = 160) -> bytes:
    """A small upright JPEG of a stored image (EXIF orientation applied, any mode)."""
    with Image.open(path) as image:
        image.draft("RGB", (size * 2, size * 2))  # JPEG: decode at reduced scale, much faster
        thumb = open_rgb(image)
        thumb.thumbnail((size, size))
    buffer = io.BytesIO()
    thumb.save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width < 1 or height < 1:
        raise InvalidImageError("The image has no pixels.", field="image")
    if width * height > max_pixels:
        raise InvalidImageError(
            f"The image is {width}x{height} pixels; the limit is {max_pixels:,} pixels.",
            field="image",
        )

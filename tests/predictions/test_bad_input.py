"""The bad-input corpus: every kind of file a client may send, through the real API.

Each kind ends either in a correct prediction (run by the real model) or in a clear 4xx
with a message, never a 500; a rejected upload leaves no row and no file. The README's
"Bad input" table is this matrix.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image
from pytest_django import Settings
from rest_framework.test import APIClient

from predictions import services
from predictions.models import ModelVersion, Prediction, PredictionStatus
from tests.conftest import CAT_CLASSES, PHOTOS

CAT = Image.open(PHOTOS["chelsea"].path).convert("RGB")
ACCEPTED = "succeeded"


def _encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A tiny PNG whose header declares 900 megapixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 8
    return _encode(CAT.rotate(-90, expand=True), "JPEG", quality=92, exif=exif)


def _animated_gif() -> bytes:
    frames = [CAT.convert("P"), Image.new("P", CAT.size, 3)]
    return _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _multipage_tiff() -> bytes:
    return _encode(CAT, "TIFF", save_all=True, append_images=[Image.new("RGB", CAT.size, "blue")])


def _sixteen_bit() -> bytes:
    return _encode(Image.fromarray(np.asarray(CAT.convert("L"), dtype=np.uint16) * 257), "PNG")


def _palette_transparent() -> bytes:
    palette = CAT.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    palette.info["transparency"] = 0
    return _encode(palette, "PNG", transparency=0)


JPEG = _encode(CAT, "JPEG", quality=90)
PNG = _encode(CAT, "PNG")
FAILED_IN_WORKER = "failed"  # accepted from its header; the worker's decode finds the damage


def _damaged_pixels_png() -> bytes:
    """Header and IEND intact, a stretch of compressed pixel data zeroed."""
    middle = len(PNG) // 2
    return PNG[:middle] + bytes(2000) + PNG[middle + 2000 :]


# kind -> (filename, bytes factory, content type, expected: "succeeded" or (status, code))
CORPUS: dict[str, tuple[str, Callable[[], bytes], str, str | tuple[int, str]]] = {
    "zero-byte file": ("empty.jpg", lambda: b"", "image/jpeg", (400, "invalid_image")),
    "random bytes named .jpg": (
        "noise.jpg",
        lambda: os.urandom(4096),
        "image/jpeg",
        (415, "unsupported_media_type"),
    ),
    "truncated JPEG": ("cut.jpg", lambda: JPEG[: len(JPEG) // 2], "image/jpeg", (400, "invalid_image")),
    "truncated PNG": ("cut.png", lambda: PNG[: len(PNG) // 2], "image/png", (400, "invalid_image")),
    "PNG with damaged pixel data": ("damaged.png", _damaged_pixels_png, "image/png", FAILED_IN_WORKER),
    "plain text renamed .png": (
        "notes.png",
        lambda: b"hello, world\n" * 20,
        "image/png",
        (415, "unsupported_media_type"),
    ),
    "HTML renamed .png": (
        "page.png",
        lambda: b"<!doctype html><html><body>hi</body></html>",
        "image/png",
        (415, "unsupported_media_type"),
    ),
    "SVG renamed .png": (
        "vector.png",
        lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        "image/png",
        (415, "unsupported_media_type"),
    ),
    "PDF renamed .png": (
        "doc.png",
        lambda: b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF",
        "image/png",
        (415, "unsupported_media_type"),
    ),
    "decompression bomb (30000x30000 declared)": ("bomb.png", _bomb_png, "image/png", (400, "invalid_image")),
    "ICO (Pillow reads it, not offered)": (
        "icon.ico",
        lambda: _encode(CAT.resize((64, 64)), "ICO"),
        "image/x-icon",
        (415, "unsupported_media_type"),
    ),
    "HEIC": (
        "photo.heic",
        lambda: b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64,
        "image/heic",
        (415, "unsupported_media_type"),
    ),
    "extreme aspect ratio 1x10000": (
        "tall.png",
        lambda: _encode(Image.new("RGB", (1, 10000), "red"), "PNG"),
        "image/png",
        ACCEPTED,
    ),
    "extreme aspect ratio 10000x1": (
        "wide.png",
        lambda: _encode(Image.new("RGB", (10000, 1), "red"), "PNG"),
        "image/png",
        ACCEPTED,
    ),
    "1x1 image": (
        "dot.png",
        lambda: _encode(Image.new("RGB", (1, 1), "white"), "PNG"),
        "image/png",
        ACCEPTED,
    ),
    "16-bit greyscale PNG": ("deep.png", _sixteen_bit, "image/png", ACCEPTED),
    "CMYK JPEG": (
        "print.jpg",
        lambda: _encode(CAT.convert("CMYK"), "JPEG", quality=90),
        "image/jpeg",
        ACCEPTED,
    ),
    "palette PNG with transparency": ("palette.png", _palette_transparent, "image/png", ACCEPTED),
    "LA PNG": ("la.png", lambda: _encode(CAT.convert("LA"), "PNG"), "image/png", ACCEPTED),
    "RGBA PNG": ("rgba.png", lambda: _encode(CAT.convert("RGBA"), "PNG"), "image/png", ACCEPTED),
    "greyscale JPEG": ("grey.jpg", lambda: _encode(CAT.convert("L"), "JPEG"), "image/jpeg", ACCEPTED),
    "animated GIF (first frame)": ("anim.gif", _animated_gif, "image/gif", ACCEPTED),
    "multi-page TIFF (first page)": ("pages.tiff", _multipage_tiff, "image/tiff", ACCEPTED),
    "EXIF-rotated JPEG": ("rotated.jpg", _exif_rotated, "image/jpeg", ACCEPTED),
    "progressive JPEG": (
        "progressive.jpg",
        lambda: _encode(CAT, "JPEG", progressive=True, quality=90),
        "image/jpeg",
        ACCEPTED,
    ),
    "WebP": ("photo.webp", lambda: _encode(CAT, "WEBP", quality=90), "image/webp", ACCEPTED),
    "AVIF": ("photo.avif", lambda: _encode(CAT, "AVIF", quality=90), "image/avif", ACCEPTED),
    "BMP": ("photo.bmp", lambda: _encode(CAT, "BMP"), "image/bmp", ACCEPTED),
    "path traversal filename": ("../../etc/passwd.jpg", lambda: JPEG, "image/jpeg", ACCEPTED),
    "unicode filename": ("кошка 猫 🐈.jpg", lambda: JPEG, "image/jpeg", ACCEPTED),
    "300-character filename": ("c" * 296 + ".jpg", lambda: JPEG, "image/jpeg", ACCEPTED),
    "wrong Content-Type (JPEG sent as text/plain)": ("cat.jpg", lambda: JPEG, "text/plain", ACCEPTED),
}
CAT_KINDS = {
    "CMYK JPEG", "EXIF-rotated JPEG", "progressive JPEG", "WebP", "AVIF", "BMP", "RGBA PNG",
    "animated GIF (first frame)", "multi-page TIFF (first page)", "path traversal filename",
}  # fmt: skip


def _files(media_dir: Path) -> set[Path]:
    return {p for p in media_dir.rglob("*") if p.is_file()}


@pytest.mark.parametrize("kind", list(CORPUS))
def test_corpus_kind_gets_a_prediction_or_a_clear_4xx(
    kind: str, api: APIClient, active_model: ModelVersion, media_dir: Path
) -> None:
    filename, make, content_type, expected = CORPUS[kind]
    before = _files(media_dir)

    response = api.post(
        "/api/v1/predictions/",
        {"image": SimpleUploadedFile(filename, make(), content_type=content_type)},
        format="multipart",
    )

    if expected == FAILED_IN_WORKER:
        assert response.status_code == 202, response.content
        services.prediction_process(prediction_id=response.json()["id"])
        prediction = Prediction.objects.get(id=response.json()["id"])
        assert prediction.status == PredictionStatus.FAILED
        assert prediction.error.startswith("The image is damaged or incomplete")
        assert "/" not in prediction.error
    elif expected == ACCEPTED:
        assert response.status_code == 202, response.content
        prediction_id = response.json()["id"]
        services.prediction_process(prediction_id=prediction_id)  # what the worker runs
        prediction = Prediction.objects.get(id=prediction_id)
        assert prediction.status == PredictionStatus.SUCCEEDED, prediction.error
        assert prediction.label
        assert len(prediction.top_predictions) == 5
        assert "/" not in prediction.original_filename
        assert len(prediction.original_filename) <= 255
        assert str(prediction.image).startswith("uploads/")
        assert prediction.id.hex in str(prediction.image)
        if kind in CAT_KINDS:
            assert {p["class_id"] for p in prediction.top_predictions[:3]} & CAT_CLASSES, prediction.top_predictions
    else:
        assert isinstance(expected, tuple)
        status, code = expected
        assert response.status_code == status, response.content
        error = response.json()["error"]
        assert error["code"] == code
        assert len(error["message"]) > 15
        assert Prediction.objects.count() == 0
        assert _files(media_dir) == before


def test_file_over_the_size_limit_is_413_and_leaves_nothing(
    api: APIClient, settings: Settings, media_dir: Path
) -> None:
    settings.MAX_UPLOAD_BYTES = 50_000
    before = _files(media_dir)

    response = api.post("/api/v1/predictions/", {"image": SimpleUploadedFile("big.png", PNG)}, format="multipart")

    assert response.status_code == 413
    assert "limit" in response.json()["error"]["message"]
    assert Prediction.objects.count() == 0
    assert _files(media_dir) == before


def test_multipart_with_no_file_is_400(api: APIClient) -> None:
    response = api.post("/api/v1/predictions/", {"top_k": 5}, format="multipart")

    assert response.status_code == 400
    assert "image" in response.json()["error"]["message"]


def test_unicode_and_long_names_are_kept_for_people_but_not_used_as_paths(
    api: APIClient, active_model: ModelVersion
) -> None:
    long_name = "c" * 296 + ".jpg"
    for name in ["кошка 猫 🐈.jpg", long_name, "../../etc/passwd.jpg"]:
        response = api.post("/api/v1/predictions/", {"image": SimpleUploadedFile(name, JPEG)}, format="multipart")
        assert response.status_code == 202
    names = set(Prediction.objects.values_list("original_filename", flat=True))
    assert names == {"кошка 猫 🐈.jpg", long_name[-255:], "passwd.jpg"}


def test_the_default_size_limit_is_stated_as_people_read_it(api: APIClient, settings: Settings) -> None:
    settings.MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # the default: 20 MB in a file manager, not "21 MB"
    oversized = SimpleUploadedFile("huge.png", b"\x89PNG" + b"\0" * (25 * 1024 * 1024))

    response = api.post("/api/v1/predictions/", {"image": oversized}, format="multipart")

    assert response.status_code == 413
    assert response.json()["error"]["message"] == "The file is 25 MB; the limit is 20 MB."

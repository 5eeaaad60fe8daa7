"""Image preprocessing shared by the served model runner and training/.

Pure Pillow + numpy: no Django, no TensorFlow, so training/ and the runner
import the very same code and cannot drift apart.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps

from .decoding import open_within

# Centre-crop fraction used by EfficientNet evaluation (224 of 256).
CROP_FRACTION = 224 / 256


def open_rgb(
    source: bytes | str | Path | Image.Image, *, max_decode_bytes: int | None = None, min_side: int | None = None
) -> Image.Image:
    """Decode an image, apply its EXIF orientation and convert any mode to RGB.

    Animated formats give their first frame. 16-bit and float greyscale are
    rescaled to 8 bit; transparent images are composited on white. With
    ``max_decode_bytes`` the decode stays within that budget (``ml.decoding``): a JPEG
    over it is decoded reduced, anything else raises ``ImageTooCostlyError`` (a
    ``ValueError``) before a pixel is decoded. With ``min_side`` a large image is reduced
    right after decoding (``reduce_early``), before its mode is converted.
    """
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, bytes):
        image = Image.open(io.BytesIO(source))
    else:
        image = Image.open(source)
    image = open_within(image, max_decode_bytes)
    image.seek(0)
    image = ImageOps.exif_transpose(image)
    if min_side:
        image = reduce_early(image, min_side)
    return _to_rgb(image)


# Modes Image.reduce averages directly (others are converted first, at full size).
REDUCE_MODES = ("L", "LA", "RGB", "RGBA")


def reduce_early(image: Image.Image, min_side: int) -> Image.Image:
    """``image`` box-averaged by the largest whole factor that keeps its shorter side at
    least ``min_side`` (``Image.reduce``), so that converting its mode (compositing an
    alpha channel, say) and resampling it cost a fraction of the decode, not several times
    it. The classifier asks for three times the side it resamples from, as Pillow's
    ``resize(reducing_gap=3.0)`` does: the result is indistinguishable from resampling the
    full image (Pillow's documentation), at a fraction of the cost for a large image."""
    factor = min(image.size) // min_side
    if factor < 2 or image.mode not in REDUCE_MODES:
        return image
    return image.reduce(factor)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
        return Image.fromarray(scaled.astype(np.uint8), "L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode != "RGB":
        return image.convert("RGB")
    return image


def thumbnail_of(image: Image.Image, size: int) -> bytes:
    """A small JPEG of a decoded RGB image (``open_rgb``): aspect ratio kept, at most
    ``size`` on each side, never enlarged."""
    thumb = image.copy()
    thumb.thumbnail((size, size))
    buffer = io.BytesIO()
    thumb.save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def to_model_input(image: Image.Image, input_size: int) -> NDArray[np.float32]:
    """Centre-crop and resize to ``input_size`` square; float32 HxWx3 in [0, 255].

    Equivalent to "resize the shorter side to input_size / 0.875, then centre-crop
    input_size", done in one resampling step from the crop box in source
    coordinates, so memory stays bounded for extreme aspect ratios (1x10000).
    Normalisation ((x - 127) / 128 for EfficientNet-Lite) lives inside the exported
    model, so every engine is fed the same raw pixel values.
    """
    width, height = image.size
    side = min(width, height) * CROP_FRACTION
    left = (width - side) / 2
    top = (height - side) / 2
    cropped = image.resize((input_size, input_size), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side))
    return np.asarray(cropped, dtype=np.float32)

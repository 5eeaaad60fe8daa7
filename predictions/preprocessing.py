"""Image preprocessing shared by the served model runner and training/.

Pure Pillow + numpy: no Django, no TensorFlow, so training/ and the runner
import the very same code and cannot drift apart.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# Centre-crop fraction used by EfficientNet evaluation (224 of 256).
CROP_FRACTION = 224 / 256


def open_rgb(source: bytes | str | Path | Image.Image) -> Image.Image:
    """Decode an image, apply its EXIF orientation and convert any mode to RGB.

    Animated formats give their first frame. 16-bit and float greyscale are
    rescaled to 8 bit; transparent images are composited on white.
    """
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, bytes):
        image = Image.open(io.BytesIO(source))
    else:
        image = Image.open(source)
    image.seek(0)
    image = ImageOps.exif_transpose(image)
    return _to_rgb(image)


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


def to_model_input(image: Image.Image, input_size: int) -> np.ndarray:
    """Resize the shorter side, centre-crop ``input_size`` square, return float32 HxWx3 in [0, 255].

    Normalisation ((x - 127) / 128 for EfficientNet-Lite) lives inside the exported
    model, so every engine is fed the same raw pixel values.
    """
    resize_to = round(input_size / CROP_FRACTION)
    width, height = image.size
    scale = resize_to / min(width, height)
    new_size = (max(input_size, round(width * scale)), max(input_size, round(height * scale)))
    resized = image.resize(new_size, Image.Resampling.BICUBIC)
    left = (new_size[0] - input_size) // 2
    top = (new_size[1] - input_size) // 2
    cropped = resized.crop((left, top, left + input_size, top + input_size))
    return np.asarray(cropped, dtype=np.float32)

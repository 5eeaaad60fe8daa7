"""Schemathesis hooks for the contract run (tests/contract/schemathesis.toml loads this file).

In this API a ``format: binary`` value is always an uploaded image (the ``image`` part of
a submission). Whether some bytes decode as an image is nothing a JSON Schema can say:
left alone, schemathesis sends random bytes as a "valid" upload and the server rightly
answers 415. Here every binary value drawn as valid is a real image, made with Pillow in
one of the formats the server takes (noise of a random size and colour), so valid
submissions reach the model; schemathesis never mutates binary values to make a request
invalid, so invalid ones are exactly what it makes invalid.
"""

from __future__ import annotations

import io

import schemathesis
from hypothesis import strategies as st
from PIL import Image

# The formats the server takes (predictions.images.SUPPORTED_FORMATS) that Pillow writes here.
FORMATS = ["JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "AVIF"]


def _encode(image_format: str, width: int, height: int, seed: int) -> bytes:
    noise = Image.effect_noise((width, height), 40 + seed % 60).convert("RGB")
    tint = Image.new("RGB", (width, height), (seed % 256, (seed >> 8) % 256, (seed >> 16) % 256))
    buffer = io.BytesIO()
    Image.blend(noise, tint, 0.5).save(buffer, image_format)
    return buffer.getvalue()


IMAGES = st.builds(
    _encode, st.sampled_from(FORMATS), st.integers(16, 96), st.integers(16, 96), st.integers(0, 2**24 - 1)
)

schemathesis.openapi.format("binary", IMAGES)

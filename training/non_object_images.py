"""Inputs that are not photos of objects: uniform and Gaussian noise, solid colours, rendered
text, stripes, checkerboards and gradients, generated with a fixed seed. ``training.uncertainty``
measures how often a model says "Not sure" on them."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

GENERATED_SIZE = (320, 256)


def _noise_uniform(rng: np.random.Generator) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (*GENERATED_SIZE[::-1], 3), dtype=np.uint8))


def _noise_gaussian(rng: np.random.Generator) -> Image.Image:
    sigma = rng.uniform(20, 70)
    pixels = rng.normal(rng.uniform(80, 180), sigma, (*GENERATED_SIZE[::-1], 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _solid(rng: np.random.Generator) -> Image.Image:
    colour = tuple(int(v) for v in rng.integers(0, 256, 3))
    return Image.new("RGB", GENERATED_SIZE, colour)


WORDS = ("invoice", "total", "amount", "due", "please", "pay", "within", "thirty", "days", "reference", "number")


def _text(rng: np.random.Generator) -> Image.Image:
    dark = bool(rng.integers(0, 2))
    image = Image.new("RGB", GENERATED_SIZE, (20, 20, 20) if dark else (250, 250, 245))
    draw = ImageDraw.Draw(image)
    size = int(rng.integers(14, 40))
    font = ImageFont.load_default(size=size)
    y = 8
    while y < GENERATED_SIZE[1] - size:
        line = " ".join(rng.choice(WORDS, size=int(rng.integers(2, 6))))
        draw.text((8, y), line, fill=(230, 230, 230) if dark else (10, 10, 10), font=font)
        y += int(size * 1.4)
    return image


def _stripes(rng: np.random.Generator) -> Image.Image:
    width, height = GENERATED_SIZE
    period = int(rng.integers(6, 60))
    y, x = np.mgrid[0:height, 0:width]
    angle = rng.choice([0.0, 90.0, 45.0, 135.0])
    coordinate = x * np.cos(np.radians(angle)) + y * np.sin(np.radians(angle))
    on = (coordinate // (period / 2)).astype(int) % 2 == 1
    colours = rng.integers(0, 256, (2, 3))
    return Image.fromarray(np.where(on[..., None], colours[0], colours[1]).astype(np.uint8))


def _checkerboard(rng: np.random.Generator) -> Image.Image:
    width, height = GENERATED_SIZE
    cell = int(rng.integers(8, 64))
    y, x = np.mgrid[0:height, 0:width]
    on = ((x // cell) + (y // cell)) % 2 == 1
    colours = rng.integers(0, 256, (2, 3))
    return Image.fromarray(np.where(on[..., None], colours[0], colours[1]).astype(np.uint8))


def _gradient(rng: np.random.Generator) -> Image.Image:
    width, height = GENERATED_SIZE
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    if rng.integers(0, 2):
        t = np.hypot(x - width / 2, y - height / 2) / np.hypot(width / 2, height / 2)
    else:
        angle = np.radians(rng.uniform(0, 360))
        t = (x * np.cos(angle) + y * np.sin(angle)) / (abs(width * np.cos(angle)) + abs(height * np.sin(angle)))
        t = t - t.min()
    t = np.clip(t / max(float(t.max()), 1e-9), 0, 1)[..., None]
    start, end = rng.integers(0, 256, (2, 3))
    return Image.fromarray((start * (1 - t) + end * t).astype(np.uint8))


GENERATORS = {
    "uniform noise": _noise_uniform,
    "gaussian noise": _noise_gaussian,
    "solid colour": _solid,
    "text": _text,
    "stripes": _stripes,
    "checkerboard": _checkerboard,
    "gradient": _gradient,
}


def non_object_images(per_kind: int = 10, seed: int = 0) -> list[tuple[str, bytes]]:
    """``per_kind`` generated PNGs of each kind in ``GENERATORS``: ``(kind, bytes)``."""
    rng = np.random.default_rng(seed)
    images = []
    for kind, generate in GENERATORS.items():
        for _ in range(per_kind):
            buffer = io.BytesIO()
            generate(rng).save(buffer, "PNG")
            images.append((kind, buffer.getvalue()))
    return images

"""Real image sets that ship inside PyPI packages, written out as ``DIR/<class>/*.png``.

    python -m training.datasets digits --out var/datasets/digits
    python -m training.datasets skimage-tiles --out var/datasets/skimage-tiles

Nothing is downloaded at run time: both sets are files inside installed packages.

``digits``
    scikit-learn's bundled copy of the UCI handwritten digits: 1,797 real 8x8 scans
    (16 grey levels) of digits written by 43 people, 10 classes (0-9, ~180 each). Each scan,
    with a one-cell white margin, is written as a PNG upscaled to ``--size`` pixels
    (nearest neighbour, so the pixels are the scan's own): far from ImageNet's photographs.
``skimage-tiles``
    The fallback for a second set, as no PyPI package found offline ships a second real
    labelled image collection: non-overlapping 32x32 tiles of ten photographs and
    micrographs that ship with scikit-image (brick, grass, gravel, moon, camera man,
    astronaut, immunohistochemistry slide, retina, Hubble deep field, coffee), one class
    per source image, upscaled like the digits. Every tile is real pixels and no pixel is
    in two tiles, but tiles of one class come from one photograph, so this is a texture /
    source-recognition task, easier to generalise within than a set of independent photos.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from training.test_photos import skimage_data_dir

DEFAULT_SIZE = 80
TILE = 32
TILES_PER_CLASS = 196  # 14 x 14 tiles of a 448x448 square: every source has at least that
TILE_SOURCES = {
    "brick": "brick.png",
    "grass": "grass.png",
    "gravel": "gravel.png",
    "moon": "moon.png",
    "camera": "camera.png",
    "astronaut": "astronaut.png",
    "ihc_slide": "ihc.png",
    "retina": "retina.jpg",
    "hubble": "hubble_deep_field.jpg",
    "coffee": "coffee.png",
}
DATASETS = ("digits", "skimage-tiles")


def write_digits(out: Path, size: int = DEFAULT_SIZE) -> int:
    """scikit-learn's 1,797 8x8 digit scans as ``out/<digit>/NNNN.png``; returns the count."""
    from sklearn.datasets import load_digits  # type: ignore[import-untyped]

    digits = load_digits()
    count = 0
    for index, (scan, target) in enumerate(zip(digits.images, digits.target, strict=True)):
        # 0..16 ink levels -> dark ink on white paper, as the digit was written.
        pixels = (255 - np.asarray(scan, dtype=np.float64) * (255 / 16)).round().astype(np.uint8)
        # A one-cell paper margin (10x10 grid), so the serving centre crop never cuts ink.
        pixels = np.pad(pixels, 1, constant_values=255)
        folder = out / str(int(target))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, "L").resize((size, size), Image.Resampling.NEAREST).save(folder / f"{index:04d}.png")
        count += 1
    return count


def write_skimage_tiles(out: Path, size: int = DEFAULT_SIZE) -> int:
    """Non-overlapping tiles of ten scikit-image photographs as ``out/<source>/NNNN.png``."""
    count = 0
    for name, filename in TILE_SOURCES.items():
        image = Image.open(skimage_data_dir() / filename).convert("RGB")
        width, height = image.size
        # The centre 448x448 square (or all of it), cut into a 14 x 14 grid.
        left, top = (width - 448) // 2, (height - 448) // 2
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(TILES_PER_CLASS):
            row, col = divmod(index, 448 // TILE)
            box = (left + col * TILE, top + row * TILE, left + (col + 1) * TILE, top + (row + 1) * TILE)
            tile = image.crop(box).resize((size, size), Image.Resampling.NEAREST)
            tile.save(folder / f"{index:04d}.png")
            count += 1
    return count


def materialise(name: str, out: str | Path, size: int = DEFAULT_SIZE, force: bool = False) -> Path:
    """Write data set ``name`` into ``out`` as class folders (kept if already there)."""
    target = Path(out)
    if target.exists() and any(target.iterdir()):
        if not force:
            print(f"{target} exists; kept (use --force to rewrite)")
            return target
        shutil.rmtree(target)
    target.mkdir(parents=True, exist_ok=True)
    if name == "digits":
        count = write_digits(target, size)
    elif name == "skimage-tiles":
        count = write_skimage_tiles(target, size)
    else:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    classes = sum(1 for p in target.iterdir() if p.is_dir())
    print(f"{target}: {count} images in {classes} classes")
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=DATASETS)
    parser.add_argument("--out", required=True, help="folder to write <class>/*.png into")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help="side of the written PNGs in pixels")
    parser.add_argument("--force", action="store_true", help="rewrite an existing folder")
    args = parser.parse_args(argv)
    materialise(args.name, args.out, args.size, args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())

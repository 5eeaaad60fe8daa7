"""Real image sets that ship inside PyPI packages, written out as ``DIR/<class>/*.png``
(or, multi-label, ``DIR/*.png`` + ``DIR/labels.csv``).

    python -m training.datasets digits --out var/datasets/digits
    python -m training.datasets skimage-tiles --out var/datasets/skimage-tiles
    python -m training.datasets multi-digits --out var/datasets/multi-digits [--count 2000]

Nothing is downloaded at run time: every set is made of files inside installed packages.

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
``multi-digits`` (multi-label)
    Composites of the same real scans: each image is a white square canvas with 2 (one
    time in five 1, one in five 3) of scikit-learn's digit scans pasted side by side, in a
    row at a random height (a 36x36-cell canvas, 8x8-cell scans, written at 4 px per cell
    by default: 144 px), as ``DIR/NNNN.png`` with ``DIR/labels.csv``
    (``file,labels``; labels = the distinct digits present, separated by ``;``, as
    ``training.finetune --multi-label`` reads). The scans are real; their arrangement is
    synthetic. A scan is used by about ``count * 2 / 1797`` composites, so with more than
    ~900 images the same scan appears in several (in different company and position), and
    a held-out composite may share a scan with a training one. Seeded: the same command
    writes the same files.
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
DATASETS = ("digits", "skimage-tiles", "multi-digits")
MULTI_DIGITS_COUNT = 2000
MULTI_DIGITS_SIZE = 144  # 4 px per scan cell
# The composite's layout in scan cells (8x8 each): up to three scans side by side with a gap
# of 2 cells, inside a 36x36 canvas whose outer 4 cells stay blank, so the serving centre
# crop (87.5 %: 2.25 cells off each side) never cuts ink.
CANVAS_CELLS = 36
SCAN_CELLS = 8
GAP_CELLS = 2
MARGIN_CELLS = 4


def write_digits(out: Path, size: int = DEFAULT_SIZE) -> int:
    """scikit-learn's 1,797 8x8 digit scans as ``out/<digit>/NNNN.png``; returns the count."""
    from sklearn.datasets import load_digits  # type: ignore[import-untyped]

    digits = load_digits()
    count = 0
    for index, (scan, target) in enumerate(zip(digits.images, digits.target, strict=True)):
        pixels = _ink_on_paper(scan)
        # A one-cell paper margin (10x10 grid), so the serving centre crop never cuts ink.
        pixels = np.pad(pixels, 1, constant_values=255)
        folder = out / str(int(target))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, "L").resize((size, size), Image.Resampling.NEAREST).save(folder / f"{index:04d}.png")
        count += 1
    return count


def _ink_on_paper(scan: np.ndarray) -> np.ndarray:
    """A 0..16 ink scan as dark ink on white paper, as the digit was written (uint8)."""
    return (255 - np.asarray(scan, dtype=np.float64) * (255 / 16)).round().astype(np.uint8)


def write_multi_digits(out: Path, size: int = MULTI_DIGITS_SIZE, count: int = MULTI_DIGITS_COUNT, seed: int = 0) -> int:
    """``count`` composites of 1-3 real digit scans as ``out/NNNN.png`` + ``out/labels.csv``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    # Scans are dealt from shuffled passes over all of them, so each is used about equally.
    deck: list[int] = []
    rows = ["file,labels"]
    for index in range(count):
        how_many = int(rng.choice([1, 2, 3], p=[0.2, 0.6, 0.2]))
        picked = []
        for _ in range(how_many):
            if not deck:
                deck = [int(i) for i in rng.permutation(len(digits.images))]
            picked.append(deck.pop())
        canvas = np.full((CANVAS_CELLS, CANVAS_CELLS), 255, dtype=np.uint8)
        width = how_many * SCAN_CELLS + (how_many - 1) * GAP_CELLS
        free = CANVAS_CELLS - 2 * MARGIN_CELLS
        top = MARGIN_CELLS + int(rng.integers(0, free - SCAN_CELLS + 1))
        left = MARGIN_CELLS + int(rng.integers(0, free - width + 1))
        for position, scan_index in enumerate(picked):
            x = left + position * (SCAN_CELLS + GAP_CELLS)
            canvas[top : top + SCAN_CELLS, x : x + SCAN_CELLS] = _ink_on_paper(digits.images[scan_index])
        name = f"{index:04d}.png"
        Image.fromarray(canvas, "L").resize((size, size), Image.Resampling.NEAREST).save(out / name)
        labels = sorted({str(int(digits.target[i])) for i in picked})
        rows.append(f"{name},{';'.join(labels)}")
    (out / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
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


def materialise(
    name: str, out: str | Path, size: int | None = None, force: bool = False, count: int | None = None
) -> Path:
    """Write data set ``name`` into ``out`` (kept if already there): class folders, or for
    ``multi-digits`` ``count`` composites and ``labels.csv``."""
    target = Path(out)
    if target.exists() and any(target.iterdir()):
        if not force:
            print(f"{target} exists; kept (use --force to rewrite)")
            return target
        shutil.rmtree(target)
    target.mkdir(parents=True, exist_ok=True)
    if name == "digits":
        written = write_digits(target, size or DEFAULT_SIZE)
    elif name == "skimage-tiles":
        written = write_skimage_tiles(target, size or DEFAULT_SIZE)
    elif name == "multi-digits":
        written = write_multi_digits(target, size or MULTI_DIGITS_SIZE, count or MULTI_DIGITS_COUNT)
        print(f"{target}: {written} composites of 1-3 digit scans, labels in {target / 'labels.csv'}")
        return target
    else:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    classes = sum(1 for p in target.iterdir() if p.is_dir())
    print(f"{target}: {written} images in {classes} classes")
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=DATASETS)
    parser.add_argument("--out", required=True, help="folder to write <class>/*.png into")
    parser.add_argument(
        "--size",
        type=int,
        help=f"side of the written PNGs in pixels (default {DEFAULT_SIZE}; multi-digits {MULTI_DIGITS_SIZE})",
    )
    parser.add_argument("--force", action="store_true", help="rewrite an existing folder")
    parser.add_argument("--count", type=int, help=f"multi-digits: how many composites (default {MULTI_DIGITS_COUNT})")
    args = parser.parse_args(argv)
    materialise(args.name, args.out, args.size, args.force, args.count)
    return 0


if __name__ == "__main__":
    sys.exit(main())

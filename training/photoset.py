"""A set of distinct real photos for benchmarks and engine agreement checks, built offline.

The sources are the photographs that ship inside scikit-image (``skimage/data``: a cat,
coffee, a rocket, motorbikes, the astronaut, the moon, textures, microscope slides...).
Each yields many crops at several scales and positions, optionally mirrored, encoded as
JPEG: every file is a real photograph, every file's bytes differ, so a duplicate-result
cache can never flatter a figure measured on them.

    python -m training.photoset --count 600 --out var/photoset
"""

from __future__ import annotations

import argparse
import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, ImageOps

from training.test_photos import skimage_data_dir

# Photographs only: no drawings, logos, synthetic phantoms or text scans.
SOURCE_PHOTOS = (
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "astronaut.png",
    "camera.png",
    "coins.png",
    "moon.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "retina.jpg",
    "brick.png",
    "grass.png",
    "gravel.png",
    "cell.png",
    "clock_motion.png",
    "microaneurysms.png",
)
SCALES = (1.0, 0.85, 0.7, 0.55)
# Crop centres as fractions of the free margin (0 = left/top edge, 1 = right/bottom edge).
POSITIONS = ((0.5, 0.5), (0.0, 0.0), (1.0, 1.0), (0.0, 1.0), (1.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 0.5), (1.0, 0.5))


def _crop_boxes(width: int, height: int) -> list[tuple[int, int, int, int]]:
    boxes = []
    for scale in SCALES:
        crop_w, crop_h = max(32, round(width * scale)), max(32, round(height * scale))
        for fx, fy in POSITIONS[:1] if scale == 1.0 else POSITIONS:
            left, top = round((width - crop_w) * fx), round((height - crop_h) * fy)
            boxes.append((left, top, left + crop_w, top + crop_h))
    return boxes


def source_crops(name: str) -> Iterator[Image.Image]:
    """Every crop of one source photo, then every crop of its mirror image."""
    image = Image.open(skimage_data_dir() / name).convert("RGB")
    boxes = _crop_boxes(*image.size)
    for source in (image, ImageOps.mirror(image)):
        for box in boxes:
            yield source.crop(box)


def photoset(count: int, out_dir: Path | str, *, quality: int = 90) -> list[Path]:
    """``count`` distinct real photos as JPEG files in ``out_dir`` (built once, then reused).

    Files are named ``NNNN-<source>.jpg``; the sources take turns, so any prefix of the
    list mixes every photo.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    existing = sorted(out.glob("*.jpg"))
    if len(existing) >= count:
        return existing[:count]
    for stale in existing:
        stale.unlink()
    generators = {name: source_crops(name) for name in SOURCE_PHOTOS}
    paths: list[Path] = []
    seen: set[str] = set()
    while generators and len(paths) < count:
        for name in list(generators):
            crop = next(generators[name], None)
            if crop is None:
                del generators[name]
                continue
            buffer = io.BytesIO()
            crop.save(buffer, "JPEG", quality=quality)
            content = buffer.getvalue()
            digest = hashlib.sha256(content).hexdigest()
            if digest in seen or len(paths) >= count:
                continue
            seen.add(digest)
            path = out / f"{len(paths):04d}-{name.rsplit('.', 1)[0]}.jpg"
            path.write_bytes(content)
            paths.append(path)
    if len(paths) < count:
        raise ValueError(f"Only {len(paths)} distinct crops can be made; ask for at most that many.")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=600)
    parser.add_argument("--out", type=Path, default=Path("var/photoset"))
    args = parser.parse_args()
    paths = photoset(args.count, args.out)
    total = sum(p.stat().st_size for p in paths)
    print(f"{len(paths)} distinct photos in {args.out} ({total / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()

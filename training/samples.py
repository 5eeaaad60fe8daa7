"""What an evaluation runs on: samples (an image file and the class ids that count as correct)
from the shipped test photos, from a ``DIR/<class_id>/*`` tree or from one part of a
fine-tuned model's ``splits.json``, and their batches preprocessed exactly as the runner does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ml.preprocessing import open_rgb, to_model_input
from training.export import SPLITS_FILE
from training.test_photos import TEST_PHOTOS

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
BATCH_SIZE = 16


@dataclass
class Sample:
    """One image to evaluate and the class ids that count as correct."""

    name: str
    path: Path
    expected: tuple[str, ...]


def photo_samples() -> list[Sample]:
    """The shipped test photos as samples."""
    return [Sample(p.name, p.path, p.expected) for p in TEST_PHOTOS]


def folder_samples(images: str | Path) -> list[Sample]:
    """Samples from ``images/<class_id>/*``."""
    root = Path(images)
    samples = [
        Sample(f"{cls.name}/{f.name}", f, (cls.name,))
        for cls in sorted(p for p in root.iterdir() if p.is_dir())
        for f in sorted(cls.iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not samples:
        raise ValueError(f"no images found under {root}/<class_id>/")
    return samples


def split_samples(model: str | Path, data: str | Path, split: str) -> list[Sample]:
    """``folder_samples(data)``, restricted to one part of the model's ``splits.json``."""
    samples = folder_samples(data)
    if split == "all":
        return samples
    splits_path = Path(model) / SPLITS_FILE
    if not splits_path.is_file():
        raise ValueError(f"{model} has no {SPLITS_FILE} (only models from training.finetune do); use --split all")
    wanted = set(json.loads(splits_path.read_text(encoding="utf-8"))[split])
    root = Path(data)
    kept = [s for s in samples if s.path.relative_to(root).as_posix() in wanted]
    if len(kept) != len(wanted):
        raise ValueError(f"{data}: {len(wanted) - len(kept)} of the {split} files in splits.json are missing")
    return kept


def photo_batch(paths: Sequence[Path], input_size: int) -> NDArray[np.float32]:
    """Real photos preprocessed exactly as the runner does, as one float32 batch."""
    return np.stack([to_model_input(open_rgb(path), input_size) for path in paths])


def load_batch(samples: Sequence[Sample], input_size: int) -> NDArray[np.float32]:
    """Decode and preprocess samples with the shared serving preprocessing."""
    return photo_batch([sample.path for sample in samples], input_size)

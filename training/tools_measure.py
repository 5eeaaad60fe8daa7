"""Top-1 and latency of an exported model (or ensemble, or TTA setting) on labelled real
images, the one measurement the model tools (ensemble, TTA, distillation, pruning) report.

Two labelled sets, each split into a validation half (which the tools may use to choose:
ensemble weights) and a held-out half (the figures in the cards and docs):

- ``photo-crops``: the 280 labelled crops of the shipped ImageNet test photos
  (``training.uncertainty.labelled_photo_crops``: 4 scales x 9 positions, mirrored), for
  ImageNet models; crops of one photo are correlated, so the figures are a small sample's;
- a fine-tuned model's data folder (``DIR/<class>/*``): its ``splits.json`` validation and
  test files.

Latency is the model call per image in batches of ``BATCH`` on preprocessed inputs (with
every TTA view), the fastest of ``REPEATS`` passes (the least disturbed by other jobs on a
shared machine), on this machine (``cpu_model()``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ml.runner import Classifier
from ml.tta import TTA
from training.export import SPLITS_FILE
from training.finetune_card import cpu_model
from training.samples import folder_samples

PHOTO_CROPS = "photo-crops"
BATCH = 16
REPEATS = 5


@dataclass(frozen=True)
class Labelled:
    """One image and the class ids that count as correct."""

    name: str
    source: bytes | Path
    expected: tuple[str, ...]


@dataclass
class Measurement:
    """What one model (with one TTA setting) scored and cost."""

    model: str
    tta: dict[str, Any]
    count: int
    top1: float
    inference_ms_per_image: float
    cpu: str

    def record(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "top1": round(self.top1, 4),
            "inference_ms_per_image": round(self.inference_ms_per_image, 2),
        }


def labelled_sets(data: str, model_dir: Path | None = None) -> tuple[list[Labelled], list[Labelled]]:
    """``(validation, held_out)`` of ``photo-crops`` or of a data folder (see the module doc)."""
    if data == PHOTO_CROPS:
        from training.uncertainty import labelled_photo_crops

        crops = [Labelled(name, content, expected) for name, expected, content in labelled_photo_crops()]
        return crops[0::2], crops[1::2]
    samples = [Labelled(s.name, s.path, s.expected) for s in folder_samples(data)]
    splits_path = (model_dir / SPLITS_FILE) if model_dir is not None else None
    if splits_path is None or not splits_path.is_file():
        return samples[0::2], samples[1::2]
    splits = json.loads(splits_path.read_text(encoding="utf-8"))
    by_name = {s.name: s for s in samples}
    return [by_name[n] for n in splits["val"] if n in by_name], [by_name[n] for n in splits["test"] if n in by_name]


def probabilities(classifier: Classifier, images: Sequence[Labelled]) -> np.ndarray:
    """Scores of every image through the runner's own preprocessing (and TTA views)."""
    chunks = []
    for start in range(0, len(images), BATCH):
        chunk = images[start : start + BATCH]
        views = np.concatenate([classifier.preprocess_views(image.source) for image in chunk])
        chunks.append(classifier.predict_views(views, len(chunk)))
    return np.concatenate(chunks)


def top1(classifier: Classifier, images: Sequence[Labelled], scores: np.ndarray) -> float:
    class_ids = [entry["class_id"] for entry in classifier.labels]
    return float(
        np.mean([class_ids[int(row.argmax())] in image.expected for row, image in zip(scores, images, strict=True)])
    )


def measure(model_dir: Path, images: Sequence[Labelled], *, tta: TTA | None = None) -> Measurement:
    """Top-1 of ``model_dir`` on ``images`` and its model time per image (see the module doc)."""
    classifier = Classifier(Path(model_dir), tta=tta).load()
    classifier.warmup()
    scores = probabilities(classifier, images)
    sample = np.concatenate([classifier.preprocess_views(image.source) for image in images[:BATCH]])
    timings = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        classifier.predict_views(sample, min(BATCH, len(images)))
        timings.append((time.perf_counter() - started) * 1000 / min(BATCH, len(images)))
    return Measurement(
        model=f"{classifier.name} v{classifier.version}",
        tta=classifier.tta.record(),
        count=len(images),
        top1=top1(classifier, images, scores),
        inference_ms_per_image=min(timings),
        cpu=cpu_model(),
    )


def table(rows: Sequence[dict[str, Any]], baseline: dict[str, Any]) -> str:
    """Markdown table of measurement records against ``baseline`` (top-1 points, latency x)."""
    lines = ["| model | TTA views | top-1 | vs baseline | ms / image | x baseline |", "|---|---|---|---|---|---|"]
    for row in rows:
        views = row["tta"]["crops"] * (2 if row["tta"]["flip"] else 1)
        lines.append(
            f"| {row['label']} | {views} | {row['top1']:.2%} | {(row['top1'] - baseline['top1']) * 100:+.1f} pt | "
            f"{row['inference_ms_per_image']:.1f} | "
            f"{row['inference_ms_per_image'] / baseline['inference_ms_per_image']:.2f} |"
        )
    return "\n".join(lines)

"""Top-1 / top-5 accuracy of an exported model directory.

    python -m training.evaluate --model models/efficientnet_lite0/1 [--images DIR] [--tflite]

Without ``--images`` it runs on the shipped test photos (:mod:`training.test_photos`);
with it, on ``DIR/<class_id>/*.{jpg,jpeg,png,...}`` where ``class_id`` is a WordNet id (or,
for a fine-tuned model, the class folder name) found in the model's ``labels.json``.
The SavedModel is loaded with ``tf.saved_model.load(path).signatures["serve"]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from predictions.preprocessing import open_rgb, to_model_input
from training.export import (
    LABELS_FILE,
    METADATA_FILE,
    SAVED_MODEL_DIR,
    TFLITE_FILE,
    signature_probabilities,
    tflite_probabilities,
)
from training.test_photos import TEST_PHOTOS

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
BATCH_SIZE = 16


@dataclass
class Sample:
    """One image to evaluate and the class ids that count as correct."""

    name: str
    path: Path
    expected: tuple[str, ...]


@dataclass
class SampleResult:
    """Prediction for one sample."""

    name: str
    expected: list[str]
    top5: list[dict[str, Any]]
    top1_correct: bool
    top5_correct: bool
    rank: int | None  # 1-based rank of the best-ranked expected class, None if not in the top 5


@dataclass
class EvaluationReport:
    """Accuracy over a set of samples."""

    engine: str
    count: int
    top1_accuracy: float
    top5_accuracy: float
    results: list[SampleResult]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return asdict(self)


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


def load_labels(model: str | Path) -> list[dict[str, Any]]:
    """The model's ``labels.json``."""
    return list(json.loads((Path(model) / LABELS_FILE).read_text(encoding="utf-8")))


def load_metadata(model: str | Path) -> dict[str, Any]:
    """The model's ``metadata.json``."""
    return dict(json.loads((Path(model) / METADATA_FILE).read_text(encoding="utf-8")))


def score(
    samples: Sequence[Sample], probabilities: NDArray[np.float32], labels: Sequence[Mapping[str, Any]], engine: str
) -> EvaluationReport:
    """Compare per-sample probabilities with the expected class ids."""
    known = {entry["class_id"] for entry in labels}
    results = []
    for sample, probs in zip(samples, probabilities, strict=True):
        missing = set(sample.expected) - known
        if missing:
            raise ValueError(f"{sample.name}: class ids {sorted(missing)} are not in labels.json")
        order = np.argsort(-probs)[:5]
        top5 = [
            {
                "class_id": labels[i]["class_id"],
                "label": labels[i]["label"],
                "probability": round(float(probs[i]), 5),
            }
            for i in order
        ]
        ranks = [r + 1 for r, entry in enumerate(top5) if entry["class_id"] in sample.expected]
        rank = ranks[0] if ranks else None
        results.append(SampleResult(sample.name, list(sample.expected), top5, rank == 1, rank is not None, rank))
    n = len(results)
    return EvaluationReport(
        engine=engine,
        count=n,
        top1_accuracy=sum(r.top1_correct for r in results) / n if n else 0.0,
        top5_accuracy=sum(r.top5_correct for r in results) / n if n else 0.0,
        results=results,
    )


def load_batch(samples: Sequence[Sample], input_size: int) -> NDArray[np.float32]:
    """Decode and preprocess samples with the shared serving preprocessing."""
    return np.stack([to_model_input(open_rgb(s.path), input_size) for s in samples]).astype(np.float32)


def predict(
    model: str | Path, samples: Sequence[Sample], input_size: int, engine: str = "saved_model"
) -> NDArray[np.float32]:
    """Probabilities ``[len(samples), C]`` from the SavedModel (or ``engine="tflite"``) in ``model``."""
    model = Path(model)
    chunks = []
    if engine == "saved_model":
        import tensorflow as tf

        fn = tf.saved_model.load(str(model / SAVED_MODEL_DIR)).signatures["serve"]
        for start in range(0, len(samples), BATCH_SIZE):
            chunks.append(signature_probabilities(fn, load_batch(samples[start : start + BATCH_SIZE], input_size)))
    elif engine == "tflite":
        for start in range(0, len(samples), BATCH_SIZE):
            batch = load_batch(samples[start : start + BATCH_SIZE], input_size)
            chunks.append(tflite_probabilities(model / TFLITE_FILE, batch))
    else:
        raise ValueError(f"unknown engine {engine!r}")
    return np.concatenate(chunks)


def evaluate_model(
    model: str | Path, images: str | Path | None = None, engine: str = "saved_model"
) -> EvaluationReport:
    """Evaluate the SavedModel (or ``engine="tflite"``) of an exported model directory."""
    metadata = load_metadata(model)
    labels = load_labels(model)
    samples = folder_samples(images) if images else photo_samples()
    probabilities = predict(model, samples, int(metadata["input_size"]), engine)
    return score(samples, probabilities, labels, engine)


def format_report(report: EvaluationReport) -> str:
    """Human-readable summary."""
    lines = []
    for r in report.results:
        best = r.top5[0]
        mark = "ok " if r.top1_correct else ("top5" if r.top5_correct else "MISS")
        lines.append(f"[{mark}] {r.name}: {best['label']} ({best['class_id']}, p={best['probability']:.3f})")
    lines.append(
        f"{report.engine}: {report.count} images, top-1 {report.top1_accuracy:.1%}, top-5 {report.top5_accuracy:.1%}"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model directory, e.g. models/efficientnet_lite0/1")
    parser.add_argument("--images", help="folder laid out as DIR/<class_id>/*.jpg (default: shipped test photos)")
    parser.add_argument("--tflite", action="store_true", help="evaluate model.tflite instead of the SavedModel")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    args = parser.parse_args(argv)
    report = evaluate_model(args.model, args.images, "tflite" if args.tflite else "saved_model")
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

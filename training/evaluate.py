"""Accuracy of an exported model directory, and a full evaluation report.

    python -m training.evaluate --model models/efficientnet_lite0/1 [--images DIR] [--tflite]
    python -m training.evaluate --model models/digits/1 --data DIR [--split test]
        [--engines savedmodel,tflite-fp16,tflite-int8]

Without ``--images`` / ``--data`` it runs on the shipped test photos
(:mod:`training.test_photos`); with ``--images``, on ``DIR/<class_id>/*.{jpg,png,...}``
where ``class_id`` is a WordNet id (or, for a fine-tuned model, the class folder name)
found in the model's ``labels.json``, and prints top-1 / top-5.

``--data`` writes the full report into ``<model>/evaluation/``: top-1 / top-5, per-class
precision / recall / F1 / support, macro and weighted averages, the confusion matrix (PNG +
CSV), expected calibration error and a reliability diagram (PNG), latency per image,
``metrics.json`` and ``report.html``; the summary goes into the model's ``metadata.json``
(``evaluation``) and ``MODEL_CARD.md``, with "Not sure" thresholds calibrated on the same samples
(``uncertainty``, see :mod:`training.uncertainty`). ``--split test`` keeps only the files that
``training.finetune`` held out (``splits.json``). The SavedModel is loaded with
``tf.saved_model.load(path).signatures["serve"]``.

``--engines`` (with ``--data``) also runs converted files (``tflite``, ``tflite-fp16``,
``tflite-int8``, ``onnx``, through the runner's own ``ml.engines``) on the very same
preprocessed batches, scores each with the same metrics and records a comparison against the
SavedModel (top-1 change in points, top-1 agreement, size, ms per image) as
``evaluation.engines`` in ``metadata.json``, a table in ``MODEL_CARD.md`` and in
``report.html``, and prints it. The report's other figures stay the SavedModel's. A missing
file is an error naming the ``training.convert`` command that builds it (evaluation never
converts: that takes minutes and calibration needs the training data).
"""

from __future__ import annotations

import argparse
import html
import itertools
import json
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ml.engines import ONNX_FILE, TFLITE_FP16_FILE, TFLITE_INT8_FILE, load_engine
from ml.preprocessing import open_rgb, to_model_input
from training.convert import agreement
from training.export import (
    LABELS_FILE,
    METADATA_FILE,
    MODEL_CARD_FILE,
    SAVED_MODEL_DIR,
    TFLITE_FILE,
    card_section_write,
    dir_size,
    metadata_set,
    signature_probabilities,
    tflite_probabilities,
    write_json,
)
from training.test_photos import TEST_PHOTOS
from training.uncertainty import calibrate_probabilities, record_calibration

EVALUATION_DIR = "evaluation"
CARD_START = "<!-- evaluation: written by training.evaluate -->"
CARD_END = "<!-- /evaluation -->"
LATENCY_IMAGES = 20
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
BATCH_SIZE = 16
REFERENCE_ENGINE = "savedmodel"
# Engine names as in ml.engines (MODEL_ENGINE), and the file each one runs.
ENGINE_FILES = {
    "savedmodel": SAVED_MODEL_DIR,
    "tflite": TFLITE_FILE,
    "tflite-fp16": TFLITE_FP16_FILE,
    "tflite-int8": TFLITE_INT8_FILE,
    "onnx": ONNX_FILE,
}


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


@dataclass
class ClassificationMetrics:
    """Scores of predicted probabilities against known classes (hand-checkable, numpy only)."""

    classes: list[str]
    count: int
    top1: float
    top5: float
    precision: list[float]
    recall: list[float]
    f1: list[float]
    support: list[int]
    confusion: list[list[int]]  # rows: true class, columns: predicted class
    ece: float
    reliability: list[dict[str, float]]  # per confidence bin: lower, upper, count, confidence, accuracy

    def averages(self, weighted: bool) -> dict[str, float]:
        """Macro (every class counts once) or support-weighted precision / recall / F1."""
        weights = np.asarray(self.support, dtype=np.float64) if weighted else np.ones(len(self.classes))
        total = weights.sum() or 1.0
        return {
            key: float(np.dot(weights, np.asarray(values)) / total)
            for key, values in (("precision", self.precision), ("recall", self.recall), ("f1", self.f1))
        }

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures (rounded) for metadata.json and reports."""
        return {
            "count": self.count,
            "top1": round(self.top1, 5),
            "top5": round(self.top5, 5),
            "macro": {k: round(v, 5) for k, v in self.averages(weighted=False).items()},
            "weighted": {k: round(v, 5) for k, v in self.averages(weighted=True).items()},
            "ece": round(self.ece, 5),
            "per_class": [
                {
                    "class": name,
                    "precision": round(self.precision[i], 5),
                    "recall": round(self.recall[i], 5),
                    "f1": round(self.f1[i], 5),
                    "support": self.support[i],
                }
                for i, name in enumerate(self.classes)
            ],
            "confusion_matrix": self.confusion,
        }


def classification_metrics(
    targets: NDArray[np.int64], probabilities: NDArray[np.float32], classes: Sequence[str], bins: int = 15
) -> ClassificationMetrics:
    """Top-1/top-5, per-class precision/recall/F1/support, confusion matrix and calibration.

    Precision of a class never predicted is 0 (as scikit-learn's ``zero_division=0``).
    Expected calibration error: the top-1 confidences in ``bins`` equal-width bins over
    (0, 1]; ECE = sum over bins of (bin count / n) * |accuracy - mean confidence|.
    """
    targets = np.asarray(targets, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    n, k = probabilities.shape
    predicted = probabilities.argmax(axis=1)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (targets, predicted), 1)
    true_positive = np.diag(confusion).astype(np.float64)
    predicted_count = confusion.sum(axis=0).astype(np.float64)
    support = confusion.sum(axis=1)
    precision = np.divide(true_positive, predicted_count, out=np.zeros(k), where=predicted_count > 0)
    recall = np.divide(true_positive, support, out=np.zeros(k), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros(k), where=denominator > 0)
    top5 = np.argsort(-probabilities, axis=1)[:, :5]
    confidence = probabilities.max(axis=1)
    correct = predicted == targets
    edges = np.linspace(0.0, 1.0, bins + 1)
    reliability: list[dict[str, float]] = []
    ece = 0.0
    for lower, upper in itertools.pairwise(edges):
        members = (confidence > lower) & (confidence <= upper)
        count = int(members.sum())
        if count:
            accuracy, mean_confidence = float(correct[members].mean()), float(confidence[members].mean())
            ece += count / n * abs(accuracy - mean_confidence)
        else:
            accuracy = mean_confidence = 0.0
        reliability.append(
            {
                "lower": float(lower),
                "upper": float(upper),
                "count": count,
                "confidence": mean_confidence,
                "accuracy": accuracy,
            }
        )
    return ClassificationMetrics(
        classes=list(classes),
        count=n,
        top1=float(correct.mean()) if n else 0.0,
        top5=float((top5 == targets[:, None]).any(axis=1).mean()) if n else 0.0,
        precision=[float(v) for v in precision],
        recall=[float(v) for v in recall],
        f1=[float(v) for v in f1],
        support=[int(v) for v in support],
        confusion=[[int(v) for v in row] for row in confusion],
        ece=float(ece),
        reliability=reliability,
    )


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


@dataclass
class Latency:
    """Milliseconds per image: decode + preprocess, and the model call, batched and one by one."""

    preprocess_ms: float
    batched_inference_ms: float  # per image, batches of BATCH_SIZE
    single_inference_ms_p50: float  # batch of 1, median over LATENCY_IMAGES images
    single_total_ms_p50: float  # batch of 1 including decode + preprocess


def split_samples(model: str | Path, data: str | Path, split: str) -> list[Sample]:
    """``folder_samples(data)``, restricted to one part of the model's ``splits.json``."""
    samples = folder_samples(data)
    if split == "all":
        return samples
    splits_path = Path(model) / "splits.json"
    if not splits_path.is_file():
        raise ValueError(f"{model} has no splits.json (only models from training.finetune do); use --split all")
    wanted = set(json.loads(splits_path.read_text(encoding="utf-8"))[split])
    root = Path(data)
    kept = [s for s in samples if s.path.relative_to(root).as_posix() in wanted]
    if len(kept) != len(wanted):
        raise ValueError(f"{data}: {len(wanted) - len(kept)} of the {split} files in splits.json are missing")
    return kept


@dataclass
class EngineRun:
    """One engine's probabilities for every sample, and how long it took."""

    engine: str
    probabilities: NDArray[np.float32]
    latency: Latency


def timed_predictions(
    model: str | Path, samples: Sequence[Sample], input_size: int, engines: Sequence[str] = (REFERENCE_ENGINE,)
) -> dict[str, EngineRun]:
    """Each engine's probabilities for every sample, with the time each stage took.

    Every batch is decoded and preprocessed once and handed to each engine in turn, so all
    engines see identical input; the preprocessing time is therefore the same for all.
    """
    loaded = {name: load_engine(name, Path(model)) for name in engines}
    for engine in loaded.values():
        engine.run(load_batch(samples[:BATCH_SIZE], input_size))  # trace / allocate once, untimed
    chunks: dict[str, list[NDArray[np.float32]]] = {name: [] for name in loaded}
    inference = dict.fromkeys(loaded, 0.0)
    preprocess = 0.0
    for start in range(0, len(samples), BATCH_SIZE):
        began = time.perf_counter()
        batch = load_batch(samples[start : start + BATCH_SIZE], input_size)
        preprocess += time.perf_counter() - began
        for name, engine in loaded.items():
            began = time.perf_counter()
            chunks[name].append(engine.run(batch))
            inference[name] += time.perf_counter() - began
    n = max(len(samples), 1)
    runs = {}
    for name, engine in loaded.items():
        engine.run(load_batch(samples[:1], input_size))  # batch-1 shape, untimed
        single, total = [], []
        for sample in samples[:LATENCY_IMAGES]:
            began = time.perf_counter()
            image = load_batch([sample], input_size)
            middle = time.perf_counter()
            engine.run(image)
            end = time.perf_counter()
            single.append(end - middle)
            total.append(end - began)
        latency = Latency(
            preprocess_ms=round(preprocess * 1000 / n, 3),
            batched_inference_ms=round(inference[name] * 1000 / n, 3),
            single_inference_ms_p50=round(float(np.median(single)) * 1000, 3),
            single_total_ms_p50=round(float(np.median(total)) * 1000, 3),
        )
        runs[name] = EngineRun(name, np.concatenate(chunks[name]), latency)
    return runs


def parse_engines(text: str) -> list[str]:
    """``"tflite-fp16,tflite-int8"`` -> engine names, the SavedModel (the reference) first."""
    return engine_order(name.strip() for name in text.split(",") if name.strip())


def engine_order(names: Iterable[str]) -> list[str]:
    """Known engine names without repeats, the SavedModel first: every engine is compared with it."""
    names = list(names)
    unknown = [name for name in names if name not in ENGINE_FILES]
    if unknown:
        raise ValueError(f"Unknown engine(s) {', '.join(unknown)}; choose from {', '.join(ENGINE_FILES)}")
    return [REFERENCE_ENGINE, *dict.fromkeys(name for name in names if name != REFERENCE_ENGINE)]


def check_engine_files(model: str | Path, engines: Sequence[str], data: str | Path) -> None:
    """Raise ``FileNotFoundError`` naming the command that builds any missing engine file."""
    model = Path(model)
    missing = [name for name in engines if not (model / ENGINE_FILES[name]).exists()]
    if not missing:
        return
    exported = [ENGINE_FILES[name] for name in missing if name in (REFERENCE_ENGINE, "tflite")]
    if exported:
        raise FileNotFoundError(
            f"{model} has no {', '.join(exported)}: export the model again (training.finetune or `make model`)"
        )
    files = ", ".join(ENGINE_FILES[name] for name in missing)
    formats = ",".join(missing)
    command = f"python -m training.convert --model {model} --formats {formats}"
    if "tflite-int8" in missing and (model / "splits.json").is_file():
        command += f" --calibration-data {data}"
    raise FileNotFoundError(f"{model} has no {files}: run `{command}` first")


def compare_engines(
    targets: NDArray[np.int64], probabilities: Mapping[str, NDArray[np.float32]], classes: Sequence[str]
) -> list[dict[str, Any]]:
    """Per engine: the same metrics on the same samples, and top-1 change / agreement vs the SavedModel."""
    reference = probabilities[REFERENCE_ENGINE]
    reference_top1 = classification_metrics(targets, reference, classes).top1
    rows = []
    for name, probs in probabilities.items():
        metrics = classification_metrics(targets, probs, classes)
        follows = agreement(reference, probs)
        rows.append(
            {
                "engine": name,
                "top1": round(metrics.top1, 5),
                "top5": round(metrics.top5, 5),
                "macro_f1": round(metrics.averages(weighted=False)["f1"], 5),
                "ece": round(metrics.ece, 5),
                "top1_change_pp": round((metrics.top1 - reference_top1) * 100, 2),
                "top1_agreement": round(follows.top1_agreement, 5),
                "mean_abs_prob_diff": float(f"{follows.mean_abs_diff:.3g}"),
            }
        )
    return rows


ENGINE_COLUMNS = (
    ("engine", "engine", "{}"),
    ("size MB", "size_mb", "{:.2f}"),
    ("top-1", "top1", "{:.2%}"),
    ("change (pp)", "top1_change_pp", "{:+.2f}"),
    ("top-5", "top5", "{:.2%}"),
    ("macro F1", "macro_f1", "{:.4f}"),
    ("ECE", "ece", "{:.4f}"),
    ("agrees with SavedModel", "top1_agreement", "{:.2%}"),
    ("ms/image (batch 16)", "ms_per_image", "{:.2f}"),
    ("ms/image (batch 1, p50)", "single_ms_p50", "{:.2f}"),
)


def _engine_cells(row: Mapping[str, Any]) -> list[str]:
    return [template.format(row[key]) for _, key, template in ENGINE_COLUMNS]


def format_engine_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The engine comparison as aligned plain text for the terminal."""
    table = [[header for header, _, _ in ENGINE_COLUMNS], *(_engine_cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(ENGINE_COLUMNS))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        )
        for line in table
    )


def engine_table_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The engine comparison as a Markdown table (for MODEL_CARD.md)."""
    lines = [
        "| " + " | ".join(header for header, _, _ in ENGINE_COLUMNS) + " |",
        "|" + "|".join(":--" if i == 0 else "--:" for i in range(len(ENGINE_COLUMNS))) + "|",
    ]
    lines += ["| " + " | ".join(_engine_cells(row)) + " |" for row in rows]
    return "\n".join(lines)


def write_confusion_csv(path: Path, metrics: ClassificationMetrics) -> None:
    """Rows: true class, columns: predicted class, with a header row and column."""
    lines = ["true \\ predicted," + ",".join(_csv(c) for c in metrics.classes)]
    for name, row in zip(metrics.classes, metrics.confusion, strict=True):
        lines.append(_csv(name) + "," + ",".join(str(v) for v in row))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _csv(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


def plot_confusion(path: Path, metrics: ClassificationMetrics) -> None:
    """Confusion matrix heat map with the counts written in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(metrics.classes)
    matrix = np.asarray(metrics.confusion)
    size = min(4 + 0.45 * k, 24)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(k), metrics.classes, rotation=90)
    ax.set_yticks(range(k), metrics.classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion matrix ({metrics.count} images, top-1 {metrics.top1:.2%})")
    if k <= 40:
        threshold = matrix.max() / 2 if matrix.size else 0
        for i in range(k):
            for j in range(k):
                if matrix[i, j]:
                    colour = "white" if matrix[i, j] > threshold else "black"
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", color=colour, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_reliability(path: Path, metrics: ClassificationMetrics) -> None:
    """Reliability diagram: accuracy per confidence bin against the diagonal, with bin counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = metrics.reliability
    width = bins[0]["upper"] - bins[0]["lower"]
    centres = [b["lower"] + width / 2 for b in bins]
    fig, (ax, ax_count) = plt.subplots(2, 1, figsize=(6, 7), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.bar(centres, [b["accuracy"] for b in bins], width=width * 0.95, label="accuracy", color="tab:blue")
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(f"Reliability (ECE {metrics.ece:.4f})")
    ax.legend(loc="upper left")
    ax_count.bar(centres, [b["count"] for b in bins], width=width * 0.95, color="tab:gray")
    ax_count.set_xlabel("top-1 confidence")
    ax_count.set_ylabel("images")
    ax_count.set_xlim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(
    model: str | Path,
    data: str | Path,
    split: str = "all",
    out: str | Path | None = None,
    engines: Sequence[str] = (REFERENCE_ENGINE,),
) -> dict[str, Any]:
    """Evaluate ``model`` on ``data`` and write the report files (see the module doc).

    ``engines`` beyond the SavedModel are scored on the same samples and compared with it
    (``summary["engines"]``); every other figure of the report is the SavedModel's.
    """
    model = Path(model)
    metadata = load_metadata(model)
    if metadata.get("task") == "multi-label":
        # Its scores are per-class sigmoids judged at thresholds, not one argmax per image.
        raise ValueError(
            f"{model} is a multi-label model: its test-split figures (per-class F1 at the tuned thresholds, "
            f"micro / macro F1, exact match) are in {model / MODEL_CARD_FILE}; this report is for single-label models"
        )
    engines = engine_order(engines)
    check_engine_files(model, engines, data)
    labels = load_labels(model)
    index = {entry["class_id"]: int(entry["index"]) for entry in labels}
    samples = split_samples(model, data, split)
    unknown = sorted({s.expected[0] for s in samples} - set(index))
    if unknown:
        raise ValueError(f"{data}: class folders {unknown} are not in {model / LABELS_FILE}")
    targets = np.asarray([index[s.expected[0]] for s in samples], dtype=np.int64)
    runs = timed_predictions(model, samples, int(metadata["input_size"]), engines)
    classes = [entry["class_id"] for entry in labels]
    latency = runs[REFERENCE_ENGINE].latency
    metrics = classification_metrics(targets, runs[REFERENCE_ENGINE].probabilities, classes)
    comparison = compare_engines(targets, {name: run.probabilities for name, run in runs.items()}, classes)
    for row in comparison:
        run = runs[row["engine"]]
        row["file"] = ENGINE_FILES[row["engine"]]
        row["size_mb"] = round(dir_size(model / row["file"]) / 1e6, 2)
        row["ms_per_image"] = run.latency.batched_inference_ms
        row["single_ms_p50"] = run.latency.single_inference_ms_p50
    target = Path(out) if out else model / EVALUATION_DIR
    target.mkdir(parents=True, exist_ok=True)
    write_confusion_csv(target / "confusion_matrix.csv", metrics)
    plot_confusion(target / "confusion_matrix.png", metrics)
    plot_reliability(target / "reliability.png", metrics)
    summary: dict[str, Any] = {
        "data": str(data),
        "split": split,
        "engine": "saved_model (serve signature)",
        **metrics.summary(),
        "reliability": metrics.reliability,
        "latency_ms_per_image": asdict(latency),
        "engines": comparison,
        "files": {
            "report": "report.html",
            "confusion_matrix_png": "confusion_matrix.png",
            "confusion_matrix_csv": "confusion_matrix.csv",
            "reliability_png": "reliability.png",
            "metrics": "metrics.json",
        },
        "directory": os.path.relpath(target, model),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    # "Not sure" thresholds from the same labelled samples (training.uncertainty's criterion).
    reference = runs[REFERENCE_ENGINE].probabilities
    calibration = calibrate_probabilities(reference, reference.argmax(axis=1) == targets)
    summary["uncertainty"] = calibration.record(f"{data} (split: {split}; training.evaluate)")
    write_json(target / "metrics.json", summary)
    (target / "report.html").write_text(report_html(metadata, summary), encoding="utf-8")
    _record_in_model(model, summary)
    record_calibration(model, calibration, summary["uncertainty"]["calibrated_on"])
    return summary


def _record_in_model(model: Path, summary: dict[str, Any]) -> None:
    """Put the summary into ``metadata.json`` and a section of ``MODEL_CARD.md`` (replaced on re-runs)."""
    kept = {k: v for k, v in summary.items() if k not in ("reliability", "confusion_matrix")}
    metadata_set(model, "evaluation", kept)
    d = summary["directory"]
    latency = summary["latency_ms_per_image"]
    section = f"""{CARD_START}
## Evaluation

`python -m training.evaluate` on `{summary["data"]}` (split: {summary["split"]}), {summary["created"]}:
top-1 **{summary["top1"]:.2%}**, top-5 {summary["top5"]:.2%} on {summary["count"]} images; macro F1
{summary["macro"]["f1"]:.3f}, weighted F1 {summary["weighted"]["f1"]:.3f}; expected calibration error
{summary["ece"]:.4f}; latency per image {latency["preprocess_ms"]} ms preprocessing +
{latency["batched_inference_ms"]} ms model (batches of {BATCH_SIZE}), {latency["single_total_ms_p50"]} ms
one image at a time (p50). Full report: [`{d}/report.html`]({d}/report.html).

![confusion matrix]({d}/confusion_matrix.png)
![reliability diagram]({d}/reliability.png)
{_engines_card(summary)}{CARD_END}
"""
    card_section_write(model, CARD_START, CARD_END, section)


def _engines_card(summary: Mapping[str, Any]) -> str:
    """The engine comparison for the model card (empty when only the SavedModel ran)."""
    rows = summary.get("engines") or []
    if len(rows) < 2:
        return ""
    return f"""
### Engines

Each engine on the same {summary["count"]} preprocessed images; change and agreement are against the
SavedModel, ms per image is the model call alone (`python -m training.evaluate --engines ...`).

{engine_table_markdown(rows)}
"""


def _engines_html(summary: Mapping[str, Any]) -> str:
    """The engine comparison as an HTML section (empty when only the SavedModel ran)."""
    rows = summary.get("engines") or []
    if len(rows) < 2:
        return ""
    head = "".join(f"<th>{html.escape(header)}</th>" for header, _, _ in ENGINE_COLUMNS)
    body = "\n".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in _engine_cells(row)) + "</tr>" for row in rows
    )
    return f"""<h2>Engines</h2>
<p>Each engine on the same {summary["count"]} preprocessed images; change (percentage points) and top-1
agreement are against the SavedModel; ms per image is the model call alone.</p>
<table id="engines"><tr>{head}</tr>
{body}
</table>
"""


def report_html(metadata: Mapping[str, Any], summary: Mapping[str, Any]) -> str:
    """A self-contained HTML page (the figures sit beside it)."""
    e = html.escape
    rows = "\n".join(
        f"<tr><td>{e(r['class'])}</td><td>{r['precision']:.3f}</td><td>{r['recall']:.3f}</td>"
        f"<td>{r['f1']:.3f}</td><td>{r['support']}</td></tr>"
        for r in summary["per_class"]
    )
    averages = "\n".join(
        f"<tr><th>{name}</th><td>{summary[key]['precision']:.3f}</td><td>{summary[key]['recall']:.3f}</td>"
        f"<td>{summary[key]['f1']:.3f}</td><td>{summary['count']}</td></tr>"
        for name, key in (("macro average", "macro"), ("weighted average", "weighted"))
    )
    latency = "".join(f"<li>{e(k)}: {v} ms</li>" for k, v in summary["latency_ms_per_image"].items())
    title = f"{metadata.get('name', '?')} v{metadata.get('version', '?')}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Evaluation of {e(title)}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}td,th{{padding:2px 8px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}table{{border-collapse:collapse}}tr:nth-child(even){{background:#f4f4f4}}</style>
</head><body>
<h1>Evaluation of {e(title)}</h1>
<p>Data <code>{e(str(summary["data"]))}</code>, split <b>{e(str(summary["split"]))}</b>, {summary["count"]} images,
{e(str(summary["engine"]))}, {e(str(summary["created"]))}.</p>
<p>Top-1 <b>{summary["top1"]:.2%}</b> &middot; top-5 {summary["top5"]:.2%} &middot;
expected calibration error {summary["ece"]:.4f} (15 bins)</p>
{_engines_html(summary)}<h2>Per class</h2>
<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>
{rows}
{averages}
</table>
<h2>Confusion matrix</h2>
<p><a href="confusion_matrix.csv">CSV</a> (rows: true class, columns: predicted)</p>
<img src="confusion_matrix.png" alt="confusion matrix">
<h2>Calibration</h2>
<img src="reliability.png" alt="reliability diagram">
<h2>Latency per image</h2>
<ul>{latency}</ul>
</body></html>
"""


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model directory, e.g. models/efficientnet_lite0/1")
    parser.add_argument("--images", help="folder laid out as DIR/<class_id>/*.jpg (default: shipped test photos)")
    parser.add_argument("--data", help="DIR/<class_id>/*: write the full report into <model>/evaluation/")
    parser.add_argument(
        "--split", choices=("all", "train", "val", "test"), default="all", help="with --data: files of splits.json"
    )
    parser.add_argument("--out", help="with --data: report folder (default <model>/evaluation)")
    parser.add_argument(
        "--engines",
        default=REFERENCE_ENGINE,
        help=f"with --data: comma-separated, from {', '.join(ENGINE_FILES)}; compared with the SavedModel",
    )
    parser.add_argument("--tflite", action="store_true", help="evaluate model.tflite instead of the SavedModel")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    args = parser.parse_args(argv)
    if args.data:
        try:
            engines = parse_engines(args.engines)
            summary = write_report(args.model, args.data, args.split, args.out, engines)
        except (ValueError, FileNotFoundError) as error:
            parser.exit(2, f"training.evaluate: error: {error}\n")
        target = Path(args.out) if args.out else Path(args.model) / EVALUATION_DIR
        print(
            f"{summary['count']} images: top-1 {summary['top1']:.2%}, top-5 {summary['top5']:.2%}, "
            f"macro F1 {summary['macro']['f1']:.3f}, ECE {summary['ece']:.4f}; report {target / 'report.html'}"
        )
        calibrated = summary["uncertainty"]
        print(
            f"uncertain when entropy > {calibrated['entropy']} or margin < {calibrated['margin']}: keeps "
            f"{calibrated['kept_correct']:.1%} of correct, flags "
            f"{'-' if calibrated['flagged_wrong'] is None else format(calibrated['flagged_wrong'], '.1%')} of wrong "
            "(metadata.json uncertainty, MODEL_CARD.md)"
        )
        if len(engines) > 1:
            print(format_engine_table(summary["engines"]))
        return 0
    if args.engines != REFERENCE_ENGINE:
        parser.error("--engines needs --data")
    report = evaluate_model(args.model, args.images, "tflite" if args.tflite else "saved_model")
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from training.engine_comparison import (
    ENGINE_FILES,
    REFERENCE_ENGINE,
    check_engine_files,
    compare_engines,
    engine_order,
    format_engine_table,
    parse_engines,
    timed_predictions,
)
from training.evaluation_report import (
    EVALUATION_DIR,
    plot_confusion,
    plot_reliability,
    record_in_model,
    report_html,
    write_confusion_csv,
)
from training.export import (
    LABELS_FILE,
    MODEL_CARD_FILE,
    MULTI_LABEL_TASK,
    SAVED_MODEL_DIR,
    TFLITE_FILE,
    dir_size,
    load_labels,
    load_metadata,
    signature_probabilities,
    tflite_probabilities,
    write_json,
)
from training.metrics import classification_metrics
from training.samples import BATCH_SIZE, Sample, folder_samples, load_batch, photo_samples, split_samples
from training.tracking import scalar_metrics, tracked_run
from training.uncertainty import calibrate_probabilities, record_calibration

# This module's own names, and those the tests and scripts import from here although they
# live in the modules that own them now (engines, export layout, metrics, samples).
__all__ = [
    "EvaluationReport",
    "SampleResult",
    "check_engine_files",
    "classification_metrics",
    "compare_engines",
    "evaluate_model",
    "format_engine_table",
    "format_report",
    "load_batch",
    "load_labels",
    "load_metadata",
    "main",
    "parse_engines",
    "photo_samples",
    "predict",
    "score",
    "write_report",
]


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
    if metadata.get("task") == MULTI_LABEL_TASK:
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
    params = {"model": str(model), "data": str(data), "split": split, "engines": ",".join(engines)}
    run_name = f"{metadata.get('name', model.parent.name)}-{metadata.get('version', model.name)}"
    with tracked_run("evaluate", run_name=run_name, params=params) as tracking:
        summary["tracking"] = tracking.record()
        write_json(target / "metrics.json", summary)
        (target / "report.html").write_text(report_html(metadata, summary), encoding="utf-8")
        record_in_model(model, summary)
        record_calibration(model, calibration, summary["uncertainty"]["calibrated_on"])
        tracking.log_metrics({**scalar_metrics(summary), **scalar_metrics(asdict(latency), "latency_ms_")})
        tracking.log_artifacts(*(target / name for name in summary["files"].values()), model / MODEL_CARD_FILE)
    return summary


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

"""One model's engines compared on the very same preprocessed batches (``training.evaluate
--engines``): each engine's probabilities and latency, the same metrics for each, the top-1
change and agreement against the SavedModel (the reference), and the comparison table for
the terminal, the model card and the report.

Engines are named as in ``ml.engines`` (``MODEL_ENGINE``) and run through it, as the
workers run them; a missing file is an error naming the ``training.convert`` command that
builds it (evaluation never converts).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ml.engines import ONNX_FILE, SAVED_MODEL_DIR, TFLITE_FILE, TFLITE_FP16_FILE, TFLITE_INT8_FILE, load_engine
from training.convert import agreement
from training.export import SPLITS_FILE
from training.metrics import classification_metrics
from training.samples import BATCH_SIZE, Sample, load_batch

LATENCY_IMAGES = 20
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
class Latency:
    """Milliseconds per image: decode + preprocess, and the model call, batched and one by one."""

    preprocess_ms: float
    batched_inference_ms: float  # per image, batches of BATCH_SIZE
    single_inference_ms_p50: float  # batch of 1, median over LATENCY_IMAGES images
    single_total_ms_p50: float  # batch of 1 including decode + preprocess


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
    if "tflite-int8" in missing and (model / SPLITS_FILE).is_file():
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


def engine_cells(row: Mapping[str, Any]) -> list[str]:
    return [template.format(row[key]) for _, key, template in ENGINE_COLUMNS]


def format_engine_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The engine comparison as aligned plain text for the terminal."""
    table = [[header for header, _, _ in ENGINE_COLUMNS], *(engine_cells(row) for row in rows)]
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
    lines += ["| " + " | ".join(engine_cells(row)) + " |" for row in rows]
    return "\n".join(lines)

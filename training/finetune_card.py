"""What a fine-tuned model says about itself: its ``metadata.json`` (what it is, what it was
trained on and how, its test figures), the ``MODEL_CARD.md`` written from it, and the
one-line headline of its test figures."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from training.export import (
    FORMAT_VERSION,
    LABELS_FILE,
    MULTI_LABEL_TASK,
    SAVED_MODEL_DIR,
    SINGLE_LABEL_TASK,
    SPLITS_FILE,
    TFLITE_FILE,
    dir_size,
)
from training.finetune_config import FinetuneConfig
from training.finetune_data import ImageSet, Split
from training.finetune_model import TrainingRun
from training.metrics import ClassificationMetrics
from training.multilabel import MultiLabelMetrics


def finetune_metadata(
    *,
    name: str,
    version: str,
    config: FinetuneConfig,
    base_meta: dict[str, Any],
    input_size: int,
    folder: ImageSet,
    fingerprint: dict[str, Any],
    split: Split,
    class_weight: dict[int, float] | None,
    run: TrainingRun,
    train_seconds: float,
    workdir: Path,
    test: ClassificationMetrics | MultiLabelMetrics,
    thresholds: dict[str, float] | None,
    model: Any,
    export: Path,
) -> dict[str, Any]:
    """The fine-tuned model's ``metadata.json`` (all but ``build_seconds``): what it is, what it
    was trained on and how, its test figures and the files already written into ``export``."""
    import keras
    import tensorflow as tf

    variant = str(base_meta["variant"])
    num_classes = len(folder.classes)
    multi_label = folder.multi_label
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "version": str(version),
        "variant": variant,
        "architecture": (
            f"EfficientNet-Lite{variant[-1]}, top {config.finetune_blocks} blocks fine-tuned, new Dense head"
            if config.epochs > 0
            else f"EfficientNet-Lite{variant[-1]} backbone (frozen) + new Dense head"
        ),
        "task": MULTI_LABEL_TASK if multi_label else SINGLE_LABEL_TASK,
        "input_size": input_size,
        "num_classes": num_classes,
        "classes": folder.classes,
        "signature": {"name": "serve", "input": "image", "output": "output_0"},
        "input": {**(base_meta.get("input") or {}), "shape": [None, input_size, input_size, 3]},
        "output": {
            "kind": "sigmoid scores (independent per class)" if multi_label else "probabilities",
            "shape": [None, num_classes],
        },
        "preprocessing": preprocessing_record(base_meta, input_size),
        "labels": {
            "file": LABELS_FILE,
            "order": "sorted union of the labels CSV's labels" if multi_label else "sorted class folder names",
        },
        "parent_model": {
            "name": base_meta["name"],
            "version": base_meta["version"],
            "source": base_meta.get("source"),
        },
        "dataset": {
            "path": str(folder.root),
            **({"labels_csv": str(folder.labels_csv)} if folder.labels_csv is not None else {}),
            **fingerprint,
        },
        "splits": {
            "file": SPLITS_FILE,
            "seed": config.seed,
            "stratified": True,
            "stratified_by": "rarest label of each image" if multi_label else "class",
            **split.sizes(),
        },
        "training": {
            "config": asdict(config),
            "class_weights": class_weight,
            "epochs_run": run.epochs_run,
            "history": {k: [round(v, 5) for v in values] for k, values in run.history.items()},
            "trainable_parameters": run.trainable_parameters,
            "train_seconds": round(train_seconds, 1),
            "workdir": str(workdir),
        },
        "test_metrics": test.summary(),
        "parameters": int(model.count_params()),
        "files": {
            "saved_model_bytes": dir_size(export / SAVED_MODEL_DIR),
            "model_tflite_bytes": dir_size(export / TFLITE_FILE),
        },
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "cpu": cpu_model(),
    }
    if thresholds is not None:
        meta["thresholds"] = thresholds
        meta["thresholds_tuned_on"] = "validation split: per class, the F1-maximising threshold of 0.05..0.95"
    return meta


def headline(test: ClassificationMetrics | MultiLabelMetrics) -> str:
    """The run's test figures in a few words, for its last line of output."""
    if isinstance(test, MultiLabelMetrics):
        return f"test micro F1 {test.micro_f1:.3f}, exact match {test.exact_match:.2%}"
    return f"test top-1 {test.top1:.2%}"


def preprocessing_record(base_meta: dict[str, Any], input_size: int) -> dict[str, Any]:
    """The parent's preprocessing record, with this model's input size."""
    base_size = int(base_meta["input_size"])
    record = json.dumps(base_meta.get("preprocessing") or {})
    return dict(json.loads(record.replace(f"{base_size}x{base_size}", f"{input_size}x{input_size}")))


def cpu_model() -> str:
    """``model name`` from /proc/cpuinfo and the core count, e.g. ``AMD EPYC (2 cores)``."""
    import os

    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    except OSError:
        names = []
    return f"{names[0] if names else 'unknown CPU'} ({os.cpu_count()} cores)"


def model_card(meta: dict[str, Any]) -> str:
    """``MODEL_CARD.md`` of a fine-tuned model, from its metadata."""
    t = meta["training"]
    c = t["config"]
    m = meta["test_metrics"]
    d = meta["dataset"]
    s = meta["splits"]
    multi_label = meta["task"] == MULTI_LABEL_TASK
    if multi_label:
        output = (
            f"sigmoid scores [N, {meta['num_classes']}], one per class: an image has every class whose score "
            "reaches that class's threshold (below)"
        )
        source = f" and `{d['labels_csv']}`" if d.get("labels_csv") else ""
        stratified = "stratified by each image's rarest label"
        weights = "class weights not used (multi-label)"
        base = m["baselines"]
        results = f"""micro F1 **{m["micro_f1"]:.3f}**, macro F1 {m["macro_f1"]:.3f}, exact match
  (the whole label set right) {m["exact_match"]:.2%}, mean average precision {m["mean_average_precision"]:.3f}
  on {m["count"]} images, at the thresholds below (baselines: predicting every class for every image gives
  micro F1 {base["micro_f1_predict_everything"]:.3f}, predicting none 0).
- **Thresholds**: per class, the value of 0.05, 0.10, ..., 0.95 with the best F1 on the validation split
  (ties: nearest 0.5), 0.5 for a class without a positive there; `metadata.json` `thresholds`."""
        table = (
            "| class | threshold | precision | recall | F1 | AP | support |\n|---|---|---|---|---|---|---|\n"
            + "\n".join(
                f"| {row['class']} | {row['threshold']:.2f} | {row['precision']:.3f} | {row['recall']:.3f} "
                f"| {row['f1']:.3f} | {_optional(row['average_precision'])} "
                f"| {row['support']} |"
                for row in m["per_class"]
            )
        )
    else:
        output = f"probabilities [N, {meta['num_classes']}]"
        source = ""
        stratified = "stratified"
        weights = f"class weights {'on' if c['class_weights'] else 'off'}"
        results = f"""top-1 **{m["top1"]:.2%}**, top-5 {m["top5"]:.2%} on {m["count"]} images;
  macro F1 {m["macro"]["f1"]:.3f}, expected calibration error {m["ece"]:.4f}."""
        table = "| class | precision | recall | F1 | support |\n|---|---|---|---|---|\n" + "\n".join(
            f"| {row['class']} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | {row['support']} |"
            for row in m["per_class"]
        )
    return f"""# {meta["name"]} v{meta["version"]}

Image classifier: {meta["architecture"]}, initialised from {meta["parent_model"]["name"]}
v{meta["parent_model"]["version"]} (ImageNet EfficientNet-Lite weights, Apache-2.0).

- **Classes** ({meta["num_classes"]}, `labels.json` order): {", ".join(meta["classes"])}
- **Input**: float32 [N, {meta["input_size"]}, {meta["input_size"]}, 3] RGB 0..255, signature `serve`;
  output: {output}.
- **Preprocessing** (the same as the parent model, `ml.preprocessing`):
  {meta["preprocessing"]["description"] if meta.get("preprocessing") else "see metadata.json"}
- **Data set**: `{d["path"]}`{source}, {d["files"]} files, {d["bytes"]:,} bytes, SHA-256 `{d["sha256"]}`
  (over relative paths and file contents).
- **Split** ({stratified}, seed {s["seed"]}, `splits.json`): {s["train"]} train / {s["val"]} validation /
  {s["test"]} test.
- **Training**: {c["warmup_epochs"]} warm-up epochs (head, Adam lr {c["learning_rate"]}), then up to
  {c["epochs"]} epochs fine-tuning the top {c["finetune_blocks"]} blocks (lr {c["finetune_learning_rate"]}),
  cosine decay, BatchNorm frozen, batch {c["batch_size"]}, label smoothing {c["label_smoothing"]},
  {weights}, early stopping (patience {c["patience"]});
  augmentation: crops {c["crop_min"]}..1, flip {c["flip"]}, colour jitter {c["color_jitter"]},
  random erasing p={c["erasing"]}. {t["epochs_run"]} epochs run in {t["train_seconds"]} s on {meta["cpu"]}.
- **Held-out test split**: {results}

{table}

Created {meta["created"]} (TensorFlow {meta["tensorflow_version"]}, Keras {meta["keras_version"]}).
"""


def _optional(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def extra_cards(meta: dict[str, Any]) -> list[str]:
    """Card sections for what a run added to the metadata: the hyperparameter search
    (``training.search``) that chose its configuration."""
    search = meta.get("search")
    if not search:
        return []
    rows = "\n".join(
        f"| {trial['trial']} | {trial['val_accuracy']:.4f} | {trial['epochs']} | "
        + ", ".join(f"{key}={value}" for key, value in trial["hyperparameters"].items())
        + " |"
        for trial in search["trials"]
    )
    best = ", ".join(f"{key}={value}" for key, value in search["best_hyperparameters"].items())
    return [
        f"""## Hyperparameter search

KerasTuner {search["tuner"]} within {search["budget_seconds"]} s ({search["seconds"]} s used, {len(search["trials"])}
trials), choosing on the validation split only (`val_accuracy`; the test split is never seen by the search).
Best: {best}.

| trial | val accuracy | epochs | hyperparameters |
|---|---|---|---|
{rows}

"""
    ]

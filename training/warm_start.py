"""The model a fine-tune starts from: the base version's own trained weights (warm start),
or the pretrained ImageNet backbone with a new head (:func:`training.finetune_model.build_classifier`).

A warm start loads the base's ``model.keras`` (every exported version has one,
:func:`training.export.save_keras`), rebuilt at the run's input size when it differs (the
network is convolutional up to the pooling, so the same weights fit any size), and keeps
its output head: the new head's column for each class id is the base's column for that
class id (found through the base's ``labels.json``), so a candidate with the base's classes
starts out answering exactly as the base does (with a subset of them: the base's
probabilities renormalised over the subset). A class the base does not have gets a fresh
column. The layers get the names :func:`training.finetune_model.set_trainable` expects,
so BatchNorm stays frozen and the phases unfreeze the same layers as for any fine-tune.

:func:`start_model` returns the model and the record ``metadata.json`` keeps as
``initialised_from``; without a ``model.keras`` (or with one whose graph has no pooled
features) it falls back to the ImageNet weights and the record says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.export import KERAS_FILE, load_labels, load_metadata
from training.finetune_config import FinetuneConfig
from training.finetune_model import build_classifier

FEATURES_LAYER = "avg_pool"  # the pooled features, in ImageNet and fine-tuned models alike


def start_model(
    base: str | Path, classes: Sequence[str], config: FinetuneConfig, input_size: int, *, multi_label: bool = False
) -> tuple[Any, dict[str, Any]]:
    """The model to train on ``classes`` (class ids, in output order) and its ``initialised_from`` record:
    the base's own weights when ``config.warm_start`` and the base has a ``model.keras``, else ImageNet's."""
    base = Path(base)
    meta = load_metadata(base)
    variant = str(meta["variant"])
    reason = "not asked for (config.warm_start is off)"
    if config.warm_start:
        reason = f"{base} has no {KERAS_FILE}"
        if (base / KERAS_FILE).is_file():
            try:
                return warm_classifier(base, classes, config.dropout, input_size, multi_label=multi_label)
            except (KeyError, ValueError) as error:  # a graph without pooled features, or a foreign head
                reason = f"{base / KERAS_FILE} cannot be warm-started: {error}"
        print(f"warm start: no, {reason}; starting from the ImageNet weights of {variant}")
    model = build_classifier(variant, len(classes), config.dropout, input_size, multi_label=multi_label)
    return model, {"version": None, "weights": f"ImageNet ({variant})", "reason": reason}


def warm_classifier(
    base: Path, classes: Sequence[str], dropout: float, input_size: int, *, multi_label: bool = False
) -> tuple[Any, dict[str, Any]]:
    """The base's ``model.keras`` at ``input_size`` with its head's columns for ``classes`` (see the module doc)."""
    import keras
    from keras import layers

    meta = load_metadata(base)
    loaded = keras.saving.load_model(base / KERAS_FILE, compile=False)
    if int(loaded.inputs[0].shape[1]) != input_size:
        loaded = _resized(loaded, input_size)
    dense = [layer for layer in loaded.layers if isinstance(layer, layers.Dense)]
    if not dense:
        raise ValueError("no Dense output layer")
    kernel, bias = (np.asarray(w) for w in dense[-1].get_weights())
    index = {entry["class_id"]: int(entry["index"]) for entry in load_labels(base)}
    if len(index) != kernel.shape[1]:
        raise ValueError(f"labels.json has {len(index)} classes, the head {kernel.shape[1]}")

    features = loaded.get_layer(FEATURES_LAYER).output
    x = layers.Dropout(dropout, name="classifier_dropout")(features)
    head = layers.Dense(len(classes), name="classifier_logits")
    x = head(x)
    activation = "sigmoid" if multi_label else "softmax"
    probabilities = layers.Activation(activation, name="classifier_probabilities", dtype="float32")(x)
    model = keras.Model(loaded.inputs, probabilities, name=f"{loaded.name.removesuffix('_finetuned')}_finetuned")

    new_kernel, new_bias = (np.array(w) for w in head.get_weights())  # fresh columns for unknown classes
    kept = [c for c in classes if c in index]
    for column, class_id in enumerate(classes):
        if class_id in index:
            new_kernel[:, column] = kernel[:, index[class_id]]
            new_bias[column] = bias[index[class_id]]
    head.set_weights([new_kernel, new_bias])
    version = f"{meta.get('name', base.parent.name)}/{meta.get('version', base.name)}"
    print(f"warm start: from {version} ({KERAS_FILE}), its head for {len(kept)} of {len(classes)} classes")
    record = {
        "version": version,
        "path": str(base),
        "weights": KERAS_FILE,
        "input_size": input_size,
        "head_classes_kept": len(kept),
        "new_classes": [c for c in classes if c not in index],
    }
    return model, record


def _resized(model: Any, input_size: int) -> Any:
    """The same functional model and weights with a ``[None, input_size, input_size, 3]`` input."""
    import keras

    config = model.get_config()
    for layer in config["layers"]:
        if layer["class_name"] == "InputLayer":
            layer["config"]["batch_shape"] = [None, input_size, input_size, 3]
    resized = keras.Model.from_config(config)
    resized.set_weights(model.get_weights())
    return resized

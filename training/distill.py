"""Knowledge distillation: a small student learns from a larger teacher on the same folder.

    python -m training.distill --teacher models/digits-lite2/1 --student-base models/efficientnet_lite0/1 \
        --data DIR --out models --name digits-student [--version 1] [--temperature 4] [--alpha 0.7]

The teacher is an exported single-label model trained on ``DIR``'s classes (a
``training.finetune`` export: its ``splits.json`` gives the student the very same train /
validation / test files, so both are scored on the same unseen images). Its probabilities on
the training and validation files, softened by ``--temperature`` T (``p^(1/T)``
renormalised, which is ``softmax(logits / T)``), become the soft targets. The student (the
base model's backbone with a new head, trained in the two phases of ``training.finetune``)
minimises Hinton et al.'s loss::

    alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy(label, student)

The export is a served version (``training.export`` layout) whose ``metadata.json``
``distillation`` record and card give both models' test top-1 and model time per image,
measured through the runner on the same held-out files on this machine; MLflow logs the run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ml.export import export_read
from ml.runner import Classifier
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
from training.finetune_card import finetune_metadata
from training.finetune_config import FinetuneConfig
from training.finetune_data import ImageSet, Split, scan_folder, stratified_split
from training.finetune_model import build_classifier, predict_probabilities, train
from training.finetune_pipeline import image_dataset
from training.metrics import classification_metrics
from training.tools_measure import Labelled, measure
from training.tracking import card_section, scalar_metrics, tracked_run
from training.uncertainty import calibrate_probabilities, record_calibration


def soften(probabilities: NDArray[np.float32], temperature: float) -> NDArray[np.float32]:
    """``softmax(logits / T)`` from the probabilities ``softmax(logits)``: ``p^(1/T)`` renormalised."""
    logs = np.log(np.clip(probabilities.astype(np.float64), 1e-12, 1.0)) / temperature
    logs -= logs.max(axis=1, keepdims=True)
    soft = np.exp(logs)
    return np.asarray(soft / soft.sum(axis=1, keepdims=True), dtype=np.float32)


def distillation_loss(num_classes: int, temperature: float, alpha: float) -> Any:
    """Keras loss over targets ``[one-hot | teacher soft targets]`` and the student's probabilities."""
    from keras import ops

    def loss(targets: Any, probabilities: Any) -> Any:
        hard, soft = targets[:, :num_classes], targets[:, num_classes:]
        logs = ops.log(ops.clip(probabilities, 1e-7, 1.0))
        student_soft = ops.log_softmax(logs / temperature, axis=-1)
        kl = ops.sum(soft * (ops.log(ops.clip(soft, 1e-7, 1.0)) - student_soft), axis=-1)
        cross_entropy = -ops.sum(hard * logs, axis=-1)
        return alpha * temperature**2 * kl + (1 - alpha) * cross_entropy

    loss.__name__ = "distillation"
    return loss


def hard_accuracy(num_classes: int) -> Any:
    """Top-1 against the one-hot half of the targets (Keras metric)."""
    import keras
    from keras import ops

    def accuracy(targets: Any, probabilities: Any) -> Any:
        return ops.cast(
            ops.equal(ops.argmax(targets[:, :num_classes], axis=-1), ops.argmax(probabilities, axis=-1)), "float32"
        )

    return keras.metrics.MeanMetricWrapper(accuracy, name="accuracy")


def teacher_split(teacher: Path, folder: ImageSet, config: FinetuneConfig) -> Split:
    """The teacher's own split (``splits.json``), else a fresh stratified one."""
    splits_path = teacher / SPLITS_FILE
    if not splits_path.is_file():
        return stratified_split(folder.targets, config.val_fraction, config.test_fraction, config.seed)
    recorded = json.loads(splits_path.read_text(encoding="utf-8"))
    index = {path.relative_to(folder.root).as_posix(): i for i, path in enumerate(folder.files)}
    missing = [name for part in ("train", "val", "test") for name in recorded[part] if name not in index]
    if missing:
        raise ValueError(f"{folder.root} lacks {len(missing)} files of the teacher's {SPLITS_FILE} (e.g. {missing[0]})")
    return Split(*(np.asarray([index[name] for name in recorded[part]], np.int64) for part in ("train", "val", "test")))


def distill(
    teacher: Path,
    student_base: Path,
    data: Path,
    out: Path,
    name: str,
    version: str = "1",
    *,
    temperature: float = 4.0,
    alpha: float = 0.7,
    config: FinetuneConfig | None = None,
    workdir: Path | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Train the student on the teacher's soft targets and export it; returns its metadata."""
    started = time.monotonic()
    config = config or FinetuneConfig()
    target = model_dir(out, name, version)
    if target.exists() and not force:
        raise FileExistsError(f"{target} exists (use --force to replace it)")
    exported = export_read(teacher)
    folder = scan_folder(data)
    if [entry["class_id"] for entry in exported.labels] != folder.classes or exported.multi_label:
        raise ValueError(f"{teacher} is not a single-label model of {data}'s classes {folder.classes}")
    split = teacher_split(Path(teacher), folder, config)
    base_meta = load_metadata(student_base)
    input_size = config.input_size or int(exported.metadata["input_size"])
    config = FinetuneConfig(**{**asdict(config), "input_size": input_size})
    fingerprint = folder.fingerprint()
    params = {
        "teacher": str(teacher),
        "student_base": str(student_base),
        "data": str(data),
        "temperature": temperature,
        "alpha": alpha,
        "config": asdict(config),
        "dataset": fingerprint,
    }
    with tracked_run("distill", run_name=f"{name}-{version}", params=params) as tracking:
        import keras

        keras.utils.set_random_seed(config.seed)
        teacher_runner = Classifier(Path(teacher)).load()
        targets = np.zeros((len(folder.files), 2 * len(folder.classes)), np.float32)
        targets[:, : len(folder.classes)] = folder.vectors
        seen = np.concatenate([split.train, split.val])
        teacher_probabilities = _probabilities(teacher_runner, [folder.files[i] for i in seen])
        targets[seen, len(folder.classes) :] = soften(teacher_probabilities, temperature)
        work = workdir or Path("var/training") / f"{name}-{version}"
        work.mkdir(parents=True, exist_ok=True)

        def pipeline(indices: NDArray[np.int64], training: bool, vectors: NDArray[np.float32]) -> Any:
            return image_dataset([folder.files[i] for i in indices], vectors[indices], input_size, config, training)

        model = build_classifier(str(base_meta["variant"]), len(folder.classes), config.dropout, input_size)
        run = train(
            model,
            pipeline(split.train, True, targets),
            pipeline(split.val, False, targets),
            config=config,
            steps_per_epoch=int(np.ceil(len(split.train) / config.batch_size)),
            class_weight=None,
            workdir=work,
            multi_label=False,
            loss=distillation_loss(len(folder.classes), temperature, alpha),
            metrics=[hard_accuracy(len(folder.classes))],
        )
        train_seconds = time.monotonic() - started
        test_probabilities = predict_probabilities(model, pipeline(split.test, False, folder.vectors))
        test = classification_metrics(folder.targets[split.test], test_probabilities, folder.classes)
        val_probabilities = predict_probabilities(model, pipeline(split.val, False, folder.vectors))
        calibration = calibrate_probabilities(
            val_probabilities, val_probabilities.argmax(axis=1) == folder.targets[split.val]
        )
        held_out = [
            Labelled(folder.files[i].name, folder.files[i], (folder.classes[int(folder.targets[i])],))
            for i in split.test
        ]
        with staging_dir(target, force=force) as tmp:
            export_saved_model(model, tmp / SAVED_MODEL_DIR)
            convert_tflite(tmp / SAVED_MODEL_DIR, tmp / TFLITE_FILE)
            write_json(tmp / LABELS_FILE, exported.labels)
            splits = {
                part: [folder.files[i].relative_to(folder.root).as_posix() for i in indices]
                for part, indices in (("train", split.train), ("val", split.val), ("test", split.test))
            }
            write_json(tmp / SPLITS_FILE, {"seed": config.seed, "root": str(folder.root), **splits})
            meta = finetune_metadata(
                name=name,
                version=version,
                config=config,
                base_meta=base_meta,
                input_size=input_size,
                folder=folder,
                fingerprint=fingerprint,
                split=split,
                class_weight=None,
                run=run,
                train_seconds=train_seconds,
                workdir=work,
                test=test,
                thresholds=None,
                model=model,
                export=tmp,
            )
            write_json(tmp / METADATA_FILE, meta)  # the runner reads it to measure the student
            comparison = {
                "teacher": measure(Path(teacher), held_out).record(),
                "student": measure(tmp, held_out).record(),
            }
            meta["distillation"] = {
                "teacher": {"name": exported.name, "version": exported.version, "path": str(teacher)},
                "temperature": temperature,
                "alpha": alpha,
                "loss": "alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(label, student)",
                "held_out": f"the teacher's test split ({len(held_out)} images)",
                **comparison,
            }
            meta["build_seconds"] = round(time.monotonic() - started, 1)
            meta["tracking"] = tracking.record()
            write_json(tmp / METADATA_FILE, meta)
            (tmp / MODEL_CARD_FILE).write_text(model_card(meta), encoding="utf-8")
            record_calibration(tmp, calibration, f"the validation split ({len(split.val)} images; training.distill)")
        tracking.log_history(run.history)
        tracking.log_metrics(
            {
                **scalar_metrics(test.summary(), "test_"),
                **{f"{who}_top1": comparison[who]["top1"] for who in comparison},
                **{f"{who}_ms_per_image": comparison[who]["inference_ms_per_image"] for who in comparison},
            }
        )
        tracking.log_artifacts(target / METADATA_FILE, target / MODEL_CARD_FILE)
    return meta


def _probabilities(classifier: Classifier, files: Sequence[Path]) -> NDArray[np.float32]:
    chunks = [
        classifier.predict(np.stack([classifier.preprocess(path) for path in files[start : start + 16]]))
        for start in range(0, len(files), 16)
    ]
    return np.asarray(np.concatenate(chunks), dtype=np.float32)


def model_card(meta: dict[str, Any]) -> str:
    """``MODEL_CARD.md`` of a distilled student."""
    d = meta["distillation"]
    teacher, student = d["teacher"], d["student"]
    rows = "\n".join(
        f"| {who} | {record['model']} | {record['top1']:.2%} | {record['inference_ms_per_image']:.1f} |"
        for who, record in (("teacher", teacher), ("student", student))
    )
    return f"""# {meta["name"]} v{meta["version"]}: a student distilled from {teacher["model"]}

{meta["architecture"]}, {meta["input_size"]} px, trained on `{meta["dataset"]["path"]}`
(SHA-256 `{meta["dataset"]["sha256"]}`) with the teacher's soft targets at temperature {d["temperature"]}
(alpha {d["alpha"]}; loss `{d["loss"]}`), in {meta["training"]["epochs_run"]} epochs.

## Teacher and student on the same unseen images

{d["held_out"]}, through the runner; model time per image in batches of 16 on {meta["cpu"]}
(a shared machine: other jobs were running).

| | model | top-1 | ms / image |
|---|---|---|---|
{rows}

Student minus teacher: {(student["top1"] - teacher["top1"]) * 100:+.1f} points of top-1, at
{student["inference_ms_per_image"] / teacher["inference_ms_per_image"]:.2f}x the teacher's time.

""" + card_section(meta.get("tracking"))


def main(argv: Sequence[str] | None = None) -> int:
    defaults = FinetuneConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", type=Path, required=True, help="the exported teacher (single-label)")
    parser.add_argument("--student-base", type=Path, required=True, help="the student's pretrained base export")
    parser.add_argument("--data", type=Path, required=True, help="DIR/<class>/*, the teacher's classes")
    parser.add_argument("--out", type=Path, default=Path("models"))
    parser.add_argument("--name", required=True)
    parser.add_argument("--version", default="1")
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--alpha", type=float, default=0.7, help="weight of the soft-target term")
    parser.add_argument("--warmup-epochs", type=int, default=defaults.warmup_epochs)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--flip", choices=("none", "horizontal", "vertical", "both"), default=defaults.flip)
    parser.add_argument("--crop-min", type=float, default=defaults.crop_min, help="1 = no random crops")
    parser.add_argument("--color-jitter", type=float, default=defaults.color_jitter, help="0 = off")
    parser.add_argument("--erasing", type=float, default=defaults.erasing, help="probability; 0 = off")
    parser.add_argument("--input-size", type=int, default=0, help="default: the teacher's")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2)
    args = parser.parse_args(argv)
    config = FinetuneConfig(
        warmup_epochs=args.warmup_epochs,
        epochs=args.epochs,
        batch_size=args.batch_size,
        flip=args.flip,
        crop_min=args.crop_min,
        color_jitter=args.color_jitter,
        erasing=args.erasing,
        input_size=args.input_size,
        label_smoothing=0.0,
        verbose=args.verbose,
    )
    try:
        meta = distill(
            args.teacher,
            args.student_base,
            args.data,
            args.out,
            args.name,
            args.version,
            temperature=args.temperature,
            alpha=args.alpha,
            config=config,
            workdir=args.workdir,
            force=args.force,
        )
    except (ValueError, FileExistsError) as error:
        parser.exit(2, f"training.distill: error: {error}\n")
    d = meta["distillation"]
    print(
        f"teacher top-1 {d['teacher']['top1']:.2%} at {d['teacher']['inference_ms_per_image']:.1f} ms/image; "
        f"student {d['student']['top1']:.2%} at {d['student']['inference_ms_per_image']:.1f} ms/image"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

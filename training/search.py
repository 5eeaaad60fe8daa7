"""Hyperparameter search for ``python -m training.finetune --search SECONDS`` (KerasTuner).

The search space: the head's warm-up learning rate, the fine-tuning learning rate, how many
top blocks are unfrozen, the augmentation strength (0 = none, 1 = the configured crops,
colour jitter and erasing, 0.5 = half of each) and the input size (``--input-size`` choices,
default: half, two thirds and all of the parent's side, multiples of 32). KerasTuner's
``RandomSearch`` draws trials; each trains both phases of ``training.finetune`` on the
training split and is scored by its best ``val_accuracy`` on the validation split -- the
test split is never seen by the search. Trials run while the budget allows another of the
average length so far (the first always runs); then the best configuration is fine-tuned
again from the pretrained weights and exported, its metadata and card recording the search
(``"search"``: every trial's parameters, score and time). The search is an MLflow run of its
own (experiment ``search``), one step per trial.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from training.finetune_config import FinetuneConfig
from training.finetune_data import balanced_class_weights, scan_folder, stratified_split
from training.finetune_model import build_classifier, train
from training.finetune_pipeline import image_dataset
from training.tracking import tracked_run

LEARNING_RATES = (3e-3, 1e-2, 3e-2)
FINETUNE_LEARNING_RATES = (1e-4, 3e-4, 1e-3)
FINETUNE_BLOCKS = (2, 4, 8)
AUGMENTATION = (0.0, 0.5, 1.0)


def input_size_choices(base_size: int) -> list[int]:
    """Half, two thirds and all of the parent's side, each a multiple of 32."""
    return sorted({max(32, round(base_size * fraction / 32) * 32) for fraction in (0.5, 2 / 3, 1.0)})


def trial_config(config: FinetuneConfig, values: dict[str, Any]) -> FinetuneConfig:
    """``config`` with one trial's hyperparameters (``augmentation`` scales crops, jitter and erasing)."""
    strength = float(values["augmentation"])
    return replace(
        config,
        learning_rate=float(values["learning_rate"]),
        finetune_learning_rate=float(values["finetune_learning_rate"]),
        finetune_blocks=int(values["finetune_blocks"]),
        input_size=int(values["input_size"]),
        crop_min=1 - (1 - config.crop_min) * strength,
        color_jitter=config.color_jitter * strength,
        erasing=config.erasing * strength,
    )


def search(
    *,
    base_variant: str,
    data: str | Path,
    config: FinetuneConfig,
    budget_seconds: float,
    input_sizes: list[int],
    workdir: Path,
    max_trials: int = 0,
) -> tuple[FinetuneConfig, dict[str, Any]]:
    """Search within ``budget_seconds`` (and ``max_trials`` when not 0); returns the best
    trial's config and the search record."""
    import keras_tuner as kt

    started = time.monotonic()
    folder = scan_folder(data)  # single-label: the multi-label mode has no search
    split = stratified_split(folder.targets, config.val_fraction, config.test_fraction, config.seed)
    weights = balanced_class_weights(folder.targets[split.train], len(folder.classes)) if config.class_weights else None
    steps = int(np.ceil(len(split.train) / config.batch_size))
    seconds: dict[int, float] = {}

    class FinetuneHyperModel(kt.HyperModel):  # type: ignore[misc]
        def build(self, hp: Any) -> Any:
            hp.Choice("learning_rate", LEARNING_RATES)
            hp.Choice("finetune_learning_rate", FINETUNE_LEARNING_RATES)
            hp.Choice("finetune_blocks", FINETUNE_BLOCKS)
            hp.Choice("augmentation", AUGMENTATION)
            size = hp.Choice("input_size", input_sizes)
            return build_classifier(base_variant, len(folder.classes), config.dropout, size)

        def fit(self, hp: Any, model: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
            began = time.monotonic()
            trial = trial_config(config, hp.values)

            def pipeline(indices: Any, training: bool) -> Any:
                files = [folder.files[i] for i in indices]
                return image_dataset(files, folder.vectors[indices], trial.input_size, trial, training)

            trial_dir = workdir / f"trial-{len(seconds)}"
            trial_dir.mkdir(parents=True, exist_ok=True)
            run = train(
                model,
                pipeline(split.train, True),
                pipeline(split.val, False),
                config=trial,
                steps_per_epoch=steps,
                class_weight=weights,
                workdir=trial_dir,
                multi_label=False,
            )
            seconds[len(seconds)] = time.monotonic() - began
            return {"val_accuracy": max(run.history.get("val_accuracy", [0.0]))}

    tuner = kt.RandomSearch(
        FinetuneHyperModel(),
        objective=kt.Objective("val_accuracy", direction="max"),
        max_trials=1,
        seed=config.seed,
        directory=str(workdir),
        project_name="keras-tuner",
        overwrite=True,
    )
    space = len(LEARNING_RATES) * len(FINETUNE_LEARNING_RATES) * len(FINETUNE_BLOCKS) * len(AUGMENTATION)
    params = {"budget_seconds": budget_seconds, "input_sizes": input_sizes, "data": str(data), "config": asdict(config)}
    with tracked_run("search", run_name=workdir.parent.name, params=params) as tracking:
        limit = min(space * len(input_sizes), max_trials or space * len(input_sizes))
        while len(tuner.oracle.trials) < limit:
            elapsed = time.monotonic() - started
            average = sum(seconds.values()) / len(seconds) if seconds else 0.0
            if seconds and elapsed + average > budget_seconds:
                break
            tuner.oracle.max_trials = len(tuner.oracle.trials) + 1
            done = len(tuner.oracle.trials)
            tuner.search(verbose=0)
            if len(tuner.oracle.trials) == done:
                break  # the oracle found no new combination
        trials = []
        for index, trial in enumerate(tuner.oracle.trials.values()):
            score = trial.score if trial.score is not None else float("nan")
            trials.append(
                {
                    "trial": index,
                    "val_accuracy": round(float(score), 4),
                    "epochs": config.warmup_epochs + config.epochs,
                    "seconds": round(seconds.get(index, 0.0), 1),
                    "hyperparameters": dict(trial.hyperparameters.values),
                }
            )
            tracking.log_metrics({"val_accuracy": float(score)}, step=index)
        best = dict(tuner.get_best_hyperparameters(1)[0].values)
        tracking.log_params({"best": best})
    record = {
        "tuner": "RandomSearch",
        "objective": "best val_accuracy over a trial's epochs (validation split only)",
        "budget_seconds": budget_seconds,
        "seconds": round(time.monotonic() - started, 1),
        "space": {
            "learning_rate": list(LEARNING_RATES),
            "finetune_learning_rate": list(FINETUNE_LEARNING_RATES),
            "finetune_blocks": list(FINETUNE_BLOCKS),
            "augmentation": list(AUGMENTATION),
            "input_size": input_sizes,
        },
        "trials": trials,
        "best_hyperparameters": best,
        "tracking": tracking.record(),
    }
    return trial_config(config, best), record

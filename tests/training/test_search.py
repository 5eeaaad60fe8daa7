"""Hyperparameter search with KerasTuner before a fine-tune, chosen on the validation split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from training import finetune


@pytest.mark.slow
def test_search_picks_the_best_validation_trial_and_the_card_records_it(
    model_dir: Path, digits_subset: Path, tmp_path: Path
) -> None:
    # Two short trials (one head epoch at 64 px each), then the chosen configuration is trained again.
    args = ["--data", str(digits_subset), "--name", "digits-search", "--out", str(tmp_path), "--base", str(model_dir)]
    args += ["--warmup-epochs", "1", "--epochs", "0", "--batch-size", "16", "--flip", "none", "--verbose", "0"]
    args += ["--search", "900", "--search-trials", "2", "--search-sizes", "64", "--workdir", str(tmp_path / "w")]
    assert finetune.main(args) == 0
    exported = tmp_path / "digits-search" / "1"
    meta = json.loads((exported / "metadata.json").read_text())
    search = meta["search"]
    assert len(search["trials"]) == 2
    best = max(search["trials"], key=lambda trial: trial["val_accuracy"])
    assert search["best_hyperparameters"] == best["hyperparameters"]
    # The exported model was trained with the chosen values.
    assert meta["training"]["config"]["learning_rate"] == best["hyperparameters"]["learning_rate"]
    assert meta["input_size"] == 64
    assert "## Hyperparameter search" in (exported / "MODEL_CARD.md").read_text()
    run = MlflowClient(search["tracking"]["tracking_uri"]).get_run(search["tracking"]["run_id"])
    assert run.data.params["best.input_size"] == "64"

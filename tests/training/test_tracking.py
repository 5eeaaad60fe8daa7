"""Experiment tracking: tools log their runs to MLflow and the exported model links its run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from training.finetune import FinetuneResult
from training.metrics import ClassificationMetrics
from training.tracking import tracked_run


def test_a_run_lands_in_the_configured_store_with_its_params_and_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "mlruns"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    card = tmp_path / "MODEL_CARD.md"
    card.write_text("# a card\n")
    with tracked_run("tools", run_name="try", params={"config": {"lr": 0.01, "blocks": 4}}) as run:
        run.log_metrics({"top1": 0.75, "skipped": None})
        run.log_history({"loss": [1.0, 0.5]})
        run.log_artifacts(card)
    client = MlflowClient(store.as_uri())
    logged = client.get_run(run.run_id)
    assert logged.info.status == "FINISHED"
    assert logged.data.params == {"config.lr": "0.01", "config.blocks": "4"}
    assert logged.data.metrics == {"top1": 0.75, "loss": 0.5}
    assert [m.value for m in client.get_metric_history(run.run_id, "loss")] == [1.0, 0.5]
    assert [a.path for a in client.list_artifacts(run.run_id)] == ["MODEL_CARD.md"]
    assert run.record()["tracking_uri"] == store.as_uri()


def test_a_failing_tool_leaves_a_failed_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    with pytest.raises(ValueError, match="no images"), tracked_run("tools", run_name="broken") as run:
        raise ValueError("no images")
    assert MlflowClient((tmp_path / "mlruns").as_uri()).get_run(run.run_id).info.status == "FAILED"


def test_the_fine_tuned_model_links_its_run(finetuned: FinetuneResult) -> None:
    meta = json.loads((finetuned.target / "metadata.json").read_text())
    record = meta["tracking"]
    logged = MlflowClient(record["tracking_uri"]).get_run(record["run_id"])
    assert logged.info.status == "FINISHED"
    assert logged.data.params["dataset.sha256"] == meta["dataset"]["sha256"]
    assert logged.data.params["config.input_size"] == "96"
    assert isinstance(finetuned.test, ClassificationMetrics)
    assert logged.data.metrics["test_top1"] == pytest.approx(finetuned.test.top1)
    assert "val_loss" in logged.data.metrics
    assert record["run_id"] in (finetuned.target / "MODEL_CARD.md").read_text()

"""Knowledge distillation on real scans: a student learns from the fine-tuned teacher's soft targets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from ml.cache import get_classifier
from training.distill import distill, soften
from training.finetune import FinetuneConfig, FinetuneResult


def test_softening_keeps_the_ranking_and_flattens_the_distribution() -> None:
    probabilities = np.asarray([[0.7, 0.2, 0.1]], np.float32)
    soft = soften(probabilities, 4.0)
    assert soft.sum() == pytest.approx(1.0)
    assert soft[0].argsort().tolist() == [2, 1, 0]
    assert soft[0, 0] < 0.7
    assert soft[0, 2] > 0.1
    np.testing.assert_allclose(soften(probabilities, 1.0), probabilities, rtol=1e-5)


@pytest.mark.slow
def test_the_student_learns_from_the_teacher_and_its_card_compares_them(
    finetuned: FinetuneResult, model_dir: Path, digits_subset: Path, tmp_path: Path
) -> None:
    config = FinetuneConfig(
        warmup_epochs=2, epochs=2, batch_size=16, color_jitter=0.0, erasing=0.0, flip="none", verbose=2
    )
    meta = distill(
        finetuned.target, model_dir, digits_subset, tmp_path, "digits-student", config=config, workdir=tmp_path / "w"
    )
    student = tmp_path / "digits-student" / "1"
    record = meta["distillation"]
    teacher_split = json.loads((finetuned.target / "splits.json").read_text())
    assert json.loads((student / "splits.json").read_text())["test"] == teacher_split["test"]  # the same unseen scans
    assert record["student"]["count"] == record["teacher"]["count"] == len(teacher_split["test"])
    # Four short epochs on 240 scans: well above chance (10 %), measured through the runner.
    assert record["student"]["top1"] >= 0.3, record
    assert record["student"]["inference_ms_per_image"] > 0
    card = (student / "MODEL_CARD.md").read_text()
    assert "Teacher and student on the same unseen images" in card
    assert f"{record['student']['top1']:.2%}" in card
    (result,) = get_classifier(student).classify([digits_subset / teacher_split["test"][0]])
    assert result.top.class_id in {str(d) for d in range(10)}
    run = MlflowClient(meta["tracking"]["tracking_uri"]).get_run(meta["tracking"]["run_id"])
    assert run.data.params["temperature"] == "4.0"
    assert run.data.metrics["student_top1"] == pytest.approx(record["student"]["top1"])

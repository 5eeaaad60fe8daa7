"""Fine-tuning on real scans (scikit-learn's digits), served by the runner, and its evaluation report."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import DIGITS_PER_CLASS as PER_CLASS
from training import evaluate
from training.finetune import FinetuneResult, scan_folder, stratified_split
from training.metrics import ClassificationMetrics


def test_split_is_stratified_disjoint_and_seeded() -> None:
    targets = np.repeat(np.arange(3), [10, 20, 1])
    split = stratified_split(targets, 0.2, 0.2, seed=7)
    parts = [set(split.train.tolist()), set(split.val.tolist()), set(split.test.tolist())]
    assert set().union(*parts) == set(range(len(targets)))
    assert sum(len(p) for p in parts) == len(targets)
    assert np.bincount(targets[split.test], minlength=3).tolist() == [2, 4, 0]
    assert np.bincount(targets[split.val], minlength=3).tolist() == [2, 4, 0]
    assert 30 in split.train  # a class with one image keeps it for training
    again = stratified_split(targets, 0.2, 0.2, seed=7)
    assert split.test.tolist() == again.test.tolist()


def test_finetune_learns_real_digits_and_exports_served_layout(finetuned: FinetuneResult, digits_subset: Path) -> None:
    target = finetuned.target
    assert target.name == "2"
    assert target.parent.name == "digits"
    meta = json.loads((target / "metadata.json").read_text())
    assert meta["format_version"] == 1
    assert meta["input_size"] == 96
    assert meta["num_classes"] == 10
    assert meta["signature"]["name"] == "serve"
    assert meta["dataset"]["files"] == 10 * PER_CLASS
    assert len(meta["dataset"]["sha256"]) == 64
    assert meta["splits"]["train"] + meta["splits"]["val"] + meta["splits"]["test"] == 10 * PER_CLASS
    assert meta["parent_model"]["name"] == "efficientnet_lite0"
    labels = json.loads((target / "labels.json").read_text())
    assert [entry["class_id"] for entry in labels] == [str(d) for d in range(10)]
    assert "Held-out test split" in (target / "MODEL_CARD.md").read_text()
    assert any((Path(meta["training"]["workdir"]) / "logs").rglob("events.out.tfevents.*"))  # TensorBoard
    # Far above chance (10 %) on scans it never saw: 80 test images after a minute or two of training.
    assert isinstance(finetuned.test, ClassificationMetrics)
    assert finetuned.test.count == meta["splits"]["test"] == 80
    assert finetuned.test.top1 >= 0.6, meta["test_metrics"]


def test_exported_model_classifies_held_out_scans_through_the_runner(
    finetuned: FinetuneResult, digits_subset: Path
) -> None:
    from ml.cache import get_classifier

    classifier = get_classifier(finetuned.target)
    held_out = json.loads((finetuned.target / "splits.json").read_text())["test"]
    results = classifier.classify([digits_subset / name for name in held_out], top_k=3)
    predicted = [r.top.class_id for r in results]
    expected = [name.split("/")[0] for name in held_out]
    correct = [p == e for p, e in zip(predicted, expected, strict=True)]
    # The runner's own decode + preprocess gives the same answers as the training pipeline's test pass.
    assert isinstance(finetuned.test, ClassificationMetrics)
    assert sum(correct) / len(correct) == pytest.approx(finetuned.test.top1, abs=1.5 / len(correct))
    first_correct = held_out[correct.index(True)]
    (single,) = classifier.classify([(digits_subset / first_correct).read_bytes()])
    assert single.top.class_id == first_correct.split("/")[0]


def test_metrics_match_a_hand_computation() -> None:
    # 5 images, 3 classes. Predictions (argmax): 0, 0, 1, 2, 1; truth: 0, 1, 1, 2, 2.
    probabilities = np.array(
        [
            [0.90, 0.05, 0.05],
            [0.60, 0.30, 0.10],
            [0.20, 0.70, 0.10],
            [0.10, 0.10, 0.80],
            [0.30, 0.40, 0.30],
        ],
        dtype=np.float64,  # float32 0.6 would land just above the 0.6 bin edge
    )
    targets = np.array([0, 1, 1, 2, 2])
    m = evaluate.classification_metrics(targets, probabilities, ["a", "b", "c"], bins=10)  # type: ignore[arg-type]  # float64 on purpose (above)
    assert m.confusion == [[1, 0, 0], [1, 1, 0], [0, 1, 1]]
    assert m.top1 == pytest.approx(3 / 5)
    assert m.top5 == 1.0
    assert m.precision == pytest.approx([1 / 2, 1 / 2, 1 / 1])
    assert m.recall == pytest.approx([1 / 1, 1 / 2, 1 / 2])
    assert m.f1 == pytest.approx([2 / 3, 1 / 2, 2 / 3])
    assert m.support == [1, 2, 2]
    assert m.averages(weighted=False)["f1"] == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)
    assert m.averages(weighted=True)["recall"] == pytest.approx((1 * 1 + 2 * 0.5 + 2 * 0.5) / 5)
    # Confidences 0.9 (right), 0.6 (wrong), 0.7 (right), 0.8 (right), 0.4 (wrong); one per bin.
    expected_ece = (abs(1 - 0.9) + abs(0 - 0.6) + abs(1 - 0.7) + abs(1 - 0.8) + abs(0 - 0.4)) / 5
    assert m.ece == pytest.approx(expected_ece, abs=1e-6)


def test_evaluate_writes_the_report_into_the_model(
    finetuned: FinetuneResult, digits_subset: Path, tmp_path: Path
) -> None:
    # A copy: evaluate rewrites metadata.json (and its uncertainty thresholds), and the
    # session's fine-tuned model is shared with other tests that read what training wrote.
    model = tmp_path / "digits" / "2"
    shutil.copytree(finetuned.target, model)
    assert evaluate.main(["--model", str(model), "--data", str(digits_subset), "--split", "test"]) == 0
    report = model / "evaluation"
    for name in ("report.html", "confusion_matrix.png", "confusion_matrix.csv", "reliability.png", "metrics.json"):
        assert (report / name).stat().st_size > 0, name
    assert (report / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    with (report / "confusion_matrix.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[0][1:] == [str(d) for d in range(10)]
    matrix = np.array([[int(v) for v in row[1:]] for row in rows[1:]])
    assert isinstance(finetuned.test, ClassificationMetrics)
    assert matrix.sum() == finetuned.test.count
    assert np.trace(matrix) / matrix.sum() == pytest.approx(finetuned.test.top1, abs=1.5 / matrix.sum())
    meta = json.loads((model / "metadata.json").read_text())
    assert meta["evaluation"]["split"] == "test"
    assert meta["evaluation"]["count"] == finetuned.test.count
    assert meta["evaluation"]["latency_ms_per_image"]["batched_inference_ms"] > 0
    assert "evaluation/confusion_matrix.png" in (model / "MODEL_CARD.md").read_text()
    assert "Top-1" in (report / "report.html").read_text()
    # Re-running replaces the card's section instead of appending a second one.
    evaluate.main(["--model", str(model), "--data", str(digits_subset), "--split", "test"])
    assert (model / "MODEL_CARD.md").read_text().count("## Evaluation") == 1
    assert scan_folder(digits_subset).classes == [str(d) for d in range(10)]

"""Multi-label fine-tuning: the labels CSV, per-class thresholds, test metrics, the
multi-digits set (composites of real scans), and a real fine-tune served by the runner."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command
from PIL import Image

from tests.conftest import MULTI_DIGITS_COUNT
from training import finetune as finetune_module
from training.datasets import materialise
from training.finetune import FinetuneResult, scan_labels_csv, stratified_split
from training.multilabel import LabelsCsvError, MultiLabelMetrics, multilabel_metrics, read_labels_csv, tune_thresholds


def _image_folder(root: Path, names: list[str]) -> Path:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), "white").save(root / name)
    return root


def _csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_labels_csv_gives_the_sorted_union_of_labels_as_multi_hot_rows(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "data", ["a.png", "sub/b.png", "c.png"])
    labels = _csv(tmp_path / "labels.csv", "labels,file\ncat ; dog,a.png\ndog,sub/b.png\n\nbird;cat;cat,c.png\n")

    rows = read_labels_csv(labels, root)

    assert rows.classes == ["bird", "cat", "dog"]
    assert [f.relative_to(root).as_posix() for f in rows.files] == ["a.png", "sub/b.png", "c.png"]
    assert rows.targets.tolist() == [[0, 1, 1], [0, 0, 1], [1, 1, 0]]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("file,label\na.png,x\n", "line 1: unknown column 'label'; the header must be file,labels"),
        ("file,labels,weight\na.png,x,1\n", "unknown column 'weight'"),
        ("file\na.png\n", "no 'labels' column"),
        ("", "empty; the first line must be the header file,labels"),
        ("file,labels\na.png,x\nb.png, ; \n", "line 3: no labels for b.png"),
        ("file,labels\na.png,x\nmissing.png,y\n", "line 3: missing.png does not exist in"),
        ("file,labels\na.png,x\nb.png,y\na.png,z\n", "line 4: a.png is listed twice (also line 2)"),
        ("file,labels\n../outside.png,x\n", "../outside.png is outside"),
        ("file,labels\na.png,x\nb.png,x\n", "need at least two classes, found ['x']"),
        ("file,labels\na.png,x,y\n", "line 2: 3 fields, the header has 2"),
    ],
)
def test_labels_csv_errors_name_the_line_and_the_reason(tmp_path: Path, text: str, message: str) -> None:
    root = _image_folder(tmp_path / "data", ["a.png", "b.png"])
    _image_folder(tmp_path, ["outside.png"])
    labels = _csv(tmp_path / "labels.csv", text)

    with pytest.raises(LabelsCsvError) as caught:
        read_labels_csv(labels, root)

    assert message in str(caught.value)


def test_finetune_cli_reports_a_missing_labels_csv_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _image_folder(tmp_path / "data", ["a.png"])
    argv = ["--data", str(root), "--multi-label", str(tmp_path / "nope.csv"), "--name", "x", "--out", str(tmp_path)]

    with pytest.raises(SystemExit) as caught:
        finetune_module.main(argv)

    assert caught.value.code == 2
    assert f"error: {tmp_path / 'nope.csv'}: no such labels file" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# Four images, three classes (class 1 has no positive). Worked out by hand below.
TRUTH = np.array([[1, 0, 0], [0, 0, 1], [1, 0, 1], [0, 0, 0]], dtype=np.float32)
SCORES = np.array([[0.9, 0.2, 0.6], [0.4, 0.1, 0.8], [0.35, 0.3, 0.9], [0.1, 0.6, 0.1]])


def test_thresholds_maximise_each_class_f1_on_a_hand_computed_example() -> None:
    thresholds = tune_thresholds(TRUTH, SCORES)

    # Class 0 (positives 0.9 and 0.35, negatives 0.4 and 0.1): F1 is 2/3 up to t=0.10,
    # 0.8 for 0.15..0.35 (both positives, one false positive), 0.5 at 0.40, 2/3 for
    # 0.45..0.90: the best range's grid point nearest 0.5 is 0.35.
    # Class 1 has no positive: the default 0.5.
    # Class 2 (positives 0.8 and 0.9, negatives 0.6 and 0.1): F1 = 1 for 0.65..0.80 -> 0.65.
    assert thresholds.tolist() == pytest.approx([0.35, 0.5, 0.65])


def test_multilabel_metrics_match_a_hand_computation() -> None:
    m = multilabel_metrics(TRUTH, SCORES, [0.35, 0.5, 0.65], ["a", "b", "c"])

    # Predicted sets: {a}, {a, c}, {a, c}, {b}; true: {a}, {c}, {a, c}, {}.
    assert m.precision == pytest.approx([2 / 3, 0.0, 1.0])
    assert m.recall == pytest.approx([1.0, 0.0, 1.0])
    assert m.f1 == pytest.approx([0.8, 0.0, 1.0])
    assert m.support == [2, 0, 2]
    assert m.micro_f1 == pytest.approx(2 * 4 / (2 * 4 + 2 + 0))  # TP 4, FP 2, FN 0
    assert m.macro_f1 == pytest.approx((0.8 + 0 + 1) / 3)
    assert m.exact_match == pytest.approx(2 / 4)
    # Class a ranked: 0.9 (yes), 0.4 (no), 0.35 (yes), 0.1 (no): AP = (1/1 + 2/3) / 2.
    assert m.average_precision == pytest.approx([5 / 6, None, 1.0])
    assert m.mean_average_precision == pytest.approx((5 / 6 + 1) / 2)
    assert m.micro_f1_all == pytest.approx(2 * 4 / (2 * 4 + 8))  # every cell predicted: 4 right, 8 wrong
    assert m.summary()["per_class"][0]["threshold"] == 0.35


def test_multi_digits_are_composites_of_real_scans_with_their_digits_as_labels(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits  # type: ignore[import-untyped]  # scikit-learn ships no types

    folder = materialise("multi-digits", tmp_path / "set", size=36, count=60)  # 1 px per scan cell
    rows = read_labels_csv(folder / "labels.csv", folder)

    assert len(rows.files) == 60
    assert rows.classes == [str(d) for d in range(10)]
    counts = rows.targets.sum(axis=1)
    assert set(counts.tolist()) <= {1.0, 2.0, 3.0}
    assert (counts >= 2).mean() > 0.5
    # The 8x8 blocks of each image that are one of scikit-learn's scans, pixel for pixel,
    # are scans of exactly the labelled digits.
    digits = load_digits()
    scans = {
        (255 - scan * (255 / 16)).round().astype(np.uint8).tobytes(): str(target)
        for scan, target in zip(digits.images, digits.target, strict=True)
    }
    for path, target in zip(rows.files[:10], rows.targets[:10], strict=True):
        pixels = np.asarray(Image.open(path))
        blocks = (pixels[y : y + 8, x : x + 8].tobytes() for y in range(36 - 7) for x in range(36 - 7))
        found = {scans[block] for block in blocks if block in scans}
        assert found == {rows.classes[i] for i in np.flatnonzero(target)}, path.name
    # Seeded: the same command writes the same set.
    again = materialise("multi-digits", tmp_path / "again", size=36, count=60)
    assert (again / "labels.csv").read_text() == (folder / "labels.csv").read_text()


def test_multi_label_split_is_stratified_by_the_rarest_label(multi_digits: Path) -> None:
    images = scan_labels_csv(multi_digits, multi_digits / "labels.csv")
    split = stratified_split(images.targets, 0.2, 0.2, seed=0)

    assert sorted([*split.train, *split.val, *split.test]) == list(range(MULTI_DIGITS_COUNT))
    for part in (split.val, split.test):
        per_class = images.vectors[part].sum(axis=0)
        assert (per_class > 0).all()  # every digit reaches validation (thresholds) and test
    assert images.multi_label
    assert images.fingerprint()["files"] == MULTI_DIGITS_COUNT


def _truth(multi_digits: Path) -> dict[str, set[str]]:
    with (multi_digits / "labels.csv").open() as handle:
        return {row["file"]: set(row["labels"].split(";")) for row in csv.DictReader(handle)}


def test_multilabel_finetune_learns_and_exports_its_thresholds(multilabel_finetuned: FinetuneResult) -> None:
    test = multilabel_finetuned.test
    assert isinstance(test, MultiLabelMetrics)
    meta = json.loads((multilabel_finetuned.target / "metadata.json").read_text())
    assert meta["task"] == "multi-label"
    assert meta["num_classes"] == 10
    assert meta["output"]["kind"].startswith("sigmoid")
    assert set(meta["thresholds"]) == {str(d) for d in range(10)}
    assert all(0.05 <= t <= 0.95 for t in meta["thresholds"].values())
    assert meta["thresholds"] == multilabel_finetuned.thresholds
    assert meta["dataset"]["labels_csv"].endswith("labels.csv")
    assert meta["training"]["class_weights"] is None
    # Predicting nothing scores micro F1 0, predicting every digit for every image about 0.3:
    # a model that reads the digits is far above both.
    baseline = meta["test_metrics"]["baselines"]["micro_f1_predict_everything"]
    assert baseline < 0.4
    assert test.micro_f1 >= 0.6, meta["test_metrics"]
    assert test.micro_f1 > baseline + 0.25, meta["test_metrics"]
    assert test.exact_match > 0.2, meta["test_metrics"]
    card = (multilabel_finetuned.target / "MODEL_CARD.md").read_text()
    assert f"micro F1 **{test.micro_f1:.3f}**" in card
    assert "| class | threshold | precision | recall | F1 | AP | support |" in card
    assert f"| 0 | {meta['thresholds']['0']:.2f} |" in card


def test_runner_returns_the_labels_passing_their_thresholds_for_held_out_composites(
    multilabel_finetuned: FinetuneResult, multi_digits: Path
) -> None:
    from ml.cache import get_classifier

    classifier = get_classifier(multilabel_finetuned.target)
    held_out = json.loads((multilabel_finetuned.target / "splits.json").read_text())["test"]
    truth = _truth(multi_digits)
    results = classifier.classify([multi_digits / name for name in held_out], top_k=3)

    assert all(r.multi_label for r in results)
    exact = [{label.class_id for label in r.labels} == truth[name] for name, r in zip(held_out, results, strict=True)]
    # The runner's decode + preprocess + thresholds give the training pipeline's test answers.
    assert isinstance(multilabel_finetuned.test, MultiLabelMetrics)
    assert sum(exact) / len(exact) == pytest.approx(multilabel_finetuned.test.exact_match, abs=1.5 / len(exact))
    for result in results:
        scores = [p.score for p in result.predictions]
        assert scores == sorted(scores, reverse=True)
        assert len(scores) == 3
        assert [label.score for label in result.labels] == sorted((s.score for s in result.labels), reverse=True)
    # A held-out composite of two or three digits the model reads right, sent alone as bytes
    # and asked for its top-1 only: every digit in it is still among its labels.
    name = next(n for n, ok in zip(held_out, exact, strict=True) if ok and len(truth[n]) >= 2)
    (single,) = classifier.classify([(multi_digits / name).read_bytes()], top_k=1)
    assert len(single.predictions) == 1
    assert single.top.class_id in truth[name]
    assert {label.class_id for label in single.labels} == truth[name]


def test_classify_command_prints_the_passing_labels(
    multilabel_finetuned: FinetuneResult, multi_digits: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ml.cache import get_classifier

    classifier = get_classifier(multilabel_finetuned.target)
    truth = _truth(multi_digits)
    held_out = json.loads((multilabel_finetuned.target / "splits.json").read_text())["test"]
    results = classifier.classify([multi_digits / n for n in held_out])
    name = next(n for n, r in zip(held_out, results, strict=True) if {x.class_id for x in r.labels} == truth[n])

    call_command("classify", str(multi_digits / name), "--model", str(multilabel_finetuned.target), "--top-k", "1")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3  # the file, its top-1, its labels
    assert lines[2].startswith("  labels: ")
    assert set(lines[2].removeprefix("  labels: ").split(", ")) == truth[name]

    call_command("classify", str(multi_digits / name), "--model", str(multilabel_finetuned.target), "--json")
    line = json.loads(capsys.readouterr().out)
    assert {entry["class_id"] for entry in line["labels"]} == truth[name]


def test_evaluate_points_a_multi_label_model_to_its_card(
    multilabel_finetuned: FinetuneResult, multi_digits: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training import evaluate

    with pytest.raises(SystemExit) as caught:
        evaluate.main(["--model", str(multilabel_finetuned.target), "--data", str(multi_digits)])

    assert caught.value.code == 2
    assert "is a multi-label model" in capsys.readouterr().err

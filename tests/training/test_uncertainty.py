"""Calibrating "Not sure" thresholds, recording them where the runner reads them, and the
flag rates on real photos against inputs that are not photos of objects."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ml.cache import get_classifier
from ml.export import ModelLoadError, export_read
from ml.uncertainty import uncertainty_thresholds
from training import evaluate
from training.uncertainty import CARD_START, Calibration, calibrate, main, record_calibration

if TYPE_CHECKING:
    from training.finetune import FinetuneResult

# Ten correctly classified images (entropy, margin): entropy rising as margin falls, plus one
# with a low entropy but a near tie (0.3, 0.05). Two wrong ones: A is flat (0.95, 0.5), B a
# near tie (0.2, 0.02).
CORRECT = [(0.1, 0.9), (0.2, 0.8), (0.3, 0.7), (0.4, 0.6), (0.5, 0.5), (0.6, 0.4), (0.7, 0.3), (0.8, 0.2), (0.9, 0.1)]
CORRECT += [(0.3, 0.05)]
WRONG = [(0.95, 0.5), (0.2, 0.02)]


def test_calibration_keeps_90_percent_of_correct_and_flags_the_most_wrong_by_hand() -> None:
    points = CORRECT + WRONG
    correct = [True] * len(CORRECT) + [False] * len(WRONG)

    chosen = calibrate([e for e, _ in points], [m for _, m in points], correct, target=0.9)

    # 9 of 10 correct must stay unflagged, so exactly one correct image may be flagged. Flagging
    # (0.9, 0.1) with entropy > 0.8 (margin >= 0.05 keeps (0.3, 0.05)) flags A and B; flagging
    # (0.3, 0.05) with margin < 0.1 (entropy <= 0.9) flags both too. Tie: the lower entropy
    # threshold wins: 0.8 / 0.05.
    assert (chosen.entropy, chosen.margin) == (0.8, 0.05)
    assert chosen.kept_correct == pytest.approx(0.9)
    assert chosen.flagged_wrong == 1.0
    assert chosen.flagged == pytest.approx(3 / 12)


def test_without_wrong_answers_calibration_spends_the_false_alarm_budget() -> None:
    chosen = calibrate([e for e, _ in CORRECT], [m for _, m in CORRECT], [True] * len(CORRECT), target=0.8)

    assert chosen.kept_correct == pytest.approx(0.8)
    assert chosen.flagged_wrong is None
    # The two least sure by entropy go: (0.9, 0.1) and (0.8, 0.2).
    assert (chosen.entropy, chosen.margin) == (0.7, 0.05)


def test_calibration_needs_a_correct_answer() -> None:
    with pytest.raises(ValueError, match="no correctly classified image"):
        calibrate([0.5], [0.1], [False])


def test_recorded_thresholds_are_what_the_runner_reads(model_dir: Path, tmp_path: Path) -> None:
    model = tmp_path / "m" / "1"
    model.mkdir(parents=True)
    for name in ("metadata.json", "labels.json", "MODEL_CARD.md"):
        shutil.copy(model_dir / name, model / name)
    calibration = Calibration(0.4, 0.03, 0.9, 100, 80, 0.9, 0.75, 0.27)

    record_calibration(model, calibration, "a test set")
    record_calibration(model, calibration, "a test set")  # re-run: one card section

    thresholds = uncertainty_thresholds(export_read(model).metadata)
    assert (thresholds.entropy, thresholds.margin, thresholds.calibrated) == (0.4, 0.03, True)
    card = (model / "MODEL_CARD.md").read_text()
    assert card.count(CARD_START) == 1
    assert "**0.4000**" in card
    assert "75% of the 20 wrongly" in card
    metadata = json.loads((model / "metadata.json").read_text())
    metadata["uncertainty"]["margin"] = 1.5
    (model / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(ModelLoadError, match="uncertainty"):
        export_read(model)


def test_shipped_model_flags_non_photos_and_not_photos_of_objects(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "uncertainty.json"

    assert (
        main(["--model", str(model_dir), "--photos", "72", "--photo-dir", str(tmp_path / "photos"), "--out", str(out)])
        == 0
    )

    measured = json.loads(out.read_text())
    assert measured["thresholds"]["calibrated"]
    assert measured["non_photos"]["count"] == 70
    assert measured["non_photos"]["flagged"] >= 0.9
    assert set(measured["non_photos"]["by_group"]) >= {"uniform noise", "solid colour", "text", "checkerboard"}
    objects = measured["photos"]["calibration_sources"]
    assert objects["count"] == 20
    assert objects["flagged"] <= 0.3
    assert "not photos of objects" in capsys.readouterr().out


def test_a_fine_tuned_model_gets_its_own_thresholds(
    finetuned: FinetuneResult, digits_subset: Path, tmp_path: Path
) -> None:
    metadata = json.loads((finetuned.target / "metadata.json").read_text())
    own = metadata["uncertainty"]
    assert "validation split" in own["calibrated_on"]
    assert own["kept_correct"] >= 0.9
    assert get_classifier(finetuned.target).uncertainty_thresholds.calibrated
    # training.evaluate --data calibrates again on the data it is given.
    model = tmp_path / "digits" / "2"
    shutil.copytree(finetuned.target, model)

    assert evaluate.main(["--model", str(model), "--data", str(digits_subset), "--split", "test"]) == 0

    again = json.loads((model / "metadata.json").read_text())["uncertainty"]
    assert "split: test" in again["calibrated_on"]
    assert again["count"] == finetuned.test.count
    assert again["kept_correct"] >= 0.9
    assert (model / "MODEL_CARD.md").read_text().count("## Uncertainty") == 1

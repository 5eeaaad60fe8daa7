"""training.convert: the converted files load and follow the SavedModel; the agreement figure is right."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from ml.engines import load_engine
from ml.preprocessing import open_rgb, to_model_input
from training.convert import FORMATS, _write_atomically, agreement, calibration_photos, convert
from training.photoset import photoset
from training.test_photos import TEST_PHOTOS


def test_agreement_on_a_tiny_fixed_example() -> None:
    reference = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.5, 0.4, 0.1]])
    candidate = np.array([[0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.4, 0.3, 0.3], [0.4, 0.5, 0.1]])

    measured = agreement(reference, candidate)

    assert measured.images == 4
    assert measured.top1_agreement == pytest.approx(0.5)  # rows 0 and 1 agree, 2 and 3 do not
    assert measured.mean_abs_diff == pytest.approx(0.6 / 12)
    assert measured.max_abs_diff == pytest.approx(0.1)
    assert agreement(reference, reference).top1_agreement == 1.0


def test_agreement_refuses_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="one shape"):
        agreement(np.ones((2, 3)), np.ones((3, 3)))


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"

    def half_write(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise RuntimeError("converter crashed")

    with pytest.raises(RuntimeError):
        _write_atomically(target, half_write)
    assert list(tmp_path.iterdir()) == []


def test_calibration_photos_are_not_agreement_photos(tmp_path: Path) -> None:
    calibration = calibration_photos(tmp_path / "calibration", count=8)
    agreement_set = photoset(600, tmp_path / "calibration")

    assert len(calibration) == 8
    agreement_bytes = {path.read_bytes() for path in agreement_set}
    assert not agreement_bytes & {path.read_bytes() for path in calibration}


@pytest.mark.slow
def test_conversion_writes_files_that_load_and_agree(built_lite0: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for name in ("saved_model", "metadata.json", "labels.json"):
        source = built_lite0 / name
        copy = shutil.copytree if source.is_dir() else shutil.copy
        copy(source, model_dir / name)

    written = convert(model_dir, list(FORMATS), calibration_dir=tmp_path / "calibration", calibration_count=16)

    assert {path.name for path in written.values()} == set(FORMATS.values())
    assert not list(model_dir.glob(".*.tmp")), "no temp file left behind"
    batch = np.stack([to_model_input(open_rgb(photo.path), 224) for photo in TEST_PHOTOS])
    reference = load_engine("savedmodel", model_dir).run(batch)
    for fmt in FORMATS:
        probabilities = load_engine(fmt, model_dir).run(batch)
        assert probabilities.shape == (len(TEST_PHOTOS), 1000), fmt
        if fmt == "tflite-int8":
            # Measured, not offered: its softmax output is int8 too (steps of 1/256), so rows
            # sum to roughly 1 and close classes can swap.
            assert ((probabilities >= 0) & (probabilities <= 1)).all()
            continue
        assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-3), fmt
        assert agreement(reference, probabilities).top1_agreement == 1.0, fmt

"""The exported model directory: contract, SavedModel predictions, TFLite agreement, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training import evaluate
from training.build_imagenet import build
from training.export import signature_probabilities
from training.test_photos import TEST_PHOTOS

pytestmark = pytest.mark.slow


def test_layout_and_metadata_contract(built_lite0: Path) -> None:
    for name in ("saved_model", "model.tflite", "labels.json", "metadata.json", "MODEL_CARD.md"):
        assert (built_lite0 / name).exists(), name
    meta = json.loads((built_lite0 / "metadata.json").read_text())
    assert meta["name"] == "efficientnet_lite0"
    assert meta["version"] == "1"
    assert meta["input_size"] == 224
    assert isinstance(meta["input_size"], int)
    assert meta["format_version"] == 1
    assert len(meta["source"]["sha256"]) == 64
    labels = json.loads((built_lite0 / "labels.json").read_text())
    assert len(labels) == 1000
    assert labels[0]["class_id"] == "n01440764"


def test_saved_model_serve_signature_classifies_the_photos(built_lite0: Path) -> None:
    import tensorflow as tf

    fn = tf.saved_model.load(str(built_lite0 / "saved_model")).signatures["serve"]
    labels = evaluate.load_labels(built_lite0)
    batch = evaluate.load_batch(evaluate.photo_samples(), 224)
    probs = signature_probabilities(fn, batch)
    assert probs.shape == (len(TEST_PHOTOS), 1000)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    for photo, p in zip(TEST_PHOTOS, probs, strict=True):
        top3 = [labels[i]["class_id"] for i in np.argsort(-p)[:3]]
        assert set(top3) & set(photo.expected), (photo.name, top3)


def test_tflite_agrees_with_saved_model(built_lite0: Path) -> None:
    samples = evaluate.photo_samples()
    saved = evaluate.predict(built_lite0, samples, 224, "saved_model")
    lite = evaluate.predict(built_lite0, samples, 224, "tflite")
    assert list(saved.argmax(axis=1)) == list(lite.argmax(axis=1))
    assert np.abs(saved - lite).max() < 1e-4


def test_evaluate_cli_and_folder_layout(built_lite0: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for photo in TEST_PHOTOS[:2]:
        folder = tmp_path / photo.expected[0]
        folder.mkdir()
        (folder / photo.filename).write_bytes(photo.path.read_bytes())
    assert evaluate.main(["--model", str(built_lite0), "--images", str(tmp_path)]) == 0
    assert "top-1" in capsys.readouterr().out
    report = evaluate.evaluate_model(built_lite0)
    assert report.count == len(TEST_PHOTOS)
    assert report.top5_accuracy == 1.0


def test_rebuild_without_force_is_a_no_op(built_lite0: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (built_lite0 / "metadata.json").stat().st_mtime_ns
    assert build("lite0", built_lite0.parent.parent, "1") == built_lite0
    assert "already built" in capsys.readouterr().out
    assert (built_lite0 / "metadata.json").stat().st_mtime_ns == before


def test_build_without_torch_or_photos_records_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import training.build_imagenet as build_module
    import training.reference_torch as reference_module

    monkeypatch.setattr(reference_module, "torch_available", lambda: False)
    monkeypatch.setattr(build_module, "photos_available", lambda: False)
    target = build("lite0", tmp_path, "7")
    meta = json.loads((target / "metadata.json").read_text())
    assert meta["version"] == "7"
    assert meta["input_size"] == 224
    assert meta["format_version"] == 1
    assert meta["equivalence"]["checked"] is False
    assert "torch" in meta["equivalence"]["reason"]
    assert meta["test_photos"]["checked"] is False
    assert "Not checked at build time" in (target / "MODEL_CARD.md").read_text()

"""Fine-tuning smoke test: tiny generated dataset, one epoch, exported in the served layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.evaluate import folder_samples, predict, score
from training.finetune import finetune

pytestmark = pytest.mark.slow


def _make_dataset(root: Path) -> None:
    rng = np.random.default_rng(0)
    colours = {"red_things": (200, 30, 30), "blue_things": (30, 30, 200)}
    for name, colour in colours.items():
        (root / name).mkdir(parents=True)
        for i in range(5):
            noise = rng.integers(-40, 40, size=(80, 96, 3))
            pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.jpg")


def test_finetune_exports_served_layout(built_lite0: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    _make_dataset(data)
    out = tmp_path / "models"
    target = finetune(built_lite0, data, out, "colours", "3", epochs=1, batch_size=8)
    assert target == out / "colours" / "3"
    meta = json.loads((target / "metadata.json").read_text())
    assert meta["name"] == "colours" and meta["version"] == "3"
    assert meta["input_size"] == 224 and meta["format_version"] == 1
    labels = json.loads((target / "labels.json").read_text())
    assert [entry["class_id"] for entry in labels] == ["blue_things", "red_things"]
    assert labels[1]["label"] == "red things"
    samples = folder_samples(data)
    saved = predict(target, samples, 224, "saved_model")
    lite = predict(target, samples, 224, "tflite")
    assert saved.shape == (10, 2)
    np.testing.assert_allclose(saved.sum(axis=1), 1.0, atol=1e-4)
    assert list(saved.argmax(axis=1)) == list(lite.argmax(axis=1))
    assert score(samples, saved, labels, "saved_model").count == 10

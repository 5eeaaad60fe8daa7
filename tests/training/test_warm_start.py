"""The warm start of a fine-tune (training.warm_start): before any training step, the model
built from a version's own ``model.keras`` answers as that version does on real photos."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ml.preprocessing import open_rgb, to_model_input
from tests.conftest import PHOTOS
from training.export import KERAS_FILE, load_labels
from training.finetune_config import FinetuneConfig
from training.warm_start import start_model

PHOTO_NAMES = ("chelsea", "coffee", "rocket")


def _batch(size: int) -> np.ndarray:
    return np.stack([to_model_input(open_rgb(str(PHOTOS[name].path)), size) for name in PHOTO_NAMES])


def test_a_warm_start_keeps_the_versions_head_for_the_classes_it_keeps(built_lite0: Path, tmp_path: Path) -> None:
    import keras

    active = keras.saving.load_model(built_lite0 / KERAS_FILE, compile=False)
    ids = [entry["class_id"] for entry in load_labels(built_lite0)]
    # Three of the version's classes, in another order than its own.
    wanted = [ids[657], ids[281], ids[967]]  # missile, tabby cat, espresso
    batch = _batch(224)
    active_probs = np.asarray(active.predict(batch, verbose=0))

    model, record = start_model(built_lite0, wanted, FinetuneConfig(warm_start=True), 224)

    assert record["version"] == "efficientnet_lite0/1"
    assert record["head_classes_kept"] == 3
    warm = np.asarray(model.predict(batch, verbose=0))
    kept = active_probs[:, [657, 281, 967]]
    # Its probabilities are the version's, renormalised over the classes kept, column by class id.
    np.testing.assert_allclose(warm, kept / kept.sum(axis=1, keepdims=True), atol=1e-4)
    assert [wanted[i] for i in warm.argmax(axis=1)] == [ids[281], ids[967], ids[657]]  # cat, coffee, rocket

    # At another input size too (the same weights, a smaller input), still the version's answers.
    small, _ = start_model(built_lite0, wanted, FinetuneConfig(warm_start=True), 160)
    assert small.inputs[0].shape[1] == 160
    assert [wanted[i] for i in np.asarray(small.predict(_batch(160), verbose=0)).argmax(axis=1)] == [
        ids[281], ids[967], ids[657],
    ]  # fmt: skip

    # A version without model.keras: the ImageNet weights and a new head, and the record says why.
    bare = tmp_path / "bare"
    shutil.copytree(built_lite0, bare, ignore=shutil.ignore_patterns(KERAS_FILE, "saved_model", "*.tflite", "*.onnx"))
    _, fallback = start_model(bare, wanted, FinetuneConfig(warm_start=True), 224)
    assert fallback["version"] is None
    assert KERAS_FILE in fallback["reason"]

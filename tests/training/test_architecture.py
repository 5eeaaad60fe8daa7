"""Keras EfficientNet-Lite builder, weight loading, labels and the test-photo table (no torch)."""

from __future__ import annotations

import numpy as np
import pytest

from training import efficientnet_lite
from training.build_imagenet import weights_source
from training.labels import imagenet_labels
from training.legacy_torch import load_state_dict
from training.test_photos import TEST_PHOTOS


@pytest.mark.parametrize(("variant", "blocks", "size"), [("lite0", 16, 224), ("lite2", 21, 260)])
def test_architecture_matches_the_state_dict(variant: str, blocks: int, size: int) -> None:
    state = load_state_dict(weights_source(variant).path)
    assert len(efficientnet_lite.block_specs(variant)) == blocks
    efficientnet_lite.validate_state_dict(state, variant)
    model = efficientnet_lite.build_pretrained(variant, state)
    assert model.input_shape == (None, size, size, 3)
    assert model.output_shape == (None, 1000)
    # Every float tensor of the checkpoint is one model weight, and nothing else is.
    n_state = sum(v.size for k, v in state.items() if not k.endswith("num_batches_tracked"))
    assert model.count_params() == n_state


def test_round_filters_follows_tf() -> None:
    assert [efficientnet_lite.round_filters(f, 1.1) for f in (16, 24, 40, 80, 112, 192, 320)] == [
        16, 24, 48, 88, 120, 208, 352,
    ]  # fmt: skip


def test_weight_loading_rejects_wrong_variant(lite0_state: dict[str, np.ndarray]) -> None:
    model = efficientnet_lite.build_model("lite2")
    with pytest.raises(ValueError, match="blocks"):
        efficientnet_lite.load_torch_weights(model, lite0_state, "lite2")


def test_softmax_output_and_logits_submodel(lite0_state: dict[str, np.ndarray]) -> None:
    model = efficientnet_lite.build_pretrained("lite0", lite0_state)
    batch = np.random.default_rng(1).uniform(0, 255, (2, 224, 224, 3)).astype(np.float32)
    probs = model.predict(batch, verbose=0)
    logits = efficientnet_lite.logits_model(model).predict(batch, verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    softmax = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(probs, softmax / softmax.sum(axis=1, keepdims=True), atol=1e-6)


def test_labels_are_the_sorted_wordnet_ids_with_unique_names() -> None:
    labels = imagenet_labels()
    assert len(labels) == 1000
    assert labels[0] == {"index": 0, "class_id": "n01440764", "label": "tench"}
    assert [entry["index"] for entry in labels] == list(range(1000))
    ids = [entry["class_id"] for entry in labels]
    assert ids == sorted(ids)
    assert len({entry["label"] for entry in labels}) == 1000
    by_id = {entry["class_id"]: entry["label"] for entry in labels}
    assert by_id["n02123159"] == "tiger cat"
    assert by_id["n07920052"] == "espresso"


def test_expected_photo_ids_are_imagenet_classes() -> None:
    ids = {entry["class_id"] for entry in imagenet_labels()}
    for photo in TEST_PHOTOS:
        assert photo.path.exists(), photo.path
        assert set(photo.expected) <= ids, photo.name

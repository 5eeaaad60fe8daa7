"""The Keras model equals the original network: logits vs an independent torch forward pass."""

from __future__ import annotations

import numpy as np
import pytest

from training import efficientnet_lite
from training.build_imagenet import LOGITS_TOLERANCE, weights_source
from training.evaluate import load_batch, photo_samples
from training.legacy_torch import load_state_dict


@pytest.mark.parametrize("variant", ["lite0", pytest.param("lite2", marks=pytest.mark.slow)])
def test_keras_logits_match_torch_reference(variant: str) -> None:
    pytest.importorskip("torch")
    from training.reference_torch import ReferenceEfficientNetLite, load_state_dict_torch

    source = weights_source(variant)
    model = efficientnet_lite.build_pretrained(variant, load_state_dict(source.path))
    reference = ReferenceEfficientNetLite(load_state_dict_torch(source.path), variant)
    size = efficientnet_lite.variant_params(variant).resolution
    batch = load_batch(photo_samples(), size)
    keras_logits = efficientnet_lite.logits_model(model).predict(batch, verbose=0)
    torch_logits = reference.logits(batch)
    assert np.abs(keras_logits - torch_logits).max() <= LOGITS_TOLERANCE  # 1e-3 absolute
    for k, t in zip(keras_logits, torch_logits, strict=True):
        assert list(np.argsort(-k)[:5]) == list(np.argsort(-t)[:5])

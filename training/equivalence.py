"""Keras vs PyTorch: the rebuilt Keras EfficientNet-Lite checked against an independent
functional torch forward pass (:mod:`training.reference_torch`) on the same inputs, when
torch is installed; ``training.build_imagenet`` refuses a model that does not match."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from training import efficientnet_lite
from training.weights import WeightsSource

#: Max abs difference of logits Keras vs torch reference accepted by the build and the tests.
LOGITS_TOLERANCE = 1e-3


def check_equivalence(
    model: Any,
    source: WeightsSource,
    state: dict[str, NDArray[Any]],
    variant: str,
    photos: NDArray[np.float32],
    photo_names: Sequence[str],
) -> dict[str, Any]:
    """Compare Keras logits with the torch reference on the test photos (if torch is importable)."""
    from training.reference_torch import ReferenceEfficientNetLite, load_state_dict_torch, torch_available

    if not torch_available():
        return {"checked": False, "reason": "torch is not installed (pip install torch==2.13.0 to check)"}
    import torch

    torch_state = load_state_dict_torch(source.path)
    reader_exact = list(torch_state) == list(state) and all(
        np.array_equal(torch_state[k].numpy(), state[k]) and torch_state[k].numpy().dtype == state[k].dtype
        for k in state
    )
    reference = ReferenceEfficientNetLite(torch_state, variant)
    noise = np.random.default_rng(0).uniform(0, 255, size=(2, *photos.shape[1:])).astype(np.float32)
    inputs = np.concatenate([photos, noise])
    names = [*photo_names, "uniform_noise_0", "uniform_noise_1"]
    keras_logits = np.asarray(efficientnet_lite.logits_model(model).predict(inputs, verbose=0))
    torch_logits = reference.logits(inputs)
    diff = np.abs(keras_logits - torch_logits)
    per_image = []
    for name, k, t, d in zip(names, keras_logits, torch_logits, diff, strict=True):
        per_image.append(
            {
                "image": name,
                "max_abs_logit_diff": float(d.max()),
                "top5_identical": bool(np.array_equal(np.argsort(-k)[:5], np.argsort(-t)[:5])),
            }
        )
    max_diff = float(diff.max())
    return {
        "checked": True,
        "reference": (
            f"independent functional torch forward pass (training/reference_torch.py), torch {torch.__version__}"
        ),
        "legacy_reader_matches_torch_load": bool(reader_exact),
        "images": len(names),
        "max_abs_logit_diff": max_diff,
        "max_abs_logit": float(np.abs(torch_logits).max()),
        "tolerance": LOGITS_TOLERANCE,
        "all_top5_identical": all(item["top5_identical"] for item in per_image),
        "passed": bool(reader_exact and max_diff <= LOGITS_TOLERANCE and all(i["top5_identical"] for i in per_image)),
        "per_image": per_image,
    }

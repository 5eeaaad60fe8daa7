"""Fixtures for the training/ tests: the built ImageNet model and the raw weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.build_imagenet import DEFAULT_OUT, build, weights_source
from training.legacy_torch import load_state_dict


@pytest.fixture(scope="session")
def built_lite0() -> Path:
    """``models/efficientnet_lite0/1``, built by the same code as ``make model`` if absent."""
    return build("lite0", DEFAULT_OUT, "1", force=False)


@pytest.fixture(scope="session")
def lite0_state() -> dict[str, np.ndarray]:
    """The lite0 state dict read by the numpy legacy reader."""
    return load_state_dict(weights_source("lite0").path)

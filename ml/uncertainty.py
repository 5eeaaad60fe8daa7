"""How sure a model is of one image: normalised entropy and top-2 margin (single-label),
binary entropy and the distance to the class thresholds (multi-label), and the thresholds
past which an answer is "Not sure". Pure NumPy; ``training.uncertainty`` calibrates the
thresholds, the runner applies them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# "Not sure": a single-label prediction is uncertain when the normalised entropy of its
# probabilities is above the entropy threshold OR its top-2 margin is below the margin
# threshold. A model's own thresholds are in metadata.json "uncertainty" (calibrated by
# training.evaluate / training.finetune / training.build_imagenet); a model without them
# gets these defaults, the shipped EfficientNet-Lite0's calibration (training.uncertainty:
# 90 % of the correctly classified labelled photo crops kept, as many wrong ones flagged as
# possible), rounded.
DEFAULT_ENTROPY_THRESHOLD = 0.46
DEFAULT_MARGIN_THRESHOLD = 0.012


@dataclass(frozen=True)
class UncertaintyThresholds:
    """When a single-label model's answer is "Not sure" (see ``uncertainty_of``)."""

    entropy: float  # flagged above this normalised entropy (0..1)
    margin: float  # flagged below this top-2 margin (0..1)
    calibrated: bool  # from the model's metadata.json, else the runner's defaults


DEFAULT_UNCERTAINTY = UncertaintyThresholds(DEFAULT_ENTROPY_THRESHOLD, DEFAULT_MARGIN_THRESHOLD, calibrated=False)


@dataclass(frozen=True)
class Uncertainty:
    """How sure the model is of one image, from its full score vector.

    Single-label: ``entropy`` is the entropy of the probabilities divided by ln C (0 = all
    mass on one class, 1 = uniform), ``margin`` the top-1 minus the top-2 probability;
    ``uncertain`` when entropy is above the model's threshold or margin below its threshold.
    Multi-label: ``entropy`` is the mean binary entropy of the per-class scores over ln 2,
    ``margin`` the smallest distance of any score from its class's threshold (how close the
    nearest yes/no came to flipping); ``uncertain`` when no class reaches its threshold (the
    model names nothing; its thresholds already are its calibrated decision rule)."""

    entropy: float
    margin: float
    uncertain: bool


def normalised_entropy(probabilities: np.ndarray) -> float:
    """Entropy of a probability vector over ln C: 0 (one class has it all) .. 1 (uniform)."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.size < 2:
        return 0.0
    p = p / p.sum()
    nonzero = p[p > 0]
    return float(np.clip(-(nonzero * np.log(nonzero)).sum() / np.log(p.size), 0.0, 1.0))


def top2_margin(probabilities: np.ndarray) -> float:
    """The highest probability minus the second highest (the top one alone: itself)."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.size < 2:
        return float(p.max()) if p.size else 0.0
    second, first = np.partition(p, -2)[-2:]
    return float(first - second)


def uncertainty_of(probabilities: np.ndarray, thresholds: UncertaintyThresholds) -> Uncertainty:
    """A single-label model's uncertainty (see ``Uncertainty``)."""
    entropy, margin = normalised_entropy(probabilities), top2_margin(probabilities)
    return Uncertainty(entropy, margin, uncertain=entropy > thresholds.entropy or margin < thresholds.margin)


def multi_label_uncertainty(scores: np.ndarray, class_thresholds: np.ndarray) -> Uncertainty:
    """A multi-label model's uncertainty (see ``Uncertainty``)."""
    q = np.clip(np.asarray(scores, dtype=np.float64), 1e-12, 1 - 1e-12)
    binary = -(q * np.log(q) + (1 - q) * np.log(1 - q)) / np.log(2)
    distance = np.abs(np.asarray(scores, dtype=np.float64) - class_thresholds)
    return Uncertainty(
        entropy=float(np.clip(binary.mean(), 0.0, 1.0)) if q.size else 0.0,
        margin=float(distance.min()) if distance.size else 0.0,
        uncertain=not bool((np.asarray(scores) >= class_thresholds).any()),
    )


def uncertainty_thresholds(metadata: dict[str, Any]) -> UncertaintyThresholds:
    """The model's calibrated thresholds (metadata.json ``uncertainty``: ``entropy``,
    ``margin``), or the defaults when it has none."""
    calibrated = metadata.get("uncertainty")
    if not isinstance(calibrated, dict):
        return DEFAULT_UNCERTAINTY
    return UncertaintyThresholds(float(calibrated["entropy"]), float(calibrated["margin"]), calibrated=True)

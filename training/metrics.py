"""Scores of a single-label classifier's probabilities against known classes: top-1 / top-5,
per-class precision / recall / F1 / support, their macro and weighted averages, the confusion
matrix and calibration (expected calibration error, reliability bins).

numpy only, so every figure can be checked by hand; the multi-label counterparts are in
:mod:`training.multilabel`. ``training.evaluate`` and ``training.finetune`` both score with it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray


@dataclass
class ClassificationMetrics:
    """Scores of predicted probabilities against known classes (hand-checkable, numpy only)."""

    classes: list[str]
    count: int
    top1: float
    top5: float
    precision: list[float]
    recall: list[float]
    f1: list[float]
    support: list[int]
    confusion: list[list[int]]  # rows: true class, columns: predicted class
    ece: float
    reliability: list[dict[str, float]]  # per confidence bin: lower, upper, count, confidence, accuracy

    def averages(self, weighted: bool) -> dict[str, float]:
        """Macro (every class counts once) or support-weighted precision / recall / F1."""
        weights = np.asarray(self.support, dtype=np.float64) if weighted else np.ones(len(self.classes))
        total = weights.sum() or 1.0
        return {
            key: float(np.dot(weights, np.asarray(values)) / total)
            for key, values in (("precision", self.precision), ("recall", self.recall), ("f1", self.f1))
        }

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures (rounded) for metadata.json and reports."""
        return {
            "count": self.count,
            "top1": round(self.top1, 5),
            "top5": round(self.top5, 5),
            "macro": {k: round(v, 5) for k, v in self.averages(weighted=False).items()},
            "weighted": {k: round(v, 5) for k, v in self.averages(weighted=True).items()},
            "ece": round(self.ece, 5),
            "per_class": [
                {
                    "class": name,
                    "precision": round(self.precision[i], 5),
                    "recall": round(self.recall[i], 5),
                    "f1": round(self.f1[i], 5),
                    "support": self.support[i],
                }
                for i, name in enumerate(self.classes)
            ],
            "confusion_matrix": self.confusion,
        }


def classification_metrics(
    targets: NDArray[np.int64], probabilities: NDArray[np.float32], classes: Sequence[str], bins: int = 15
) -> ClassificationMetrics:
    """Top-1/top-5, per-class precision/recall/F1/support, confusion matrix and calibration.

    Precision of a class never predicted is 0 (as scikit-learn's ``zero_division=0``).
    Expected calibration error: the top-1 confidences in ``bins`` equal-width bins over
    (0, 1]; ECE = sum over bins of (bin count / n) * |accuracy - mean confidence|.
    """
    targets = np.asarray(targets, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    n, k = probabilities.shape
    predicted = probabilities.argmax(axis=1)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (targets, predicted), 1)
    true_positive = np.diag(confusion).astype(np.float64)
    predicted_count = confusion.sum(axis=0).astype(np.float64)
    support = confusion.sum(axis=1)
    precision = np.divide(true_positive, predicted_count, out=np.zeros(k), where=predicted_count > 0)
    recall = np.divide(true_positive, support, out=np.zeros(k), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros(k), where=denominator > 0)
    top5 = np.argsort(-probabilities, axis=1)[:, :5]
    confidence = probabilities.max(axis=1)
    correct = predicted == targets
    edges = np.linspace(0.0, 1.0, bins + 1)
    reliability: list[dict[str, float]] = []
    ece = 0.0
    for lower, upper in itertools.pairwise(edges):
        members = (confidence > lower) & (confidence <= upper)
        count = int(members.sum())
        if count:
            accuracy, mean_confidence = float(correct[members].mean()), float(confidence[members].mean())
            ece += count / n * abs(accuracy - mean_confidence)
        else:
            accuracy = mean_confidence = 0.0
        reliability.append(
            {
                "lower": float(lower),
                "upper": float(upper),
                "count": count,
                "confidence": mean_confidence,
                "accuracy": accuracy,
            }
        )
    return ClassificationMetrics(
        classes=list(classes),
        count=n,
        top1=float(correct.mean()) if n else 0.0,
        top5=float((top5 == targets[:, None]).any(axis=1).mean()) if n else 0.0,
        precision=[float(v) for v in precision],
        recall=[float(v) for v in recall],
        f1=[float(v) for v in f1],
        support=[int(v) for v in support],
        confusion=[[int(v) for v in row] for row in confusion],
        ece=float(ece),
        reliability=reliability,
    )

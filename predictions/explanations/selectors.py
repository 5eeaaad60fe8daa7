"""Reads of explanations."""

from __future__ import annotations

from dataclasses import dataclass

from predictions.models import Explanation, Prediction, PredictionStatus


@dataclass(frozen=True)
class ExplainableClass:
    """One of a prediction's top-k classes and its explanation, if one was asked for."""

    class_id: str
    label: str
    score: float
    explanation: Explanation | None


def explanation_classes(*, prediction: Prediction) -> list[ExplainableClass]:
    """The prediction's top-k classes, best first, each with its stored explanation
    (one query); empty for a prediction that has not succeeded."""
    if prediction.status != PredictionStatus.SUCCEEDED:
        return []
    stored = {explanation.class_id: explanation for explanation in prediction.explanations.all()}
    return [
        ExplainableClass(
            class_id=str(entry.get("class_id", "")),
            label=str(entry.get("label", "")),
            score=float(entry.get("score", 0.0)),
            explanation=stored.get(str(entry.get("class_id", ""))),
        )
        for entry in prediction.top_predictions
        if isinstance(entry, dict)
    ]

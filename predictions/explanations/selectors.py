"""Reads of explanations."""

from __future__ import annotations

from dataclasses import dataclass

from predictions.exceptions import NotFoundError
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


def explanation_get(*, prediction: Prediction, class_id: str | None = None) -> Explanation:
    """The explanation of ``prediction`` for ``class_id`` (default: its top class), as
    requested with ``explanation_request``; ``NotFoundError`` when none was requested, or
    the stored one was made by another model version than the prediction's result (a
    re-run prediction is explained again on request). A read: it never queues anything."""
    wanted = class_id or prediction.class_id
    explanation = (
        Explanation.objects.filter(prediction=prediction, class_id=wanted, model_version_id=prediction.model_version_id)
        .select_related("prediction")
        .first()
    )
    if explanation is None:
        raise NotFoundError(
            f"No explanation of class {wanted!r} was requested for this prediction: request one with POST.",
            field="class_id",
        )
    return explanation

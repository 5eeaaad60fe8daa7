"""The measured figures of one model version, side by side with another's before a switch
(the admin's confirmation pages): its test top-1, live top-1 and latency."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.db.models import Count, F, Q
from django.utils import timezone

from predictions.models import ModelVersion, Prediction, PredictionStatus
from predictions.operations.stats.cards import SMALL_SAMPLE, evaluation_count, evaluation_top1
from predictions.operations.stats.selectors import DEFAULT_WINDOW_DAYS, latency_by_group


@dataclass(frozen=True)
class ModelVersionFigures:
    """What is known of how well and how fast ``model_version`` works: its model card's
    top-1 (measured on a test set when it was built) and, over every user's predictions
    of the last ``days`` days, its live top-1 (confirmed / reviewed) and latency."""

    model_version: ModelVersion
    days: int
    test_top1: float | None  # the model card's top-1; None when the card records none
    test_top1_metric: str  # which figure of the card it is, e.g. "test_photos.top1_accuracy"
    predictions: int  # succeeded predictions in the window
    reviewed: int  # of those, how many their owner confirmed or corrected
    live_top1: float | None  # confirmed / reviewed; None when nothing was reviewed
    total_p50_ms: float | None  # median time from upload to result
    inference_p50_ms: float | None  # median time of the model call itself
    test_count: int | None = None  # how many test images the card's top-1 rests on; None: not recorded
    confirmed: int = 0  # of the reviewed, how many their owner confirmed (live top-1 = confirmed / reviewed)
    total_p95_ms: float | None = None  # 95 % of the results came within this, from upload

    @property
    def test_sample_small(self) -> bool:
        """The card's top-1 rests on too few images to tell much (or on an unknown number)."""
        return self.test_count is None or self.test_count < SMALL_SAMPLE


def model_version_figures(*, model_version: ModelVersion, days: int = DEFAULT_WINDOW_DAYS) -> ModelVersionFigures:
    """``model_version``'s figures over the last ``days`` days (every user's predictions:
    only for callers that checked ``access.can_change_model_versions``). Two queries."""
    since = timezone.now() - timedelta(days=days)
    succeeded = Prediction.objects.order_by().filter(
        model_version=model_version, status=PredictionStatus.SUCCEEDED, created_at__gte=since
    )
    # A review counts for the version whose answer it reviewed (as on the stats page).
    reviewed = Q(correction__model_version_id=F("model_version_id"))
    grouped = latency_by_group(
        succeeded,
        group=None,
        fields=("total_ms", "inference_ms"),
        percentiles=(0.5, 0.95),
        extra={
            "predictions": Count("id"),
            "reviewed": Count("correction", filter=reviewed),
            "confirmed": Count("correction", filter=reviewed & Q(correction__confirmed=True)),
        },
    )
    latency, counts = grouped.get(None, ({}, {}))
    card = evaluation_top1(model_version.metrics)
    total, inference = latency.get("total_ms"), latency.get("inference_ms")
    return ModelVersionFigures(
        model_version=model_version,
        days=days,
        test_top1=card[1] if card else None,
        test_top1_metric=card[0] if card else "",
        predictions=counts.get("predictions") or 0,
        reviewed=counts.get("reviewed") or 0,
        live_top1=counts["confirmed"] / counts["reviewed"] if counts.get("reviewed") else None,
        total_p50_ms=total.p50 if total else None,
        inference_p50_ms=inference.p50 if inference else None,
        test_count=evaluation_count(model_version.metrics, card[0]) if card else None,
        confirmed=counts.get("confirmed") or 0,
        total_p95_ms=total.p95 if total else None,
    )

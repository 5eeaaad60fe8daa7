"""Reads of reviews."""

from __future__ import annotations

from django.db.models import QuerySet

from predictions.models import (
    Correction,
    ModelVersion,
)


def correction_list(
    *, model_version: ModelVersion | None = None, corrections_only: bool = False
) -> QuerySet[Correction]:
    """Every user's reviews, corrections and confirmations (only for callers that
    checked ``access.can_view_all_predictions``), by label, optionally of one model
    version's predictions, or corrections alone."""
    queryset = Correction.objects.select_related("prediction", "model_version")
    if corrections_only:
        queryset = queryset.filter(confirmed=False)
    if model_version is not None:
        queryset = queryset.filter(model_version=model_version)
    return queryset.order_by("label", "created_at")

"""Reads of reviews."""

from __future__ import annotations

from django.db import models
from django.db.models import Count, Q, QuerySet

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


class ReviewKind(models.TextChoices):
    ALL = "", "All reviews"
    CORRECTIONS = "corrections", "Corrections"
    CONFIRMATIONS = "confirmations", "Confirmations"
    NEW_CLASSES = "new_classes", "Corrections to a new class"


def review_search(
    *, kind: str = ReviewKind.ALL, model_version: ModelVersion | None = None, text: str = ""
) -> QuerySet[Correction]:
    """Every user's reviews, newest first (only for callers that checked
    ``access.can_view_all_predictions``): of one kind, of one version's predictions,
    with ``text`` in the right label, the model's label or the reviewer's name."""
    queryset = Correction.objects.select_related("prediction", "model_version", "corrected_by")
    if kind == ReviewKind.CORRECTIONS:
        queryset = queryset.filter(confirmed=False)
    elif kind == ReviewKind.CONFIRMATIONS:
        queryset = queryset.filter(confirmed=True)
    elif kind == ReviewKind.NEW_CLASSES:
        queryset = queryset.filter(new_class=True)
    if model_version is not None:
        queryset = queryset.filter(model_version=model_version)
    if text:
        queryset = queryset.filter(
            Q(label__icontains=text) | Q(predicted_label__icontains=text) | Q(corrected_by__username__icontains=text)
        )
    return queryset.order_by("-updated_at", "-id")


def review_totals(*, reviews: QuerySet[Correction]) -> dict[str, int]:
    """How many of ``reviews`` are confirmations, corrections and new classes (one query)."""
    totals = reviews.order_by().aggregate(
        n_reviewed=Count("id"),
        n_confirmed=Count("id", filter=Q(confirmed=True)),
        n_corrected=Count("id", filter=Q(confirmed=False)),
        n_new_classes=Count("id", filter=Q(new_class=True)),
    )
    return {name.removeprefix("n_"): value or 0 for name, value in totals.items()}

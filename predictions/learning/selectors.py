"""Reads of the learning loop: its switch, its cycles, the reviews it may learn from and
the A/B test's arms."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from predictions.learning.models import LearningControl, LearningCycle, LearningCycleState
from predictions.learning.statistics import Arm
from predictions.models import Correction, ModelVersion, PredictionStatus


def learning_paused() -> bool:
    """Whether an operator paused the loop (no row yet: not paused)."""
    return bool(LearningControl.objects.filter(paused=True).exists())


def learning_control() -> LearningControl | None:
    return LearningControl.objects.select_related("changed_by").order_by("pk").first()


def learning_cycle_open() -> LearningCycle | None:
    """The cycle queued, training or testing, if any (at most one)."""
    return LearningCycle.objects.select_related("base", "candidate").filter(is_open=True).first()


def learning_cycle_list(*, limit: int = 10) -> list[LearningCycle]:
    return list(LearningCycle.objects.select_related("base", "candidate")[:limit])


def learning_cycle_last(*, counted: bool = False) -> LearningCycle | None:
    """The latest cycle; with ``counted``, the latest one new reviews are counted from (a
    failed cycle used none of them up, so it is skipped)."""
    cycles = LearningCycle.objects.order_by("-created_at", "-id")
    if counted:
        cycles = cycles.exclude(state=LearningCycleState.FAILED)
    return cycles.first()


def usable_review_list(*, base: ModelVersion) -> QuerySet[Correction]:
    """The reviews a cycle from ``base`` may learn from: a succeeded prediction whose
    reviewer gave one of ``base``'s classes (confirmed, or corrected to it). Never an
    unreviewed prediction, never a label the model does not have (new classes wait for an
    operator's fine-tune)."""
    class_ids = [entry["class_id"] for entry in base.classes]
    return (
        Correction.objects.select_related("prediction")
        .filter(new_class=False, class_id__in=class_ids, prediction__status=PredictionStatus.SUCCEEDED)
        .exclude(class_id="")
        .order_by("id")
    )


def new_review_count(*, base: ModelVersion, since: datetime | None) -> int:
    """Usable reviews given or changed after ``since`` (all of them when ``None``)."""
    reviews = usable_review_list(base=base)
    return (reviews.filter(updated_at__gt=since) if since is not None else reviews).count()


def arm_stats(*, model_version: ModelVersion, since: datetime) -> Arm:
    """One arm of the A/B test: the reviews of ``model_version``'s predictions made since
    the test began, and how many of them confirm its answer (live top-1)."""
    totals = Correction.objects.filter(model_version=model_version, prediction__created_at__gte=since).aggregate(
        reviewed=Count("id"), right=Count("id", filter=Q(confirmed=True))
    )
    return Arm(reviewed=totals["reviewed"] or 0, right=totals["right"] or 0)


@dataclass(frozen=True)
class LearningPanel:
    """The learning loop on the Models page: switched on, paused, the latest cycles, and
    the cycle the page's banner tells of (one open, or decided in the last week)."""

    enabled: bool
    control: LearningControl | None
    cycles: list[LearningCycle]
    banner: LearningCycle | None

    @property
    def paused(self) -> bool:
        return bool(self.control and self.control.paused)


def learning_panel(*, limit: int = 5) -> LearningPanel:
    cycles = learning_cycle_list(limit=limit)
    recent = timezone.now() - timedelta(days=7)
    banner = next((c for c in cycles if c.is_open or (c.decided_at and c.decided_at >= recent)), None)
    return LearningPanel(enabled=settings.LEARNING_ENABLED, control=learning_control(), cycles=cycles, banner=banner)

"""Plain results of the stats selectors: what the page, the API and the cache hold."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime


@dataclass(frozen=True)
class LatencySummary:
    """Percentiles and mean (milliseconds) of one latency column over ``count`` values."""

    count: int = 0
    mean: float | None = None
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


@dataclass(frozen=True)
class DayStats:
    day: date
    predictions: int
    latency: dict[str, LatencySummary]


@dataclass(frozen=True)
class ModelVersionStats:
    model_version_id: int | None
    name: str
    version: str
    predictions: int
    mean_confidence: float | None
    latency: dict[str, LatencySummary]
    low_confidence_share: float | None = None  # share below LOW_CONFIDENCE_THRESHOLD
    corrections: int = 0  # of its succeeded predictions, how many their owner corrected
    new_classes: int = 0  # of those corrections, how many to a class the model does not have (said so by the owner)
    correction_rate: float | None = None  # corrections / predictions (None without predictions)
    reviewed: int = 0  # of its succeeded predictions, how many their owner reviewed (confirmed or corrected)
    confirmed: int = 0  # of those, how many their owner confirmed (reviewed = confirmed + corrections)
    live_top1: float | None = None  # confirmed / reviewed: top-1 measured on feedback (None: nothing reviewed)


@dataclass(frozen=True)
class ActiveModelCard:
    """The active version's model card, for the stats page's "Model" box."""

    name: str
    version: str
    trained_at: datetime | None  # metadata.json created (ModelVersion.exported_at)
    registered_at: datetime
    classes: int
    metrics: dict[str, str]  # ModelVersion.metrics flattened: {"test_photos.top1_accuracy": "1.0"}
    stats: ModelVersionStats | None  # its row of per_model_version; None without predictions in the window
    evaluation_top1: float | None = None  # the card's top-1 (the metric named in evaluation_top1_metric)
    evaluation_top1_metric: str = ""  # e.g. "test_photos.top1_accuracy"; empty when the card has none
    evaluation_count: int | None = None  # how many test images that top-1 rests on; None: not recorded
    facts: list[str] = field(default_factory=list)  # the card in words (cards.model_card_facts)


@dataclass(frozen=True)
class ModelComparison:
    """An A/B test side by side: the active version and the candidate, each with the same
    figures as its ``per_model_version`` row (figures added there show up here too)."""

    active: ModelVersionStats
    candidate: ModelVersionStats
    traffic_percent: int  # the candidate's current share of users


@dataclass(frozen=True)
class HistogramBucket:
    upper_ms: float | None  # None: above the last bound
    count: int


@dataclass(frozen=True)
class LabelCount:
    label: str
    count: int


@dataclass
class PredictionStats:
    """Everything the stats page shows, for one scope (one user or everyone) and window."""

    days: int
    since: datetime
    all_users: bool
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    pending: int = 0  # pending + running
    distinct_users: int = 0
    per_day: list[DayStats] = field(default_factory=list)
    per_hour: list[tuple[datetime, int]] = field(default_factory=list)  # only when every image came on one day
    latency: dict[str, LatencySummary] = field(default_factory=dict)
    per_model_version: list[ModelVersionStats] = field(default_factory=list)
    comparison: ModelComparison | None = None  # active vs the A/B candidate, when there is one
    active_model: ActiveModelCard | None = None
    histogram: list[HistogramBucket] = field(default_factory=list)
    histogram_field: str = "total_ms"
    top_labels: list[LabelCount] = field(default_factory=list)
    mean_confidence: float | None = None
    low_confidence_share: float | None = None
    low_confidence_threshold: float = 0.5
    computed_at: datetime | None = None

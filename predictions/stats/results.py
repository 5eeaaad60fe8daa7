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
    latency: dict[str, LatencySummary] = field(default_factory=dict)
    per_model_version: list[ModelVersionStats] = field(default_factory=list)
    histogram: list[HistogramBucket] = field(default_factory=list)
    histogram_field: str = "total_ms"
    top_labels: list[LabelCount] = field(default_factory=list)
    mean_confidence: float | None = None
    low_confidence_share: float | None = None
    low_confidence_threshold: float = 0.5
    computed_at: datetime | None = None

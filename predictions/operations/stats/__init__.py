"""Prediction stats for the stats page and the stats API.

- ``selectors``: the aggregates (``prediction_stats``) and who sees what (``stats_all_users``).
- ``percentiles``: the one percentile definition (``percentile_cont``) on every backend.
- ``services``: the cached report the page and the API serve, and its background refresh.
- ``results``: the plain dataclasses they return.

The all-time figures ``/metrics`` reads at scrape time live in ``predictions.operations.metrics``.
"""

from predictions.operations.stats.percentiles import PercentileCont, percentile_linear, percentiles_linear
from predictions.operations.stats.results import (
    ActiveModelCard,
    DayStats,
    HistogramBucket,
    LabelCount,
    LatencySummary,
    ModelComparison,
    ModelVersionStats,
    PredictionStats,
)
from predictions.operations.stats.selectors import (
    DEFAULT_WINDOW_DAYS,
    HISTOGRAM_BOUNDS_MS,
    LATENCY_FIELDS,
    PERCENTILES,
    TOP_LABELS,
    WINDOW_DAYS,
    histogram_aggregates,
    histogram_buckets,
    latency_by_group,
    latency_histogram,
    model_comparison,
    prediction_stats,
    prediction_stats_queryset,
    stats_all_users,
)
from predictions.operations.stats.services import prediction_stats_cached, prediction_stats_refresh

__all__ = [
    "DEFAULT_WINDOW_DAYS",
    "HISTOGRAM_BOUNDS_MS",
    "LATENCY_FIELDS",
    "PERCENTILES",
    "TOP_LABELS",
    "WINDOW_DAYS",
    "ActiveModelCard",
    "DayStats",
    "HistogramBucket",
    "LabelCount",
    "LatencySummary",
    "ModelComparison",
    "ModelVersionStats",
    "PercentileCont",
    "PredictionStats",
    "histogram_aggregates",
    "histogram_buckets",
    "latency_by_group",
    "latency_histogram",
    "model_comparison",
    "percentile_linear",
    "percentiles_linear",
    "prediction_stats",
    "prediction_stats_cached",
    "prediction_stats_queryset",
    "prediction_stats_refresh",
    "stats_all_users",
]

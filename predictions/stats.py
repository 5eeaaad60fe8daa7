"""Stats selectors: read-only aggregates over predictions for the stats page, the
stats API and ``/metrics``.

Everything is computed in the database with GROUP BY; only a handful of rows per
group come back to Python, so the page stays fast on a million predictions.

Percentiles use ONE definition on every backend: linear interpolation between the
two closest ranks, exactly PostgreSQL's ``percentile_cont``. For ``n`` sorted values
``v[0..n-1]`` and a fraction ``p``: ``pos = p * (n - 1)``, ``lo = floor(pos)``,
``result = v[lo] + (pos - lo) * (v[lo + 1] - v[lo])``.

- PostgreSQL: ``percentile_cont(p) WITHIN GROUP (ORDER BY col)`` in the GROUP BY query.
- Other backends (SQLite): one query per grouping ranks each latency column with
  ``ROW_NUMBER() OVER (PARTITION BY group ORDER BY col)`` and returns only the rows at
  ranks ``lo`` and ``lo + 1`` for each percentile; Python does the interpolation above.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Aggregate, Avg, Count, Expression, F, FloatField, Q, QuerySet, Sum, Value
from django.db.models.functions import TruncDate
from django.utils import timezone

from .models import ModelVersion, Prediction, PredictionStatus

PERCENTILES: tuple[float, ...] = (0.5, 0.95, 0.99)
LATENCY_FIELDS: tuple[str, ...] = ("queue_ms", "preprocess_ms", "inference_ms", "total_ms")
# Upper bounds (inclusive, "le" as in Prometheus) of the latency histogram; the last
# bucket is everything above the last bound.
HISTOGRAM_BOUNDS_MS: tuple[float, ...] = (25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)
WINDOW_DAYS: tuple[int, ...] = (7, 30, 90)
DEFAULT_WINDOW_DAYS = 30
TOP_LABELS = 20


class PercentileCont(Aggregate):
    """PostgreSQL ``percentile_cont(p) WITHIN GROUP (ORDER BY expr)``: linear interpolation."""

    function = "percentile_cont"
    name = "PercentileCont"
    template = "%(function)s(%(percentile)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: Any, *, percentile: float, **extra: Any) -> None:
        if not 0.0 <= percentile <= 1.0:
            raise ValueError("percentile must be between 0 and 1")
        # A float we validated, never user input: safe to inline in the SQL.
        super().__init__(expression, percentile=repr(float(percentile)), **extra)


# --- Plain results ----------------------------------------------------------------


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


# --- Selectors ------------------------------------------------------------------


def prediction_stats_queryset(*, user: AbstractBaseUser | None) -> QuerySet[Prediction]:
    """Predictions the stats may read: every user's for staff (or ``user=None``), else one's own."""
    queryset = Prediction.objects.order_by()
    if user is None or getattr(user, "is_staff", False):
        return queryset
    return queryset.filter(user=user)


def prediction_stats(
    *, user: AbstractBaseUser | None, days: int = DEFAULT_WINDOW_DAYS, now: datetime | None = None
) -> PredictionStats:
    """Totals, volume per day, latency percentiles (overall, per day, per model version),
    a latency histogram and the label distribution over the last ``days`` days.

    The window starts at local midnight ``days - 1`` days ago, so the per-day series has
    exactly ``days`` entries (today included). Latency, labels and confidence are over
    succeeded predictions (the only ones with timings and a label).
    """
    now = now or timezone.now()
    with _sort_memory():
        report = _prediction_stats(user=user, days=days, now=now)
    report.computed_at = now
    return report


def _stats_cache_key(*, user: AbstractBaseUser | None, days: int) -> str:
    all_users = user is None or getattr(user, "is_staff", False)
    return f"prediction-stats:v1:{'all' if all_users else f'user-{user.pk}'}:{days}"


def prediction_stats_cached(*, user: AbstractBaseUser | None, days: int = DEFAULT_WINDOW_DAYS) -> PredictionStats:
    """What the page and the API show: ``prediction_stats`` kept for ``STATS_CACHE_SECONDS``.

    The everyone-scope report (what staff see) is also recomputed in the background by
    ``prediction_stats_refresh`` (Celery beat), so with a million rows staff never wait
    for the percentiles; one user's own report is small and computed on demand.
    """
    key = _stats_cache_key(user=user, days=days)
    report = cache.get(key)
    if report is None:
        report = prediction_stats(user=user, days=days)
        cache.set(key, report, settings.STATS_CACHE_SECONDS)
    return report


def prediction_stats_refresh() -> None:
    """Recompute and cache the everyone-scope report for every offered window."""
    for days in WINDOW_DAYS:
        cache.set(
            _stats_cache_key(user=None, days=days),
            prediction_stats(user=None, days=days),
            settings.STATS_CACHE_SECONDS,
        )


@contextmanager
def _sort_memory() -> Iterator[None]:
    """On PostgreSQL, let this transaction's percentile sorts stay in memory
    (``STATS_WORK_MEM``) instead of spilling to disk at the 4 MB default."""
    if connection.vendor != "postgresql" or not settings.STATS_WORK_MEM:
        yield
        return
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL work_mem = %s", [settings.STATS_WORK_MEM])
        yield


def _prediction_stats(*, user: AbstractBaseUser | None, days: int, now: datetime) -> PredictionStats:
    today = timezone.localdate(now)
    first_day = today - timedelta(days=days - 1)
    since = timezone.make_aware(datetime.combine(first_day, datetime.min.time()))
    threshold = float(settings.LOW_CONFIDENCE_THRESHOLD)
    scoped = prediction_stats_queryset(user=user).filter(created_at__gte=since)
    succeeded = scoped.filter(status=PredictionStatus.SUCCEEDED)

    result = PredictionStats(
        days=days,
        since=since,
        all_users=user is None or bool(getattr(user, "is_staff", False)),
        low_confidence_threshold=threshold,
    )
    totals = scoped.aggregate(
        total=Count("id"),
        succeeded=Count("id", filter=Q(status=PredictionStatus.SUCCEEDED)),
        failed=Count("id", filter=Q(status=PredictionStatus.FAILED)),
        pending=Count("id", filter=Q(status__in=[PredictionStatus.PENDING, PredictionStatus.RUNNING])),
        distinct_users=Count("user", distinct=True),
    )
    for name, value in totals.items():
        setattr(result, name, value)

    volume = {
        row["day"]: row["n"]
        for row in scoped.annotate(day=TruncDate("created_at")).values("day").annotate(n=Count("id"))
    }
    overall = latency_by_group(
        succeeded,
        group=None,
        extra={
            "mean_confidence": Avg("confidence"),
            "low_confidence": Count("id", filter=Q(confidence__lt=threshold)),
            "with_confidence": Count("confidence"),
        },
    )
    overall_extra = overall.get(None, ({}, {}))[1]
    result.latency = overall.get(None, ({}, {}))[0] or _empty_latency()
    result.mean_confidence = overall_extra.get("mean_confidence")
    if overall_extra.get("with_confidence"):
        result.low_confidence_share = overall_extra["low_confidence"] / overall_extra["with_confidence"]

    per_day = latency_by_group(succeeded, group=TruncDate("created_at"))
    for offset in range(days):
        day = first_day + timedelta(days=offset)
        latency = per_day.get(day, ({}, {}))[0] or _empty_latency()
        result.per_day.append(DayStats(day=day, predictions=volume.get(day, 0), latency=latency))

    per_model = latency_by_group(
        succeeded,
        group=F("model_version_id"),
        extra={"predictions": Count("id"), "mean_confidence": Avg("confidence")},
    )
    versions = ModelVersion.objects.in_bulk([key for key in per_model if key is not None])
    for key, (latency, extra) in sorted(per_model.items(), key=lambda item: -item[1][1]["predictions"]):
        version = versions.get(key)
        result.per_model_version.append(
            ModelVersionStats(
                model_version_id=key,
                name=version.name if version else "(none)",
                version=version.version if version else "",
                predictions=extra["predictions"],
                mean_confidence=extra["mean_confidence"],
                latency=latency,
            )
        )

    result.histogram = latency_histogram(succeeded, field_name=result.histogram_field)
    result.top_labels = [
        LabelCount(label=row["label"], count=row["n"])
        for row in succeeded.exclude(label="")
        .values("label")
        .annotate(n=Count("id"))
        .order_by("-n", "label")[:TOP_LABELS]
    ]
    return result


def latency_histogram(
    queryset: QuerySet[Prediction],
    *,
    field_name: str = "total_ms",
    bounds: Sequence[float] = HISTOGRAM_BOUNDS_MS,
) -> list[HistogramBucket]:
    """Counts of ``field_name`` per fixed bucket (``bounds[i-1] < x <= bounds[i]``), one query."""
    counts = queryset.aggregate(**_histogram_aggregates(field_name, bounds))
    return _histogram_buckets(counts, bounds)


def _histogram_aggregates(field_name: str, bounds: Sequence[float]) -> dict[str, Count]:
    aggregates = {}
    lower: float | None = None
    for index, upper in enumerate([*bounds, None]):
        condition = Q(**{f"{field_name}__isnull": False})
        if lower is not None:
            condition &= Q(**{f"{field_name}__gt": lower})
        if upper is not None:
            condition &= Q(**{f"{field_name}__lte": upper})
        aggregates[f"b{index}"] = Count("id", filter=condition)
        lower = upper
    return aggregates


def _histogram_buckets(counts: dict[str, Any], bounds: Sequence[float]) -> list[HistogramBucket]:
    return [
        HistogramBucket(upper_ms=upper, count=counts[f"b{index}"] or 0) for index, upper in enumerate([*bounds, None])
    ]


def latency_by_group(
    queryset: QuerySet[Prediction],
    *,
    group: Expression | F | None,
    fields: Sequence[str] = LATENCY_FIELDS,
    percentiles: Sequence[float] = PERCENTILES,
    extra: dict[str, Aggregate] | None = None,
) -> dict[Any, tuple[dict[str, LatencySummary], dict[str, Any]]]:
    """Per group key (``None`` when ``group`` is None): latency summary per field, and the
    ``extra`` aggregates. PostgreSQL: one query; other backends: two (see module docstring)."""
    extra = extra or {}
    aggregates: dict[str, Any] = dict(extra)
    for name in fields:
        aggregates[f"{name}__count"] = Count(name)
        aggregates[f"{name}__mean"] = Avg(name)
    postgres = connection.vendor == "postgresql"
    if postgres:
        for name in fields:
            for percentile in percentiles:
                aggregates[f"{name}__{_pkey(percentile)}"] = PercentileCont(name, percentile=percentile)

    if group is None:
        rows = [{"grp": None, **queryset.aggregate(**aggregates)}]
    else:
        rows = list(queryset.annotate(grp=group).values("grp").annotate(**aggregates).order_by())
    by_key = {row["grp"]: row for row in rows}
    if not postgres:
        for key, values in _percentiles_by_ranking(queryset, group, fields, percentiles).items():
            if key in by_key:
                by_key[key].update(values)

    output = {}
    for key, row in by_key.items():
        latency = {
            name: LatencySummary(
                count=row[f"{name}__count"] or 0,
                mean=row[f"{name}__mean"],
                **{_pkey(p): row.get(f"{name}__{_pkey(p)}") for p in percentiles},
            )
            for name in fields
        }
        output[key] = (latency, {name: row[name] for name in extra})
    return output


def percentile_linear(sorted_values: Sequence[float], percentile: float) -> float | None:
    """The module's percentile definition on an in-memory sorted list (``percentile_cont``)."""
    return _interpolate(dict(enumerate(sorted_values)), len(sorted_values), percentile)


def _pkey(percentile: float) -> str:
    return f"p{round(percentile * 100):d}"


def _empty_latency() -> dict[str, LatencySummary]:
    return {name: LatencySummary() for name in LATENCY_FIELDS}


def _percentiles_by_ranking(
    queryset: QuerySet[Prediction],
    group: Expression | F | None,
    fields: Sequence[str],
    percentiles: Sequence[float],
) -> dict[Any, dict[str, float | None]]:
    """Percentiles per group for backends without ``percentile_cont``, in one query.

    The filtered rows come from the ORM (so scoping and the window are the same SQL);
    window functions rank each column within its group and only the rows at the ranks
    needed for interpolation are returned.
    """
    base = queryset.annotate(grp=group if group is not None else Value(0))
    base = base.annotate(**{f"v{index}": F(name) for index, name in enumerate(fields)})
    inner_sql, params = base.values("grp", *[f"v{i}" for i in range(len(fields))]).query.sql_with_params()
    quote = connection.ops.quote_name
    ranked_columns = []
    conditions = []
    for index in range(len(fields)):
        value, rank, count = quote(f"v{index}"), quote(f"r{index}"), quote(f"n{index}")
        ranked_columns.append(
            f"{value}, ROW_NUMBER() OVER (PARTITION BY {quote('grp')} "
            f"ORDER BY {value} IS NULL, {value}) - 1 AS {rank}, "
            f"COUNT({value}) OVER (PARTITION BY {quote('grp')}) AS {count}"
        )
        for percentile in percentiles:
            # rank - floor(p * (n - 1)) in (0, 1): the two ranks interpolation needs.
            low = f"CAST({float(percentile)!r} * ({count} - 1) AS INTEGER)"
            conditions.append(f"({rank} < {count} AND {rank} - {low} BETWEEN 0 AND 1)")
    # Only quoted aliases, validated floats and the ORM's own compiled SQL (with its
    # params passed separately) are interpolated here: no user input.
    sql = (
        f"SELECT * FROM (SELECT {quote('grp')}, {', '.join(ranked_columns)} "  # noqa: S608
        f"FROM ({inner_sql}) base) ranked WHERE {' OR '.join(conditions)}"
    )
    # Rank -> value per (group, field), only the few rows selected above.
    picked: dict[Any, dict[int, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    counts: dict[Any, dict[int, int]] = defaultdict(dict)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        columns = [column[0] for column in cursor.description]
        for row in cursor.fetchall():
            record = dict(zip(columns, row, strict=True))
            key = _group_key(record["grp"], group)
            for index in range(len(fields)):
                n = record[f"n{index}"]
                if record[f"v{index}"] is not None and record[f"r{index}"] < n:
                    picked[key][index][record[f"r{index}"]] = record[f"v{index}"]
                    counts[key][index] = n

    output: dict[Any, dict[str, float | None]] = {}
    for key, by_field in picked.items():
        output[key] = {}
        for index, name in enumerate(fields):
            ranks, n = by_field.get(index, {}), counts[key].get(index, 0)
            for percentile in percentiles:
                output[key][f"{name}__{_pkey(percentile)}"] = _interpolate(ranks, n, percentile)
    return output


def _interpolate(ranks: dict[int, float], n: int, percentile: float) -> float | None:
    if n == 0:
        return None
    position = percentile * (n - 1)
    low = math.floor(position)
    fraction = position - low
    if fraction == 0 or low + 1 >= n:
        return float(ranks[low])
    return ranks[low] + fraction * (ranks[low + 1] - ranks[low])


def _group_key(raw: Any, group: Expression | F | None) -> Any:
    if group is None:
        return None
    if isinstance(group, TruncDate) and not isinstance(raw, date):
        return date.fromisoformat(str(raw))
    return raw


# --- Metrics (all-time, read at scrape time) --------------------------------------


def prediction_counts_by_status_and_model() -> list[tuple[str, str, int]]:
    """(status, "name:version" or "", count) over all predictions, one GROUP BY."""
    rows = (
        Prediction.objects.order_by()
        .values("status", "model_version__name", "model_version__version")
        .annotate(n=Count("id"))
    )
    return [
        (
            row["status"],
            f"{row['model_version__name']}:{row['model_version__version']}" if row["model_version__name"] else "",
            row["n"],
        )
        for row in rows
    ]


def inference_histogram_all_time(
    *, bounds: Sequence[float] = HISTOGRAM_BOUNDS_MS
) -> tuple[list[HistogramBucket], float]:
    """Buckets of ``inference_ms`` over all succeeded predictions and their sum (ms), one query."""
    counts = (
        Prediction.objects.order_by()
        .filter(status=PredictionStatus.SUCCEEDED)
        .aggregate(**_histogram_aggregates("inference_ms", bounds), total=Sum("inference_ms"))
    )
    return _histogram_buckets(counts, bounds), float(counts["total"] or 0.0)

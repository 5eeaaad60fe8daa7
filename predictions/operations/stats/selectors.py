"""Stats selectors: read-only aggregates over predictions for the stats page and API.

Counts, means, the histogram and the label distribution are computed in the database
with GROUP BY; percentiles follow ``percentiles`` (in SQL on PostgreSQL, in Python
elsewhere), so the page stays fast on a million predictions in production.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, cast

from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.db.models import Aggregate, Avg, Count, Expression, F, Q, QuerySet, Value
from django.db.models.functions import TruncDate, TruncHour
from django.utils import timezone

from predictions import access
from predictions.models import ModelVersion, ModelVersionStatus, Prediction, PredictionStatus
from predictions.operations.stats.cards import evaluation_count, evaluation_top1, flat_metrics, model_card_facts
from predictions.operations.stats.percentiles import PercentileCont, percentile_key, percentiles_linear
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

PERCENTILES: tuple[float, ...] = (0.5, 0.95, 0.99)
LATENCY_FIELDS: tuple[str, ...] = ("queue_ms", "preprocess_ms", "inference_ms", "total_ms")
# Upper bounds (inclusive, "le" as in Prometheus) of the latency histogram; the last
# bucket is everything above the last bound.
HISTOGRAM_BOUNDS_MS: tuple[float, ...] = (25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)
WINDOW_DAYS: tuple[int, ...] = (7, 30, 90)
DEFAULT_WINDOW_DAYS = 30
TOP_LABELS = 20

# A signed-in user (their own or, by permission, everyone's predictions), or None for
# the everyone-scope report.
StatsUser = User | None

# One latency summary per field, and the ``extra`` aggregates, per group key.
GroupLatency = tuple[dict[str, LatencySummary], dict[str, Any]]


def stats_all_users(user: StatsUser, *, own: bool = False) -> bool:
    """Whether ``user`` sees every user's predictions in the stats (else only their own).

    ``None`` is the everyone-scope report (the background refresh); ``own`` asks for the
    user's own figures even when they may read everyone's. The one place that decides the
    stats scope: the queryset, the cache key and the report's ``all_users``.
    """
    return user is None or (not own and access.can_view_all_predictions(user))


def prediction_stats_queryset(*, user: StatsUser, own: bool = False) -> QuerySet[Prediction]:
    """Predictions the stats may read: every user's when ``stats_all_users``, else one's own."""
    queryset = Prediction.objects.order_by()
    if stats_all_users(user, own=own):
        return queryset
    return queryset.filter(user=user)


def prediction_stats(
    *, user: StatsUser, days: int = DEFAULT_WINDOW_DAYS, now: datetime | None = None, own: bool = False
) -> PredictionStats:
    """Totals, volume per day, latency percentiles (overall, per day, per model version),
    a latency histogram and the label distribution over the last ``days`` days.

    The window starts at local midnight ``days - 1`` days ago, so the per-day series has
    exactly ``days`` entries (today included). Latency, labels and confidence are over
    succeeded predictions (the only ones with timings and a label).
    """
    now = now or timezone.now()
    with _sort_memory():
        report = _prediction_stats(user=user, days=days, now=now, own=own)
    report.computed_at = now
    return report


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


def _prediction_stats(*, user: StatsUser, days: int, now: datetime, own: bool = False) -> PredictionStats:
    today = timezone.localdate(now)
    first_day = today - timedelta(days=days - 1)
    since = timezone.make_aware(datetime.combine(first_day, datetime.min.time()))
    threshold = float(settings.LOW_CONFIDENCE_THRESHOLD)
    scoped = prediction_stats_queryset(user=user, own=own).filter(created_at__gte=since)
    succeeded = scoped.filter(status=PredictionStatus.SUCCEEDED)

    result = PredictionStats(
        days=days,
        since=since,
        all_users=stats_all_users(user, own=own),
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
    if len(volume) == 1:  # one busy day: its hours are the series worth drawing
        result.per_hour = sorted(
            (timezone.localtime(row["hour"]), row["n"])
            for row in scoped.annotate(hour=TruncHour("created_at")).values("hour").annotate(n=Count("id"))
        )
    overall = latency_by_group(
        succeeded,
        group=None,
        extra={
            "mean_confidence": Avg("confidence"),
            "low_confidence": Count("id", filter=Q(confidence__lt=threshold)),
            "with_confidence": Count("confidence"),
        },
    )
    overall_latency, overall_extra = overall.get(None, ({}, {}))
    result.latency = overall_latency or _empty_latency()
    result.mean_confidence = overall_extra.get("mean_confidence")
    if overall_extra.get("with_confidence"):
        result.low_confidence_share = overall_extra["low_confidence"] / overall_extra["with_confidence"]

    per_day = latency_by_group(succeeded, group=TruncDate("created_at"))
    for offset in range(days):
        day = first_day + timedelta(days=offset)
        latency = per_day.get(day, ({}, {}))[0] or _empty_latency()
        result.per_day.append(DayStats(day=day, predictions=volume.get(day, 0), latency=latency))

    # A review counts for the version whose answer it reviewed: a prediction run again by
    # another version (reprocessing) keeps its owner's label, but the new answer is unreviewed.
    reviewed = Q(correction__model_version_id=F("model_version_id"))
    per_model = latency_by_group(
        succeeded,
        group=F("model_version_id"),
        extra={
            "predictions": Count("id"),
            "mean_confidence": Avg("confidence"),
            "low_confidence": Count("id", filter=Q(confidence__lt=threshold)),
            "with_confidence": Count("confidence"),
            # One-to-one: the join adds no rows.
            "reviewed": Count("correction", filter=reviewed),
            "confirmed": Count("correction", filter=reviewed & Q(correction__confirmed=True)),
            "corrections": Count("correction", filter=reviewed & Q(correction__confirmed=False)),
            "new_classes": Count("correction", filter=reviewed & Q(correction__new_class=True)),
        },
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
                low_confidence_share=(
                    extra["low_confidence"] / extra["with_confidence"] if extra["with_confidence"] else None
                ),
                corrections=extra["corrections"],
                new_classes=extra["new_classes"],
                correction_rate=extra["corrections"] / extra["predictions"] if extra["predictions"] else None,
                reviewed=extra["reviewed"],
                confirmed=extra["confirmed"],
                live_top1=extra["confirmed"] / extra["reviewed"] if extra["reviewed"] else None,
            )
        )
    result.comparison = model_comparison(result.per_model_version)
    result.active_model = active_model_card(result.per_model_version)

    result.histogram = latency_histogram(succeeded, field_name=result.histogram_field)
    result.top_labels = [
        LabelCount(label=row["label"], count=row["n"])
        for row in succeeded.exclude(label="")
        .values("label")
        .annotate(n=Count("id"))
        .order_by("-n", "label")[:TOP_LABELS]
    ]
    return result


def model_comparison(per_model_version: Sequence[ModelVersionStats]) -> ModelComparison | None:
    """The active version and the A/B candidate side by side, from the per-version rows
    (a version with no succeeded prediction in the window gets an empty row). The
    candidate is the one with a share of traffic, else the newest candidate that
    classified something in the window (a test paused at 0 %); ``None`` without one."""
    rows = {row.model_version_id: row for row in per_model_version}
    versions = list(
        ModelVersion.objects.filter(Q(is_active=True) | Q(status=ModelVersionStatus.CANDIDATE)).order_by(
            "-traffic_percent", "-created_at"
        )
    )
    active = next((v for v in versions if v.is_active), None)
    candidate = next(
        (v for v in versions if not v.is_active and (v.traffic_percent or v.pk in rows)),
        None,
    )
    if active is None or candidate is None:
        return None

    def row_of(version: ModelVersion) -> ModelVersionStats:
        return rows.get(version.pk) or ModelVersionStats(
            model_version_id=version.pk,
            name=version.name,
            version=version.version,
            predictions=0,
            mean_confidence=None,
            latency=_empty_latency(),
        )

    return ModelComparison(
        active=row_of(active), candidate=row_of(candidate), traffic_percent=candidate.traffic_percent
    )


def active_model_card(per_model_version: Sequence[ModelVersionStats]) -> ActiveModelCard | None:
    """The active version's card: when it was trained, its evaluation figures (and its
    top-1 among them), and its row of ``per_model_version`` (predictions, corrections,
    correction rate, live top-1 on reviewed predictions)."""
    active = ModelVersion.objects.filter(is_active=True).first()
    if active is None:
        return None
    evaluation = evaluation_top1(active.metrics)
    return ActiveModelCard(
        name=active.name,
        version=active.version,
        trained_at=active.exported_at,
        registered_at=active.created_at,
        classes=len(active.classes),
        metrics=dict(flat_metrics(active.metrics)),
        facts=model_card_facts(active.metrics, classes=len(active.classes)),
        evaluation_count=evaluation_count(active.metrics, evaluation[0]) if evaluation else None,
        evaluation_top1=evaluation[1] if evaluation else None,
        evaluation_top1_metric=evaluation[0] if evaluation else "",
        stats=next((row for row in per_model_version if row.model_version_id == active.pk), None),
    )


def latency_histogram(
    queryset: QuerySet[Prediction],
    *,
    field_name: str = "total_ms",
    bounds: Sequence[float] = HISTOGRAM_BOUNDS_MS,
) -> list[HistogramBucket]:
    """Counts of ``field_name`` per fixed bucket (``bounds[i-1] < x <= bounds[i]``), one query."""
    counts = queryset.aggregate(**histogram_aggregates(field_name, bounds))
    return histogram_buckets(counts, bounds)


def histogram_aggregates(field_name: str, bounds: Sequence[float]) -> dict[str, Count]:
    """One ``Count`` per bucket of ``bounds`` (keys ``b0``..``bN``), for one ``aggregate()``."""
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


def histogram_buckets(counts: dict[str, Any], bounds: Sequence[float]) -> list[HistogramBucket]:
    """The buckets from the result of ``histogram_aggregates``."""
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
) -> dict[Any, GroupLatency]:
    """Per group key (``None`` when ``group`` is None): latency summary per field, and the
    ``extra`` aggregates. PostgreSQL: one query; other backends: one more for the values
    the percentiles are computed from."""
    extra = extra or {}
    aggregates: dict[str, Any] = dict(extra)
    for name in fields:
        aggregates[f"{name}__count"] = Count(name)
        aggregates[f"{name}__mean"] = Avg(name)
    postgres = connection.vendor == "postgresql"
    if postgres:
        for name in fields:
            for percentile in percentiles:
                aggregates[f"{name}__{percentile_key(percentile)}"] = PercentileCont(name, percentile=percentile)

    if group is None:
        rows = [{"grp": None, **queryset.aggregate(**aggregates)}]
    else:
        # The plugin types these rows as {"grp": ...} alone: it cannot see the keys of **aggregates.
        grouped = queryset.annotate(grp=group).values("grp").annotate(**aggregates).order_by()
        rows = cast(list[dict[str, Any]], list(grouped))
    by_key = {row["grp"]: row for row in rows}
    if not postgres:
        for key, values in _percentiles_in_python(queryset, group, fields, percentiles).items():
            if key in by_key:
                by_key[key].update(values)

    output = {}
    for key, row in by_key.items():
        latency = {
            name: LatencySummary(
                count=row[f"{name}__count"] or 0,
                mean=row[f"{name}__mean"],
                **{percentile_key(p): row.get(f"{name}__{percentile_key(p)}") for p in percentiles},
            )
            for name in fields
        }
        output[key] = (latency, {name: row[name] for name in extra})
    return output


def _percentiles_in_python(
    queryset: QuerySet[Prediction],
    group: Expression | F | None,
    fields: Sequence[str],
    percentiles: Sequence[float],
) -> dict[Any, dict[str, float | None]]:
    """Percentiles per group for backends without ``percentile_cont``: the same filtered
    rows (so scoping and the window are the same SQL), their values in Python."""
    values: dict[Any, dict[str, list[float]]] = defaultdict(lambda: {name: [] for name in fields})
    rows = queryset.annotate(grp=group if group is not None else Value(0)).values_list("grp", *fields)
    for grp, *row in rows.iterator(chunk_size=10_000):
        key = grp if group is not None else None
        for name, value in zip(fields, row, strict=True):
            if value is not None:
                values[key][name].append(value)
    output: dict[Any, dict[str, float | None]] = {}
    for key, by_field in values.items():
        output[key] = {}
        for name, column in by_field.items():
            for percentile, result in zip(percentiles, percentiles_linear(column, percentiles), strict=True):
                output[key][f"{name}__{percentile_key(percentile)}"] = result
    return output


def _empty_latency() -> dict[str, LatencySummary]:
    return {name: LatencySummary() for name in LATENCY_FIELDS}

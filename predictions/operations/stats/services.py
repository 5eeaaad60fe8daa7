"""Stats services: the cached report the page and the API serve, and its refresh."""

from __future__ import annotations

from django.conf import settings
from django.core.cache import cache

from predictions.operations.stats.results import PredictionStats
from predictions.operations.stats.selectors import (
    DEFAULT_WINDOW_DAYS,
    WINDOW_DAYS,
    StatsUser,
    prediction_stats,
    stats_all_users,
)


def prediction_stats_cached(*, user: StatsUser, days: int = DEFAULT_WINDOW_DAYS, own: bool = False) -> PredictionStats:
    """What the page and the API show: ``prediction_stats`` kept for ``STATS_CACHE_SECONDS``
    (read-through: computed and stored on a miss).

    The everyone-scope report (what operators, accounts with
    ``predictions.view_prediction``, see) is also recomputed in the background by
    ``prediction_stats_refresh`` (Celery beat), so with a million rows operators never
    wait for the percentiles; one user's own report is small and computed on demand.
    """
    key = _stats_cache_key(user=user, days=days, own=own)
    report: PredictionStats | None = cache.get(key)
    if report is None:
        report = prediction_stats(user=user, days=days, own=own)
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


def _stats_cache_key(*, user: StatsUser, days: int, own: bool = False) -> str:
    scope = "all" if stats_all_users(user, own=own) else f"user-{user.pk if user is not None else ''}"
    # v4: the card in words, its sample size, the hours of a one-day window
    return f"prediction-stats:v4:{scope}:{days}"

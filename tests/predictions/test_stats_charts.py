"""Stats charts scale with the data: no row of equal bars, no one-bar month, no decimals
among percentages, and the model card in words with its sample size."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from predictions.operations import stats
from predictions.operations.stats import charts
from predictions.operations.stats.cards import model_card_facts
from predictions.operations.stats.results import DayStats, LabelCount, PredictionStats
from tests.factories import PredictionFactory, SucceededPredictionFactory


def _report(days: int, counts: dict[int, int], labels: list[tuple[str, int]] = ()) -> PredictionStats:  # type: ignore[assignment]
    today = date(2026, 12, 4)
    per_day = [
        DayStats(day=today - timedelta(days=days - 1 - offset), predictions=counts.get(offset, 0), latency={})
        for offset in range(days)
    ]
    report = PredictionStats(days=days, since=datetime(2026, 11, 1), all_users=False, per_day=per_day)
    report.top_labels = [LabelCount(label=label, count=count) for label, count in labels]
    return report


def test_labels_all_given_once_are_a_list_not_equal_bars() -> None:
    chart = charts.label_chart(_report(30, {}, [(f"label {n}", 1) for n in range(20)]))
    assert chart.bars == []
    assert len(chart.listed) == 20
    assert chart.listed_count == 1


def test_labels_given_more_than_once_are_bars_the_rest_listed() -> None:
    chart = charts.label_chart(_report(30, {}, [("cat", 6), ("dog", 4), ("fox", 1), ("owl", 1)]))
    assert [(bar.label, bar.value, bar.percent) for bar in chart.bars] == [("cat", 6, 100), ("dog", 4, 67)]
    assert chart.listed == ["fox", "owl"]


def test_a_month_with_a_few_busy_days_starts_at_the_first_one() -> None:
    chart = charts.volume_chart(_report(30, {25: 3, 29: 1}))
    assert chart.bucket == "day"
    assert len(chart.bars) == 5  # from the first busy day to today, not 30 bars
    assert chart.busiest == 3


def test_ninety_days_of_images_are_drawn_by_the_week() -> None:
    chart = charts.volume_chart(_report(90, {0: 2, 45: 1, 89: 5}))
    assert chart.bucket == "week"
    assert 13 <= len(chart.bars) <= 14
    assert sum(bar.value for bar in chart.bars) == 8


@pytest.mark.django_db
def test_one_busy_day_is_drawn_by_the_hour(user: User) -> None:
    morning = timezone.localtime().replace(hour=9, minute=5)
    for offset_hours, count in ((0, 2), (3, 1)):
        for _ in range(count):
            SucceededPredictionFactory.create(user=user, created_at=morning + timedelta(hours=offset_hours))

    chart = charts.volume_chart(stats.prediction_stats(user=user, days=7, now=morning + timedelta(hours=4)))

    assert chart.bucket == "hour"
    assert [(bar.label, bar.value) for bar in chart.bars] == [("09:00", 2), ("10:00", 0), ("11:00", 0), ("12:00", 1)]


@pytest.mark.django_db
def test_stats_page_says_zero_failed_quietly_and_rates_in_percent(user: User, user_client: Client) -> None:
    SucceededPredictionFactory.create(user=user)
    page = user_client.get("/stats/").content.decode()
    assert 'tile-value quiet">0</span><span class="muted">failed (0 %)' in page
    PredictionFactory.create(user=user, status="failed", completed_at=timezone.now())
    from django.core.cache import cache

    cache.clear()
    page = user_client.get("/stats/").content.decode()
    assert 'tile-value status failed">1</span><span class="muted">failed (50 %)' in page


def test_model_card_in_words_caveats_a_tiny_test_set() -> None:
    facts = model_card_facts(
        {
            "test_photos": {"count": 5, "top1_accuracy": 1.0, "top5_accuracy": 1.0},
            "equivalence_checked": False,
            "parameters": 4694024,
        },
        classes=1000,
    )
    assert facts == [
        "Knows 1,000 classes.",
        "Top-1 100 % on 5 test images: too few to tell much (when it was built).",
        "Top-5 100 % on the same images.",
        "4.7 million parameters.",
        "Not checked against the reference implementation.",
    ]
    big = model_card_facts({"test": {"count": 2000, "top1": 0.9124}}, classes=10)
    assert "Top-1 91.2 % on 2000 test images (on its held-out test set)." in big

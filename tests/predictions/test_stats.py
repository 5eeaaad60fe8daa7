"""Stats selector, page and API: aggregates against hand-computed values, per-user scoping.

Runs on SQLite (percentiles in Python) and PostgreSQL (percentile_cont); both must give
the same numbers, which are worked out by hand in the comments below.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from pytest_django import DjangoAssertNumQueries
from rest_framework.test import APIClient

from predictions.models import ModelVersion, Prediction, PredictionStatus
from predictions.operations import stats
from tests.factories import OperatorFactory, PredictionFactory

API_URL = "/api/v1/stats/"
PAGE_URL = "/stats/"


def _succeeded(
    user: User,
    *,
    created_at: datetime,
    total_ms: float,
    model_version: ModelVersion | None = None,
    label: str = "cat",
    confidence: float = 0.9,
    **extra: float,
) -> Prediction:
    return PredictionFactory.create(
        user=user,
        status=PredictionStatus.SUCCEEDED,
        created_at=created_at,
        completed_at=created_at + timedelta(milliseconds=total_ms),
        total_ms=total_ms,
        queue_ms=extra.get("queue_ms", total_ms / 2),
        preprocess_ms=extra.get("preprocess_ms", total_ms / 10),
        inference_ms=extra.get("inference_ms", total_ms / 5),
        label=label,
        confidence=confidence,
        model_version=model_version,
    )


@pytest.fixture
def history(user: User, other_user: User) -> dict[str, ModelVersion]:
    """A small hand-made history.

    user, today: 10 succeeded, total_ms 10, 20, ..., 100 (queue = total/2, preprocess =
      total/10, inference = total/5), confidence 0.1 .. 1.0, labels cat x6 then dog x4,
      model m:1 for the first 6, m:2 for the last 4.
    user, yesterday: 1 failed, 1 pending, 1 running.
    other_user, yesterday: 3 succeeded, total_ms 1000, 2000, 3000, label "fox", model m:1.
    other_user, 40 days ago: 1 succeeded, total_ms 5 (only in the 90-day window).
    """
    now = timezone.now()
    yesterday = now - timedelta(days=1)
    m1 = ModelVersion.objects.create(name="m", version="1", path="/nonexistent/m/1")
    m2 = ModelVersion.objects.create(name="m", version="2", path="/nonexistent/m/2")
    for index in range(10):
        _succeeded(
            user,
            created_at=now - timedelta(seconds=index),
            total_ms=10.0 * (index + 1),
            confidence=round(0.1 * (index + 1), 2),
            label="cat" if index < 6 else "dog",
            model_version=m1 if index < 6 else m2,
        )
    PredictionFactory.create(user=user, status=PredictionStatus.FAILED, created_at=yesterday, completed_at=yesterday)
    PredictionFactory.create(user=user, status=PredictionStatus.PENDING, created_at=yesterday)
    PredictionFactory.create(user=user, status=PredictionStatus.RUNNING, created_at=yesterday)
    for total in (1000.0, 2000.0, 3000.0):
        _succeeded(other_user, created_at=yesterday, total_ms=total, label="fox", model_version=m1)
    _succeeded(other_user, created_at=now - timedelta(days=40), total_ms=5.0, label="owl")
    return {"m1": m1, "m2": m2}


@pytest.fixture
def staff(db: None) -> User:
    return OperatorFactory.create()


def test_own_stats_match_hand_computed_values(user: User, history: dict[str, ModelVersion]) -> None:
    report = stats.prediction_stats(user=user, days=30)

    assert not report.all_users
    assert (report.total, report.succeeded, report.failed, report.pending) == (13, 10, 1, 2)
    assert report.distinct_users == 1
    # total_ms = 10..100, n = 10. p50: pos 4.5 -> 50 + .5*10 = 55; p95: pos 8.55 -> 95.5;
    # p99: pos 8.91 -> 99.1; mean 55.
    total = report.latency["total_ms"]
    assert total.count == 10
    assert total.p50 == pytest.approx(55.0)
    assert total.p95 == pytest.approx(95.5)
    assert total.p99 == pytest.approx(99.1)
    assert total.mean == pytest.approx(55.0)
    # queue = total / 2, so every figure halves; inference = total / 5.
    assert report.latency["queue_ms"].p95 == pytest.approx(47.75)
    assert report.latency["inference_ms"].p99 == pytest.approx(19.82)
    assert report.latency["preprocess_ms"].p50 == pytest.approx(5.5)
    # Confidence 0.1..1.0: mean 0.55; below 0.5 are 0.1..0.4 -> 4 of 10.
    assert report.mean_confidence == pytest.approx(0.55)
    assert report.low_confidence_share == pytest.approx(0.4)
    assert [(item.label, item.count) for item in report.top_labels] == [("cat", 6), ("dog", 4)]


def test_per_day_series_and_latency(user: User, history: dict[str, ModelVersion]) -> None:
    report = stats.prediction_stats(user=user, days=7)

    assert len(report.per_day) == 7
    assert report.per_day[-1].day == timezone.localdate()
    assert [day.predictions for day in report.per_day] == [0, 0, 0, 0, 0, 3, 10]
    today = report.per_day[-1].latency["total_ms"]
    assert (today.p50, today.count) == pytest.approx((55.0, 10))
    # Yesterday had no succeeded prediction of this user: no latency, not zeros.
    assert report.per_day[-2].latency["total_ms"].p50 is None


def test_per_model_version(user: User, history: dict[str, ModelVersion]) -> None:
    report = stats.prediction_stats(user=user, days=30)

    rows = {row.version: row for row in report.per_model_version}
    assert set(rows) == {"1", "2"}
    # m:1 total 10..60 -> p50 pos 2.5 -> 35, p95 pos 4.75 -> 57.5; confidence .1...6 -> .35.
    assert rows["1"].predictions == 6
    assert rows["1"].latency["total_ms"].p50 == pytest.approx(35.0)
    assert rows["1"].latency["total_ms"].p95 == pytest.approx(57.5)
    assert rows["1"].mean_confidence == pytest.approx(0.35)
    # m:2 total 70..100 -> p50 pos 1.5 -> 85, p99 pos 2.97 -> 99.7; confidence .7..1 -> .85.
    assert rows["2"].predictions == 4
    assert rows["2"].latency["total_ms"].p50 == pytest.approx(85.0)
    assert rows["2"].latency["total_ms"].p99 == pytest.approx(99.7)
    assert rows["2"].mean_confidence == pytest.approx(0.85)


def test_histogram_uses_fixed_buckets(user: User, history: dict[str, ModelVersion]) -> None:
    report = stats.prediction_stats(user=user, days=30)

    counts = {bucket.upper_ms: bucket.count for bucket in report.histogram}
    # 10, 20 <= 25; 30, 40, 50 in (25, 50]; 60..100 in (50, 100].
    assert (counts[25], counts[50], counts[100]) == (2, 3, 5)
    assert sum(counts.values()) == 10
    assert [bucket.upper_ms for bucket in report.histogram] == [*stats.HISTOGRAM_BOUNDS_MS, None]


def test_staff_see_every_user_and_window_matters(staff: User, user: User, history: dict[str, ModelVersion]) -> None:
    report = stats.prediction_stats(user=staff, days=30)

    assert report.all_users
    assert (report.total, report.succeeded, report.distinct_users) == (16, 13, 2)
    # total_ms = 10..100, 1000, 2000, 3000 (n = 13): p50 pos 6 -> 70;
    # p95 pos 11.4 -> 2000 + .4*1000 = 2400; p99 pos 11.88 -> 2880.
    total = report.latency["total_ms"]
    assert (total.p50, total.p95, total.p99) == pytest.approx((70.0, 2400.0, 2880.0))
    assert report.top_labels[0].label == "cat"
    assert ("fox", 3) in [(item.label, item.count) for item in report.top_labels]

    wide = stats.prediction_stats(user=staff, days=90)
    assert (wide.total, wide.latency["total_ms"].count) == (17, 14)
    # The 40-day-old prediction has no model version: its own "(none)" row.
    assert "(none)" in [row.name for row in wide.per_model_version]


def test_percentiles_on_a_generated_history_match_the_definition(user: User, other_user: User) -> None:
    """Many groups, ties and uneven sizes: the database result equals linear interpolation
    over the sorted values (percentile_cont), computed here in plain Python."""
    rng = random.Random(7)
    now = timezone.now()
    versions = [ModelVersion.objects.create(name="g", version=str(v), path="/x") for v in (1, 2, 3)]
    rows = []
    for index in range(240):
        owner = user if index % 3 else other_user
        created_at = now - timedelta(days=rng.randrange(0, 6), seconds=index)
        total = float(rng.choice([rng.randint(5, 400), 120]))  # many ties at 120
        rows.append(
            Prediction(
                user=owner,
                status=PredictionStatus.SUCCEEDED,
                created_at=created_at,
                completed_at=created_at,
                original_filename="x.jpg",
                image="uploads/x.jpg",
                image_format="JPEG",
                size_bytes=1,
                width=1,
                height=1,
                sha256="0" * 64,
                total_ms=total,
                queue_ms=total / 3,
                preprocess_ms=float(rng.randint(1, 9)),
                inference_ms=float(rng.randint(10, 90)),
                confidence=rng.random(),
                label=rng.choice(["a", "b", "c"]),
                model_version=versions[index % 3],
            )
        )
    Prediction.objects.bulk_create(rows)

    report = stats.prediction_stats(user=user, days=7)
    mine = [row for row in rows if row.user_id == user.id]

    def expected(values: list[float], p: float) -> float | None:
        return stats.percentile_linear(sorted(values), p)

    for name in stats.LATENCY_FIELDS:
        values = [getattr(row, name) for row in mine]
        summary = report.latency[name]
        assert summary.count == len(mine)
        for p, got in ((0.5, summary.p50), (0.95, summary.p95), (0.99, summary.p99)):
            assert got == pytest.approx(expected(values, p)), (name, p)
    for day in report.per_day:
        values = [row.total_ms for row in mine if timezone.localdate(row.created_at) == day.day]
        assert day.latency["total_ms"].count == len(values)
        assert day.latency["total_ms"].p95 == pytest.approx(expected(values, 0.95) if values else None)
    for model_row in report.per_model_version:
        values = [row.inference_ms for row in mine if row.model_version_id == model_row.model_version_id]
        assert model_row.predictions == len(values)
        assert model_row.latency["inference_ms"].p50 == pytest.approx(expected(values, 0.5))


def test_percentile_definition_is_linear_interpolation() -> None:
    assert stats.percentile_linear([], 0.5) is None
    assert stats.percentile_linear([7.0], 0.99) == 7.0
    assert stats.percentile_linear([1.0, 2.0, 3.0, 4.0], 0.5) == pytest.approx(2.5)
    assert stats.percentile_linear([0.0, 10.0], 0.95) == pytest.approx(9.5)


def test_percentile_edges_and_whole_percents_only() -> None:
    assert stats.percentiles_linear([], [0.5, 0.99]) == [None, None]
    assert stats.percentiles_linear([3.0], [0.0, 0.5, 1.0]) == [3.0, 3.0, 3.0]
    # Any order in; p0 and p100 are the extremes, as percentile_cont gives.
    assert stats.percentiles_linear([30.0, 10.0, 20.0], [0.0, 0.25, 1.0]) == [10.0, pytest.approx(15.0), 30.0]
    with pytest.raises(ValueError, match="whole percent between 0 and 1"):
        stats.percentile_linear([1.0, 2.0], 0.995)
    with pytest.raises(ValueError, match="whole percent between 0 and 1"):
        stats.percentile_linear([1.0, 2.0], 1.5)


def test_one_helper_decides_who_sees_every_user(staff: User, user: User, history: dict[str, ModelVersion]) -> None:
    assert stats.stats_all_users(staff)
    assert stats.stats_all_users(None)
    assert not stats.stats_all_users(user)

    mine = stats.prediction_stats_cached(user=user, days=30)
    everyone = stats.prediction_stats_cached(user=staff, days=30)

    # Cached separately: the staff report never answers a regular user, nor the reverse.
    assert (mine.all_users, mine.total) == (False, 13)
    assert (everyone.all_users, everyone.total) == (True, 16)
    assert stats.prediction_stats_cached(user=user, days=30).total == 13


def test_empty_history_has_no_percentiles(user: User) -> None:
    report = stats.prediction_stats(user=user, days=7)

    assert report.total == 0
    assert report.latency["total_ms"].p50 is None
    assert report.mean_confidence is None
    assert report.low_confidence_share is None
    assert [day.predictions for day in report.per_day] == [0] * 7


# --- Page ---------------------------------------------------------------------------


def test_page_requires_login(client: Client, db: None) -> None:
    response = client.get(PAGE_URL)
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]


def test_page_shows_own_stats_only(user_client: Client, history: dict[str, ModelVersion]) -> None:
    response = user_client.get(PAGE_URL)

    assert response.status_code == 200
    report = response.context["report"]
    assert (report.total, report.distinct_users) == (13, 1)
    body = response.content.decode()
    assert "Your predictions" in body
    assert "fox" not in body  # the other user's label
    assert "cat" in body
    assert "55 ms" in body  # the median time to a result
    assert 'href="/stats/"' in body  # nav link


def test_page_staff_see_all_and_pick_window(client: Client, staff: User, history: dict[str, ModelVersion]) -> None:
    client.force_login(staff)
    response = client.get(PAGE_URL, {"days": 90})

    assert response.status_code == 200
    assert response.context["report"].total == 17
    assert "All users" in response.content.decode()
    # 40 days from the first image to today: a bar a day from that first day, not 90.
    volume = response.context["volume"]
    assert volume.bucket == "day"
    assert len(volume.bars) == 41
    # An unknown window falls back to the default instead of failing.
    assert client.get(PAGE_URL, {"days": "abc"}).context["report"].days == stats.DEFAULT_WINDOW_DAYS


def test_staff_switch_to_their_own_figures_on_the_page_and_in_the_api(
    client: Client, staff: User, history: dict[str, ModelVersion], user: User
) -> None:
    _succeeded(staff, created_at=timezone.now(), label="owl", total_ms=7.0)
    client.force_login(staff)

    everyone = client.get(PAGE_URL)
    assert everyone.context["report"].all_users
    assert everyone.context["report"].total == 17
    assert 'href="?days=30&amp;scope=mine">Yours</a>' in everyone.content.decode()

    mine = client.get(PAGE_URL, {"scope": "mine", "days": "7"})
    report = mine.context["report"]
    assert (report.all_users, report.total, report.days) == (False, 1, 7)
    body = mine.content.decode()
    assert "Your predictions" in body
    assert "fox" not in body
    assert 'href="?days=90&amp;scope=mine"' in body  # the window links keep the scope

    api = APIClient()
    api.force_authenticate(staff)
    assert api.get(API_URL, {"scope": "mine"}).json()["total"] == 1
    assert api.get(API_URL).json()["total"] == 17
    # A regular user has nothing more to see: no switch, own figures either way.
    client.force_login(user)
    assert "scope=mine" not in client.get(PAGE_URL).content.decode()


def test_page_uses_no_external_assets(user_client: Client, history: dict[str, ModelVersion]) -> None:
    body = user_client.get(PAGE_URL).content.decode()
    assert "http://" not in body
    assert "https://" not in body
    assert "<script src" not in body


# --- API -----------------------------------------------------------------------------


def test_api_requires_authentication(db: None) -> None:
    response = APIClient().get(API_URL)
    assert response.status_code == 401
    assert set(response.json()["error"]) == {"code", "message", "field"}


def test_api_returns_own_stats(user: User, history: dict[str, ModelVersion]) -> None:
    client = APIClient()
    client.force_authenticate(user)
    response = client.get(API_URL, {"days": 7})

    assert response.status_code == 200
    body = response.json()
    assert (body["days"], body["total"], body["succeeded"], body["pending"]) == (7, 13, 10, 2)
    assert body["all_users"] is False
    assert body["latency_ms"]["total"]["p95"] == pytest.approx(95.5)
    assert body["latency_ms"]["queue"]["p50"] == pytest.approx(27.5)
    assert len(body["per_day"]) == 7
    assert body["per_day"][-1]["latency_ms"]["total"]["p50"] == pytest.approx(55.0)
    assert {row["version"] for row in body["per_model_version"]} == {"1", "2"}
    assert body["top_labels"][0] == {"label": "cat", "count": 6}
    assert body["low_confidence_share"] == pytest.approx(0.4)
    assert body["histogram"][-1]["upper_ms"] is None


def test_api_staff_see_all(staff: User, history: dict[str, ModelVersion]) -> None:
    client = APIClient()
    client.force_authenticate(staff)
    body = client.get(API_URL).json()
    assert (body["total"], body["distinct_users"], body["all_users"]) == (16, 2, True)


def test_api_rejects_unknown_window(user: User) -> None:
    client = APIClient()
    client.force_authenticate(user)
    response = client.get(API_URL, {"days": 8})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "days"


def test_staff_page_is_served_from_the_refreshed_report_without_aggregate_queries(
    client: Client, django_user_model: type[User], django_assert_max_num_queries: DjangoAssertNumQueries
) -> None:
    from predictions.operations.tasks import stats_refresh

    staff = OperatorFactory.create()
    PredictionFactory.create(user=staff)
    client.force_login(staff)
    stats_refresh()

    # session, user and its permissions (who may see every user), and the live worker heartbeats
    # (one indexed read, the Worker hosts table) only: the report comes from the cache
    with django_assert_max_num_queries(5):
        page = client.get("/stats/?days=30")

    assert page.status_code == 200
    assert page.context["report"].total == 1
    assert stats.prediction_stats_cached(user=staff, days=30).computed_at is not None

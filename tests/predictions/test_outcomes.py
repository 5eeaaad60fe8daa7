"""A waiting request that holds its row answers from the worker's announcement (which
carries the outcome) instead of reading the row again, with the same answer as a read."""

from __future__ import annotations

import asyncio
import copy
import os
import threading
import time
import zoneinfo
from collections.abc import Sequence

import pytest
import redis
from django.contrib.auth.models import User
from django.utils import timezone
from pytest_django import Settings
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from predictions import events, outcomes, selectors
from predictions.api.bodies import prediction_body
from predictions.models import Prediction, PredictionId, PredictionStatus
from tests.factories import ModelVersionFactory, PredictionFactory
from tests.predictions.test_api_lean import _kinds

LOCAL_REDIS = os.environ.get("TEST_EVENTS_REDIS_URL", "redis://127.0.0.1:6379/15")


def _as_submitted(final: Prediction) -> Prediction:
    """The row as the submission that wrote it holds it: pending, no result yet."""
    held = copy.deepcopy(final)
    for name in ("label", "class_id", "error"):
        setattr(held, name, "")
    for name in ("confidence", "entropy", "margin", "uncertain", "started_at", "completed_at", "total_ms"):
        setattr(held, name, None)
    held.status, held.top_predictions, held.model_version = PredictionStatus.PENDING, [], None
    return held


@pytest.mark.parametrize("zone", ["UTC", "Asia/Tokyo"])
def test_a_row_given_its_announced_outcome_answers_as_the_stored_row(user: User, zone: str) -> None:
    request = Request(APIRequestFactory().get("/api/v1/predictions/"))
    finals = [p for p in _kinds(user) if p.is_final]
    assert finals
    with timezone.override(zoneinfo.ZoneInfo(zone)):
        for final in finals:
            stored = Prediction.objects.select_related("model_version").get(id=final.id)
            held = _as_submitted(stored)
            assert outcomes.outcome_apply(held, outcomes.outcome_message(final))
            assert prediction_body(held, request) == prediction_body(stored, request)


def test_a_bare_final_announcement_carries_no_outcome(user: User) -> None:
    held = PredictionFactory.create(user=user)
    assert not outcomes.outcome_apply(held, "final")
    assert held.status == PredictionStatus.PENDING


def _redis_or_skip() -> None:
    try:
        redis.Redis.from_url(LOCAL_REDIS, socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip(f"needs Redis at {LOCAL_REDIS} (the CI machine runs one)")


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    reads: list[int] = []
    real_read = selectors._predictions_read

    async def counted(user: User, prediction_ids: Sequence[PredictionId]) -> list[Prediction]:
        reads.append(len(prediction_ids))
        return await real_read(user, prediction_ids)

    monkeypatch.setattr(selectors, "_predictions_read", counted)
    return reads


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("with_outcome", [True, False])
def test_a_long_poll_woken_with_the_outcome_does_not_read_the_row_again(
    user: User, settings: Settings, monkeypatch: pytest.MonkeyPatch, with_outcome: bool
) -> None:
    _redis_or_skip()
    settings.EVENTS_REDIS_URL = LOCAL_REDIS
    settings.EVENTS_RECHECK_SECONDS = 3600  # no safety re-read before the test gives up
    version = ModelVersionFactory.create()
    running = PredictionFactory.create(user=user, status=PredictionStatus.RUNNING, started_at=timezone.now())
    events.change_stamp("test")  # the listener up before the wait: its first wake-up (re-check all) is past
    listener = events._listener()
    assert listener is not None
    assert listener.subscribed.wait(10)
    time.sleep(0.2)
    reads = _count_reads(monkeypatch)
    real_wait = events.Subscription.wait
    finishing: list[bool] = []

    def finish() -> None:  # what the worker does: store, then announce once committed
        Prediction.objects.filter(id=running.id).update(
            status=PredictionStatus.SUCCEEDED, label="tabby", class_id="n1", confidence=0.75, model_version=version,
            top_predictions=[{"label": "tabby", "class_id": "n1", "score": 0.75}], completed_at=timezone.now(),
            total_ms=12.5,
        )  # fmt: skip
        stored = Prediction.objects.select_related("model_version").get(id=running.id)
        events.prediction_final_publish([stored.id], [outcomes.outcome_message(stored)] if with_outcome else None)

    async def wait_then_finish(subscription: events.Subscription, timeout: float) -> bool:
        if not finishing:
            finishing.append(True)
            threading.Thread(target=finish).start()
        return await real_wait(subscription, timeout)

    monkeypatch.setattr(events.Subscription, "wait", wait_then_finish)

    async def poll() -> Prediction:
        waited = selectors.prediction_wait(user=user, prediction_id=running.id, seconds=3600)
        return await asyncio.wait_for(waited, timeout=120)

    answered = asyncio.run(poll())

    request = Request(APIRequestFactory().get("/api/v1/predictions/"))
    stored = Prediction.objects.select_related("model_version").get(id=running.id)
    assert prediction_body(answered, request) == prediction_body(stored, request)
    assert answered.status == PredictionStatus.SUCCEEDED
    # Read once before waiting; read again only when the announcement did not say it all.
    assert len(reads) == (1 if with_outcome else 2)

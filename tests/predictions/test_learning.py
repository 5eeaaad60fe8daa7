"""The learning loop's rules without training (tests/predictions/test_learning_e2e.py
trains for real): when a cycle starts and what it may learn from, the A/B decision rule,
the off switch and the pause, and what operators see on the Models page."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.mail import EmailMessage
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from pytest_django import Settings

from predictions.learning import services as learning_services
from predictions.learning.statistics import Arm, probability_better
from predictions.models import (
    Correction,
    LearningCycle,
    LearningCycleState,
    ModelActivation,
    ModelActivationKind,
    ModelVersion,
    ModelVersionStatus,
)
from tests.factories import CorrectionFactory, ModelVersionFactory, SucceededPredictionFactory
from tests.predictions.conftest import _copy_model

pytestmark = pytest.mark.django_db

TABBY, TIGER, CHIHUAHUA = "n02123045", "n02123159", "n02085620"
LABELS = {TABBY: "tabby cat", TIGER: "tiger cat", CHIHUAHUA: "Chihuahua"}


@pytest.fixture
def learning(settings: Settings, tmp_path: Path) -> Settings:
    settings.LEARNING_ENABLED = True
    settings.LEARNING_MIN_REVIEWS = 8
    settings.LEARNING_MIN_PER_CLASS = 4
    settings.LEARNING_HOLDOUT_PERCENT = 25
    settings.LEARNING_MIN_ARM_REVIEWS = 10
    settings.LEARNING_WORK_DIR = str(tmp_path / "learning")
    return settings


def _review(version: ModelVersion, class_id: str, *, confirmed: bool = True, **prediction: object) -> Correction:
    made = SucceededPredictionFactory.create(
        model_version=version, label=LABELS[class_id], class_id=class_id, **prediction
    )
    review: Correction = CorrectionFactory.create(
        prediction=made, confirmed=confirmed, label=LABELS[class_id], class_id=class_id, new_class=False
    )
    return review


def _wrong(version: ModelVersion, **prediction: object) -> Correction:
    made = SucceededPredictionFactory.create(model_version=version, label="tiger cat", class_id=TIGER, **prediction)
    review: Correction = CorrectionFactory.create(
        prediction=made, confirmed=False, label="tabby cat", class_id=TABBY, new_class=False
    )
    return review


def test_the_rule_needs_evidence_to_call_a_winner() -> None:
    # No reviews: a coin toss. The same rates on more reviews: more certainty either way.
    assert probability_better(Arm(0, 0), Arm(0, 0)) == pytest.approx(0.5)
    assert probability_better(Arm(10, 8), Arm(10, 6)) < 0.95
    assert probability_better(Arm(200, 160), Arm(200, 120)) > 0.999
    assert probability_better(Arm(200, 120), Arm(200, 160)) < 0.001
    # Exact: the two directions add up to one.
    assert probability_better(Arm(30, 20), Arm(40, 22)) + probability_better(Arm(40, 22), Arm(30, 20)) == (
        pytest.approx(1.0)
    )


def test_a_cycle_starts_only_with_enough_reviews_and_never_learns_from_unreviewed_predictions(
    learning: Settings,
) -> None:
    active = ModelVersionFactory.create()
    reviews = [_review(active, TABBY) for _ in range(4)] + [_wrong(active) for _ in range(3)]
    SucceededPredictionFactory.create_batch(5, model_version=active)  # never reviewed
    CorrectionFactory.create()  # a new class: the model has no such class to learn
    assert not learning_services.learning_tick().queued
    assert LearningCycle.objects.count() == 0

    reviews += [_review(active, TIGER) for _ in range(4)]
    reviews.append(_review(active, CHIHUAHUA))  # too few of its class to take part
    outcome = learning_services.learning_tick()

    assert outcome.queued
    cycle = LearningCycle.objects.get()
    assert cycle.state == LearningCycleState.QUEUED
    assert cycle.base == active
    assert cycle.classes == [TABBY, TIGER]
    used = set(cycle.training_reviews) | set(cycle.holdout_reviews)
    assert used == {review.pk for review in reviews if review.class_id in (TABBY, TIGER)}
    assert set(cycle.training_reviews).isdisjoint(cycle.holdout_reviews)
    assert {Correction.objects.get(pk=pk).class_id for pk in cycle.holdout_reviews} == {TABBY, TIGER}
    # One cycle at a time: the next tick only reports it.
    assert not learning_services.learning_tick().queued
    assert LearningCycle.objects.count() == 1


def test_switched_off_or_paused_the_loop_does_nothing(learning: Settings, user: User) -> None:
    active = ModelVersionFactory.create()
    for _ in range(6):
        _review(active, TABBY)
        _review(active, TIGER)
    learning.LEARNING_ENABLED = False
    assert "switched off" in learning_services.learning_tick().message
    learning.LEARNING_ENABLED = True
    learning_services.learning_pause_set(paused=True, user=user)
    assert "paused" in learning_services.learning_tick().message
    assert LearningCycle.objects.count() == 0
    learning_services.learning_pause_set(paused=False, user=user)
    assert learning_services.learning_tick().queued


@pytest.fixture
def testing_cycle(learning: Settings, model_dir: Path, tmp_path: Path) -> LearningCycle:
    """A cycle whose candidate (a real exported folder, so it can be activated) has half the users."""
    active = ModelVersionFactory.create()
    folder = _copy_model(model_dir, tmp_path, "7")
    candidate = ModelVersionFactory.create(
        name="efficientnet_lite0", version="7", path=str(folder), status=ModelVersionStatus.CANDIDATE,
        is_active=False, traffic_percent=50, classes=active.classes,
    )  # fmt: skip
    return LearningCycle.objects.create(
        base=active, candidate=candidate, state=LearningCycleState.TESTING, created_at=timezone.now(),
        testing_since=timezone.now() - timedelta(hours=1),
    )  # fmt: skip


def _arm(version: ModelVersion, right: int, wrong: int) -> None:
    for _ in range(right):
        _review(version, TABBY)
    for _ in range(wrong):
        _wrong(version)


def test_a_candidate_clearly_better_on_live_reviews_is_promoted(testing_cycle: LearningCycle) -> None:
    candidate, active = testing_cycle.candidate, testing_cycle.base
    assert candidate is not None
    _arm(candidate, right=9, wrong=1)
    _arm(active, right=5, wrong=4)  # one review short on this side: no decision yet
    # Reviews of predictions made before the test began do not count.
    _wrong(active, created_at=timezone.now() - timedelta(days=2))
    assert "Still testing" in learning_services.learning_tick().message

    _arm(active, right=0, wrong=1)
    learning_services.learning_tick()

    testing_cycle.refresh_from_db()
    candidate.refresh_from_db()
    assert testing_cycle.state == LearningCycleState.PROMOTED
    assert testing_cycle.live["active_reviewed"] == 10
    assert testing_cycle.live["probability_better"] >= 0.95
    assert candidate.is_active
    switch = ModelActivation.objects.get()
    assert (switch.model_version, switch.previous, switch.kind) == (candidate, active, ModelActivationKind.LEARNING)


def test_a_worse_candidate_is_retired_and_an_undecided_one_too_after_the_time_limit(
    testing_cycle: LearningCycle, learning: Settings
) -> None:
    candidate = testing_cycle.candidate
    assert candidate is not None
    _arm(candidate, right=5, wrong=5)
    _arm(testing_cycle.base, right=6, wrong=4)
    assert "Still testing" in learning_services.learning_tick().message  # too close to call

    LearningCycle.objects.filter(pk=testing_cycle.pk).update(testing_since=timezone.now() - timedelta(days=15))
    learning_services.learning_tick()

    testing_cycle.refresh_from_db()
    candidate.refresh_from_db()
    assert testing_cycle.state == LearningCycleState.RETIRED
    assert "no decision within the limits" in testing_cycle.reason
    assert candidate.status == ModelVersionStatus.RETIRED
    assert candidate.traffic_percent == 0
    assert not testing_cycle.is_open


def test_a_losing_candidate_is_retired(testing_cycle: LearningCycle) -> None:
    candidate = testing_cycle.candidate
    assert candidate is not None
    _arm(candidate, right=2, wrong=8)
    _arm(testing_cycle.base, right=9, wrong=1)
    learning_services.learning_tick()
    testing_cycle.refresh_from_db()
    assert testing_cycle.state == LearningCycleState.RETIRED
    assert "worse" in testing_cycle.reason


def test_an_operator_ending_the_test_ends_the_cycle(testing_cycle: LearningCycle) -> None:
    assert testing_cycle.candidate is not None
    ModelVersion.objects.filter(pk=testing_cycle.candidate.pk).update(traffic_percent=0)
    learning_services.learning_tick()
    testing_cycle.refresh_from_db()
    assert testing_cycle.state == LearningCycleState.ENDED
    assert "with no users" in testing_cycle.reason


def test_the_models_page_shows_the_cycle_and_pauses_the_loop(
    testing_cycle: LearningCycle, client: Client, switcher: User
) -> None:
    learning_services.learning_cycle_event(cycle=testing_cycle, message="Registered v7 as a candidate.")
    client.force_login(switcher)
    page = client.get("/models/").content.decode()
    assert "Learning cycle" in page
    assert "Registered v7 as a candidate." in page
    assert "Pause learning" in page

    response = client.post("/models/learning/pause/", {"paused": "yes"})
    assert response.status_code == 302
    assert "Resume learning" in client.get("/models/").content.decode()
    assert "paused" in learning_services.learning_tick().message


def test_the_command_says_why_it_did_nothing(learning: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    ModelVersionFactory.create()
    call_command("learning_cycle", "--now")
    assert "0 new review(s) of 8 needed" in capsys.readouterr().out


def test_operators_are_emailed_each_step_when_asked(
    testing_cycle: LearningCycle, learning: Settings, mailoutbox: list[EmailMessage]
) -> None:
    learning.LEARNING_NOTIFY_EMAILS = ["ops@example.com"]
    candidate = testing_cycle.candidate
    assert candidate is not None
    _arm(candidate, right=2, wrong=8)
    _arm(testing_cycle.base, right=9, wrong=1)
    learning_services.learning_tick()

    assert [message.to for message in mailoutbox] == [["ops@example.com"]]
    assert "Retired" in mailoutbox[0].subject
    assert "worse" in mailoutbox[0].body


def test_the_scheduled_tick_sends_a_due_cycle_to_the_training_workers_queue(
    learning: Settings, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    from imagerec.celery import app
    from predictions.learning import tasks

    active = ModelVersionFactory.create()
    for _ in range(4):
        _review(active, TABBY)
        _review(active, TIGER)
    sent: list[int] = []
    monkeypatch.setattr(tasks.learning_cycle_train, "delay", sent.append)

    with django_capture_on_commit_callbacks(execute=True):
        tasks.learning_tick()

    assert sent == [LearningCycle.objects.get().pk]  # queued, not trained in the beat's worker
    route = app.amqp.router.route({}, tasks.learning_cycle_train.name)
    assert route["queue"].name == "training"  # never the inference workers' queue


def test_a_failed_cycle_is_tried_again_and_a_rejected_one_waits_for_new_reviews(learning: Settings) -> None:
    active = ModelVersionFactory.create()
    for _ in range(4):
        _review(active, TABBY)
        _review(active, TIGER)
    first = learning_services.learning_tick().cycle
    assert first is not None
    learning_services.learning_cycle_event(cycle=first, message="Training failed: disk full", state="failed")
    second = learning_services.learning_tick().cycle
    assert second is not None
    assert second.pk != first.pk  # the reviews were not used up

    learning_services.learning_cycle_event(cycle=second, message="Not registered, worse", state="rejected")
    assert "0 new review(s) of 8 needed" in learning_services.learning_tick().message


def test_the_admin_shows_every_step_of_a_cycle(testing_cycle: LearningCycle, admin_client: Client) -> None:
    learning_services.learning_cycle_event(cycle=testing_cycle, message="Registered v7 as a candidate.")
    listing = admin_client.get("/admin/predictions/learningcycle/")
    assert listing.status_code == 200
    assert "Registered v7 as a candidate." in listing.content.decode()
    detail = admin_client.get(f"/admin/predictions/learningcycle/{testing_cycle.pk}/change/")
    assert detail.status_code == 200
    assert "Registered v7 as a candidate." in detail.content.decode()

    admin_client.post("/admin/predictions/learningcontrol/add/", {"paused": "on"})
    assert "paused" in learning_services.learning_tick().message

"""The continuous learning loop end to end, with a real Celery worker and the real model:
reviews of real photos (crops of scikit-image's cat, espresso and rocket photos) pile up
past the threshold, ``learning_cycle --now`` fine-tunes a candidate on exactly the reviewed
images and registers it, the A/B test sends a share of users' predictions to it, and the
reviews of the test's predictions promote it (first case) or retire it (second case).

The reviewers' convention differs from the shipped ImageNet model's on the cat: it says
"Egyptian Mau", they call the photo's cat a "tabby cat". That is what the candidate learns,
so it really is better on the held-back reviews, as the loop requires before testing it.
Thresholds, epochs and the input size are set low (the ``learning`` fixture) so that one
fine-tune takes well under a minute on two cores."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from PIL import Image
from pytest_django import Settings

from predictions.learning import selectors as learning_selectors
from predictions.models import (
    Correction,
    LearningCycle,
    LearningCycleState,
    ModelActivation,
    ModelActivationKind,
    ModelVersion,
    ModelVersionStatus,
    Prediction,
)
from predictions.registry import selectors as registry_selectors
from predictions.reviews import services as review_services
from predictions.services import submissions
from tests.conftest import PHOTOS, wait_for_final
from tests.factories import UserFactory

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# What the reviewers call each photo's subject (an ImageNet class of the shipped model).
TRUTH = {"chelsea": "tabby cat", "coffee": "espresso", "rocket": "missile"}
CROPS_PER_PHOTO = 8
ARM_REVIEWS = 6


@pytest.fixture
def learning(settings: Settings, tmp_path: Path) -> Settings:
    settings.LEARNING_ENABLED = True
    settings.LEARNING_MIN_REVIEWS = 3 * CROPS_PER_PHOTO
    settings.LEARNING_MIN_PER_CLASS = 6
    settings.LEARNING_HOLDOUT_PERCENT = 25
    settings.LEARNING_AB_SHARE = 50
    settings.LEARNING_MIN_ARM_REVIEWS = ARM_REVIEWS
    settings.LEARNING_WARMUP_EPOCHS = 4  # head only (warm-started): a step per epoch on this tiny set
    settings.LEARNING_EPOCHS = 0
    settings.LEARNING_INPUT_SIZE = 128
    settings.LEARNING_WORK_DIR = str(tmp_path / "learning")
    settings.LEARNING_MODEL_DIR = str(tmp_path / "models")
    return settings


def _crops(name: str, count: int, offset: int = 0) -> list[bytes]:
    """``count`` different crops (60-80 % of each side, spread over the frame) of one photo, as JPEG."""
    with Image.open(PHOTOS[name].path) as opened:
        image = opened.convert("RGB")
    width, height = image.size
    crops = []
    for index in range(offset, offset + count):
        side = 0.6 + 0.05 * (index % 5)
        crop_w, crop_h = int(width * side), int(height * side)
        left, top = (width - crop_w) * ((index * 37) % 11) // 10, (height - crop_h) * ((index * 53) % 7) // 6
        buffer = io.BytesIO()
        image.crop((left, top, left + crop_w, top + crop_h)).save(buffer, "JPEG", quality=90)
        crops.append(buffer.getvalue())
    return crops


def _classified(user: User, content: bytes, name: str) -> Prediction:
    prediction = submissions.prediction_create(user=user, uploaded_file=SimpleUploadedFile(f"{name}.jpg", content))
    finished = wait_for_final(prediction.id)
    assert finished.status == "succeeded", finished.error
    return finished


def _review(prediction: Prediction, label: str) -> Correction:
    """The owner's honest review: a confirmation when the model said ``label``, else a correction to it."""
    assert prediction.user is not None
    if prediction.label.casefold() == label.casefold():
        return review_services.prediction_confirm(prediction=prediction, user=prediction.user)
    return review_services.correction_set(prediction=prediction, user=prediction.user, label=label)


def _reviewed_photos(owner: User) -> list[Correction]:
    """Crops of the three photos, classified by the real worker with the active version and reviewed."""
    reviews = []
    for name, label in TRUTH.items():
        for index, content in enumerate(_crops(name, CROPS_PER_PHOTO)):
            reviews.append(_review(_classified(owner, content, f"{name}{index}"), label))
    return reviews


def _users_on_each_side(candidate: ModelVersion) -> tuple[User, User]:
    """A user the A/B share puts on the candidate and one it leaves on the active version."""
    sides: dict[bool, User] = {}
    while len(sides) < 2:
        user = UserFactory.create()
        assigned = registry_selectors.model_version_for_user(user=user)
        sides.setdefault(assigned == candidate, user)
    return sides[True], sides[False]


def _learning_cycle() -> LearningCycle:
    call_command("learning_cycle", "--now")
    cycle = LearningCycle.objects.select_related("base", "candidate").order_by("-id").first()
    assert cycle is not None
    return cycle


def _trained_candidate(owner: User) -> tuple[LearningCycle, list[Correction]]:
    """Reviews past the threshold, then one cycle: a candidate trained on exactly the reviewed images."""
    reviews = _reviewed_photos(owner)
    unreviewed = _classified(owner, _crops("chelsea", 1, offset=40)[0], "never-reviewed")
    assert learning_selectors.learning_cycle_open() is None

    cycle = _learning_cycle()

    assert cycle.state == LearningCycleState.TESTING, cycle.events
    assert cycle.candidate is not None
    assert cycle.candidate.status == ModelVersionStatus.CANDIDATE
    assert cycle.candidate.traffic_percent == 50
    assert cycle.candidate.parent == cycle.base
    # Warm-started: from the active version's own weights and head, not from ImageNet's.
    started = json.loads((Path(cycle.candidate.path) / "metadata.json").read_text(encoding="utf-8"))
    assert started["initialised_from"]["version"] == f"{cycle.base.name}/{cycle.base.version}"
    assert started["initialised_from"]["head_classes_kept"] == len(TRUTH)
    assert started["training"]["config"]["warm_start"] is True
    assert f"warm-started from {cycle.base.name}/{cycle.base.version}" in cycle.events[-1]["message"]
    # Nothing unreviewed: the files it trained on are exactly the reviewed images it did not hold back.
    trained_files = {path.name for path in Path(cycle.dataset_dir).rglob("*") if path.is_file()}
    training = [review for review in reviews if review.pk in cycle.training_reviews]
    assert trained_files == {f"{review.prediction_id}.jpg" for review in training}
    assert len(training) + len(cycle.holdout_reviews) == len(reviews)
    assert set(cycle.holdout_reviews).isdisjoint(cycle.training_reviews)
    assert f"{unreviewed.id}.jpg" not in trained_files
    assert {entry["class_id"] for entry in cycle.candidate.classes} == {review.class_id for review in reviews}
    assert {entry["label"] for entry in cycle.candidate.classes} == set(TRUTH.values())
    # Measured against the active version on the same held-back reviews, and not worse.
    assert cycle.offline["count"] == len(cycle.holdout_reviews)
    assert cycle.offline["candidate_right"] >= cycle.offline["active_right"]
    return cycle, reviews


def _ab_predictions(cycle: LearningCycle) -> tuple[list[Prediction], list[Prediction]]:
    """Predictions of a user on each side of the A/B test, classified by the real worker."""
    assert cycle.candidate is not None
    on_candidate, on_active = _users_on_each_side(cycle.candidate)
    arms: tuple[list[Prediction], list[Prediction]] = ([], [])
    for arm, user in zip(arms, (on_candidate, on_active), strict=True):
        for index in range(ARM_REVIEWS):
            name = "coffee" if index == 0 else "chelsea"  # the cat is where the two versions differ
            content = _crops(name, 1, offset=20 + index + (0 if user == on_candidate else 10))[0]
            prediction = _classified(user, content, name)
            arm.append(prediction)
    candidate_arm, active_arm = arms
    assert {p.assigned_version_id for p in candidate_arm} == {cycle.candidate.pk}
    assert {p.model_version_id for p in candidate_arm} == {cycle.candidate.pk}  # the worker ran the candidate
    assert {p.model_version_id for p in active_arm} == {cycle.base.pk}
    return candidate_arm, active_arm


def test_a_candidate_learnt_from_reviews_wins_its_ab_test_and_is_promoted(
    celery_worker: subprocess.Popen[bytes], active_model: ModelVersion, user: User, learning: Settings
) -> None:
    cycle, _ = _trained_candidate(user)
    candidate = cycle.candidate
    assert candidate is not None
    # The reviewers' "tabby cat" is learnt: the shipped model called every held-back cat an Egyptian Mau.
    assert cycle.offline["candidate_right"] > cycle.offline["active_right"]

    candidate_arm, active_arm = _ab_predictions(cycle)
    # Too few reviews yet: the next step keeps testing.
    assert _learning_cycle().state == LearningCycleState.TESTING

    # The test's predictions get reviewed as they are: the candidate says "tabby cat", the
    # active version still "Egyptian Mau".
    for prediction in candidate_arm + active_arm:
        _review(prediction, TRUTH[Path(prediction.original_filename).stem])
    cycle = _learning_cycle()

    assert cycle.state == LearningCycleState.PROMOTED, cycle.events
    assert cycle.live["probability_better"] >= 0.95
    candidate.refresh_from_db()
    assert candidate.is_active
    assert candidate.traffic_percent == 0
    switch = ModelActivation.objects.order_by("-activated_at", "-id").first()
    assert switch is not None
    assert (switch.model_version, switch.previous, switch.kind) == (
        candidate,
        active_model,
        ModelActivationKind.LEARNING,
    )
    # New predictions go to the promoted version, and the worker runs it.
    assert _classified(user, _crops("chelsea", 1, offset=60)[0], "after").model_version == candidate
    assert [event["message"].split(" ")[0] for event in cycle.events] == [
        "Started", "Training", "Registered", "Promoted",
    ]  # fmt: skip


def test_a_candidate_that_loses_its_ab_test_is_retired(
    celery_worker: subprocess.Popen[bytes], active_model: ModelVersion, user: User, learning: Settings
) -> None:
    cycle, _ = _trained_candidate(user)
    candidate = cycle.candidate
    assert candidate is not None

    candidate_arm, active_arm = _ab_predictions(cycle)
    # Simulated reviewers: every answer of the candidate is wrong, every one of the active version right.
    for prediction in candidate_arm:
        other = next(label for label in TRUTH.values() if label != prediction.label)
        assert prediction.user is not None
        review_services.correction_set(prediction=prediction, user=prediction.user, label=other)
    for prediction in active_arm:
        assert prediction.user is not None
        review_services.prediction_confirm(prediction=prediction, user=prediction.user)
    cycle = _learning_cycle()

    assert cycle.state == LearningCycleState.RETIRED, cycle.events
    assert cycle.live["probability_better"] <= 0.05
    candidate.refresh_from_db()
    active_model.refresh_from_db()
    assert candidate.status == ModelVersionStatus.RETIRED
    assert candidate.traffic_percent == 0
    assert active_model.is_active
    # Everyone is back on the active version.
    other_user = UserFactory.create()
    assert _classified(other_user, _crops("coffee", 1, offset=70)[0], "after").model_version == active_model

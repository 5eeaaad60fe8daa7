"""The prediction task: a model missing during a deploy hands the batch back and the
task retries; and enqueueing reaches the task by name (services never import tasks)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from pytest_django import Settings

from ml.runner import Classifier
from predictions import services, tasks
from predictions.exceptions import ModelUnavailableError
from predictions.models import ModelVersion, Prediction, PredictionId, PredictionStatus
from predictions.registry import runtime
from tests.conftest import CAT_CLASSES, photo_bytes


def _photo(name: str) -> SimpleUploadedFile:
    return SimpleUploadedFile(f"{name}.jpg", photo_bytes(name), content_type="image/jpeg")


@pytest.fixture(autouse=True)
def _eager_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """``apply()`` runs a task as a worker would, and a retry at once (not after its
    countdown); errors are returned in the result instead of raised, as in a worker."""
    monkeypatch.setitem(tasks.prediction_run.app.conf, "task_eager_propagates", False)


def test_a_model_missing_during_a_deploy_claims_nothing_and_the_task_retries(
    user: User, active_model: ModelVersion, monkeypatch: pytest.MonkeyPatch, sent: list[PredictionId]
) -> None:
    lead, borrowed = (
        services.prediction_create(user=user, uploaded_file=_photo(name)) for name in ("chelsea", "coffee")
    )
    real_classifier_for = runtime.classifier_for
    states_seen_by_retry: list[set[str]] = []

    def classifier_for(*, model_version: ModelVersion) -> Classifier:
        if not states_seen_by_retry:  # the first attempt: the files are being copied
            states_seen_by_retry.append(set(Prediction.objects.values_list("status", flat=True)))
            raise ModelUnavailableError("No exported model at /models/efficientnet_lite0/2 (deploy in progress)")
        states_seen_by_retry.append(set(Prediction.objects.values_list("status", flat=True)))
        return real_classifier_for(model_version=model_version)

    monkeypatch.setattr(runtime, "classifier_for", classifier_for)

    result = tasks.prediction_run.apply(args=(str(lead.id),))

    assert result.successful(), result.traceback

    # The model is made ready before the claim: the first attempt changed no row and sent
    # no message; the retry claimed both and classified them in one batch.
    assert states_seen_by_retry == [{PredictionStatus.PENDING}, {PredictionStatus.PENDING}]
    assert sent == []
    lead.refresh_from_db()
    borrowed.refresh_from_db()
    assert lead.status == borrowed.status == PredictionStatus.SUCCEEDED
    assert lead.class_id in CAT_CLASSES
    assert lead.attempts == borrowed.attempts == 1


def test_enqueue_sends_the_registered_task_by_name(user: User, monkeypatch: pytest.MonkeyPatch) -> None:
    sent = []
    monkeypatch.setattr(tasks.prediction_run, "apply_async", lambda *args, **kwargs: sent.append((args, kwargs)))

    assert services.prediction_enqueue(prediction_id="abc") is True

    # Sent by name, it reached the registered task (whose apply_async is the spy).
    assert sent == [((("abc",), {}), {"retry": False})]


def test_a_deploy_longer_than_max_attempts_still_ends_in_a_result(
    user: User, active_model: ModelVersion, monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    """Hand-backs are not attempts: a model missing for more tries than MAX_ATTEMPTS does
    not end in "Gave up after 3 attempts" once the model is back."""
    prediction = services.prediction_create(user=user, uploaded_file=_photo("chelsea"))
    real_classifier_for = runtime.classifier_for
    missing_for = [settings.MAX_ATTEMPTS + 2]

    def classifier_for(*, model_version: ModelVersion) -> Classifier:
        if missing_for[0]:
            missing_for[0] -= 1
            raise ModelUnavailableError("No exported model at /models/efficientnet_lite0/2")
        return real_classifier_for(model_version=model_version)

    monkeypatch.setattr(runtime, "classifier_for", classifier_for)

    assert tasks.prediction_run.apply(args=(str(prediction.id),)).successful()

    prediction.refresh_from_db()
    assert prediction.status == PredictionStatus.SUCCEEDED
    assert prediction.class_id in CAT_CLASSES


def test_a_model_that_never_comes_back_fails_with_a_message_for_people(
    user: User, active_model: ModelVersion, monkeypatch: pytest.MonkeyPatch
) -> None:
    prediction = services.prediction_create(user=user, uploaded_file=_photo("chelsea"))

    def classifier_for(*, model_version: ModelVersion) -> Classifier:
        raise ModelUnavailableError("No exported model at /models/efficientnet_lite0/2")

    monkeypatch.setattr(runtime, "classifier_for", classifier_for)

    tasks.prediction_run.apply(args=(str(prediction.id),))

    prediction.refresh_from_db()
    assert prediction.status == PredictionStatus.FAILED
    assert prediction.error == services.MODEL_UNAVAILABLE_MESSAGE
    assert "/models" not in prediction.error


def test_a_batch_past_the_soft_time_limit_says_it_took_too_long(
    user: User, active_model: ModelVersion, monkeypatch: pytest.MonkeyPatch
) -> None:
    from celery.exceptions import SoftTimeLimitExceeded

    prediction = services.prediction_create(user=user, uploaded_file=_photo("chelsea"))

    def classify_forever(
        self: Classifier, sources: Sequence[bytes | str | Path], *, top_k: int = 5, max_decode_bytes: int | None = None
    ) -> NoReturn:
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(Classifier, "classify", classify_forever)

    tasks.prediction_run.apply(args=(str(prediction.id),))

    prediction.refresh_from_db()
    assert prediction.status == PredictionStatus.FAILED
    assert prediction.error == "Classification took too long and was stopped. Please try again."

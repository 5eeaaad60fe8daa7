"""The prediction task: a model missing during a deploy hands the batch back and the
task retries; enqueueing reaches the task by name (services never import tasks), one
message per chunk of a submission, whose rows a batch has no room for are sent on."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from pytest_django import DjangoCaptureOnCommitCallbacks, Settings

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
        self: Classifier,
        sources: Sequence[bytes | str | Path],
        *,
        top_k: int = 5,
        max_decode_bytes: int | None = None,
        thumbnail_size: int = 0,
    ) -> NoReturn:
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(Classifier, "classify", classify_forever)

    tasks.prediction_run.apply(args=(str(prediction.id),))

    prediction.refresh_from_db()
    assert prediction.status == PredictionStatus.FAILED
    assert prediction.error == "Classification took too long and was stopped. Please try again."


# --- One message per chunk of a submission ---------------------------------------------


def test_a_batch_of_images_is_sent_as_one_message_per_chunk_of_a_batch_size(
    user: User,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    settings.INFERENCE_BATCH_SIZE = 16
    messages: list[tuple[tuple[str, ...], dict[str, Any]]] = []
    monkeypatch.setattr(tasks.prediction_run, "apply_async", lambda args, kwargs, **_: messages.append((args, kwargs)))
    files = [_photo(name) for name in ("chelsea", "coffee") * 10]

    with django_capture_on_commit_callbacks(execute=True):
        outcomes = services.prediction_create_many(user=user, uploaded_files=files)

    ids = [str(o.prediction.id) for o in outcomes if o.prediction is not None]
    assert len(ids) == 20
    assert [len(kwargs.get("chunk", [])) + 1 for _, kwargs in messages] == [16, 4]
    assert [i for args, kwargs in messages for i in (*args, *kwargs["chunk"])] == ids  # every row, in order


def test_a_chunk_its_batch_has_no_room_for_is_sent_on_in_one_message(
    user: User, active_model: ModelVersion, settings: Settings, sent: list[PredictionId]
) -> None:
    settings.INFERENCE_BATCH_SIZE = 2
    first, second, third = (services.prediction_create(user=user, uploaded_file=_photo("chelsea")) for _ in range(3))
    sent.clear()

    tasks.prediction_run.apply(args=(str(first.id),), kwargs={"chunk": [str(second.id), str(third.id)]})

    assert [str(i) for i in sent] == [str(third.id)]  # the rest of the chunk, sent on once
    statuses = dict(Prediction.objects.values_list("id", "status"))
    assert statuses == {first.id: "succeeded", second.id: "succeeded", third.id: "pending"}
    tasks.prediction_run.apply(args=(str(third.id),))
    assert Prediction.objects.get(id=third.id).status == PredictionStatus.SUCCEEDED
    assert set(Prediction.objects.values_list("attempts", flat=True)) == {1}


def test_a_chunk_whose_task_fails_before_its_batch_gives_its_other_rows_their_own_tries(
    user: User, active_model: ModelVersion, monkeypatch: pytest.MonkeyPatch, sent: list[PredictionId]
) -> None:
    first, second = (services.prediction_create(user=user, uploaded_file=_photo("chelsea")) for _ in range(2))
    sent.clear()

    def classifier_for(*, model_version: ModelVersion) -> Classifier:
        raise ModelUnavailableError("No exported model at /models/efficientnet_lite0/2")

    monkeypatch.setattr(runtime, "classifier_for", classifier_for)

    tasks.prediction_run.apply(args=(str(first.id),), kwargs={"chunk": [str(second.id)]})

    assert Prediction.objects.get(id=first.id).status == PredictionStatus.FAILED
    assert Prediction.objects.get(id=second.id).status == PredictionStatus.PENDING
    assert [str(i) for i in sent] == [str(second.id)]

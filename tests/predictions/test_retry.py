"""Retrying a failed prediction: by its owner (page button, API) and by staff with the
permission (admin); anything not failed is left as it is."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from pytest_django import DjangoCaptureOnCommitCallbacks

from predictions import services
from predictions.exceptions import ConflictError
from predictions.models import ModelVersion, Prediction, PredictionId, PredictionStatus
from tests.conftest import CAT_CLASSES, api_as, photo_bytes
from tests.factories import PredictionFactory, UserFactory


@pytest.fixture
def failed(user: User) -> Prediction:
    now = timezone.now()
    return PredictionFactory.create(
        user=user, status=PredictionStatus.FAILED, error="The classifier was not available.", attempts=3,
        started_at=now, completed_at=now, total_ms=1200.0, queue_ms=5.0, claim="6f1c5a4e-0000-4000-8000-000000000000",
    )  # fmt: skip


def test_retry_resets_the_row_to_pending_and_sends_it_after_commit(
    failed: Prediction, sent: list[PredictionId], django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        retried = services.prediction_retry(prediction=failed)
        assert sent == []  # nothing is sent before the row is committed
    for callback in callbacks:
        callback()

    assert sent == [failed.id]
    row = Prediction.objects.get(id=failed.id)
    assert row.status == PredictionStatus.PENDING == retried.status
    assert (row.error, row.label, row.confidence, row.top_predictions) == ("", "", None, [])
    assert (row.started_at, row.completed_at, row.total_ms, row.queue_ms, row.claim) == (None, None, None, None, None)
    assert row.attempts == 0  # a fresh budget of MAX_ATTEMPTS claims
    assert row.retried_at is not None
    assert row.created_at == failed.created_at
    assert Path(row.image.path).exists()


@pytest.mark.parametrize("status", [PredictionStatus.PENDING, PredictionStatus.RUNNING, PredictionStatus.SUCCEEDED])
def test_only_a_failed_prediction_is_retried(user: User, sent: list[PredictionId], status: str) -> None:
    extra = {"confidence": 0.9, "completed_at": timezone.now(), "label": "tabby cat"} if status == "succeeded" else {}
    prediction = PredictionFactory.create(user=user, status=status, **extra)

    with pytest.raises(ConflictError, match=f"this one is {status}"):
        services.prediction_retry(prediction=prediction)

    row = Prediction.objects.get(id=prediction.id)
    assert row.status == status
    assert row.retried_at is None
    assert sent == []


def test_a_retried_prediction_that_failed_in_this_worker_is_classified(
    user: User, active_model: ModelVersion, django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks
) -> None:
    """The worker remembers what it finished (to skip duplicate messages) but not the
    failed ones: a retry's message is worked, here after the missing file was restored."""
    prediction = PredictionFactory.create(user=user)
    Path(prediction.image.path).unlink()
    services.prediction_process(prediction_id=prediction.id)
    prediction.refresh_from_db()
    assert prediction.status == PredictionStatus.FAILED

    Path(prediction.image.path).write_bytes(photo_bytes("chelsea"))
    an_hour_ago = timezone.now() - timedelta(hours=1)
    Prediction.objects.filter(id=prediction.id).update(created_at=an_hour_ago)  # uploaded long before the retry
    with django_capture_on_commit_callbacks(execute=False):
        services.prediction_retry(prediction=prediction)
    services.prediction_process(prediction_id=prediction.id)

    prediction.refresh_from_db()
    assert prediction.status == PredictionStatus.SUCCEEDED
    assert prediction.class_id in CAT_CLASSES
    assert prediction.model_version == active_model
    assert prediction.error == ""
    # Counted from the retry, not from the upload an hour before it.
    assert prediction.retried_at is not None
    assert prediction.completed_at is not None
    since_retry = prediction.completed_at - prediction.retried_at
    assert prediction.total_ms == pytest.approx(since_retry / timedelta(milliseconds=1))


def test_api_retry_is_202_with_the_prediction(
    user: User,
    failed: Prediction,
    sent: list[PredictionId],
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = api_as(user).post(f"/api/v1/predictions/{failed.id}/retry/")

    assert response.status_code == 202, response.content
    body = response.json()
    assert body["id"] == str(failed.id)
    assert body["status"] == "pending"
    assert body["error"] == ""
    assert response["Location"] == body["url"]
    assert sent == [failed.id]


def test_api_retry_of_a_prediction_not_failed_is_409_and_changes_nothing(
    user: User, failed: Prediction, sent: list[PredictionId]
) -> None:
    api = api_as(user)
    api.post(f"/api/v1/predictions/{failed.id}/retry/")

    again = api.post(f"/api/v1/predictions/{failed.id}/retry/")

    assert again.status_code == 409
    assert again.json()["error"]["code"] == "conflict"
    assert "this one is pending" in again.json()["error"]["message"]


def test_api_retry_of_another_users_prediction_is_404(failed: Prediction, sent: list[PredictionId]) -> None:
    response = api_as(UserFactory.create()).post(f"/api/v1/predictions/{failed.id}/retry/")

    assert response.status_code == 404
    assert set(response.json()["error"]) == {"code", "message", "field"}
    assert Prediction.objects.get(id=failed.id).status == PredictionStatus.FAILED


def test_the_failed_card_has_a_retry_button_that_sends_it_again(
    user_client: Client, failed: Prediction, sent: list[PredictionId]
) -> None:
    page = user_client.get(reverse("predictions:detail", args=[failed.id]))
    retry_url = reverse("predictions:retry", args=[failed.id])
    assert retry_url.encode() in page.content
    assert b"Try again" in page.content

    response = user_client.post(retry_url, follow=True)

    assert response.redirect_chain[-1][0] == reverse("predictions:detail", args=[failed.id])
    assert Prediction.objects.get(id=failed.id).status == PredictionStatus.PENDING
    assert b"Try again" not in response.content  # pending now: no button
    assert user_client.get(retry_url).status_code == 405


def test_a_succeeded_card_has_no_retry_button(user_client: Client, user: User) -> None:
    done = PredictionFactory.create(
        user=user, status="succeeded", confidence=0.9, completed_at=timezone.now(), label="cat"
    )

    assert b"Try again" not in user_client.get(reverse("predictions:detail", args=[done.id])).content


def test_admin_retry_action_needs_the_change_prediction_permission(
    client: Client, failed: Prediction, sent: list[PredictionId]
) -> None:
    staff = UserFactory.create(is_staff=True)
    staff.user_permissions.add(
        Permission.objects.get(codename="view_prediction", content_type__app_label="predictions")
    )
    client.force_login(staff)
    changelist = reverse("admin:predictions_prediction_changelist")
    assert b'value="retry"' not in client.get(changelist).content

    staff.user_permissions.add(
        Permission.objects.get(codename="change_prediction", content_type__app_label="predictions")
    )
    other = PredictionFactory.create(user=failed.user, status="succeeded", confidence=0.5, completed_at=timezone.now())
    response = client.post(changelist, {"action": "retry", "_selected_action": [failed.pk, other.pk]}, follow=True)

    assert b"1 prediction(s) sent again; 1 skipped" in response.content
    assert Prediction.objects.get(id=failed.id).status == PredictionStatus.PENDING
    assert Prediction.objects.get(id=other.id).status == PredictionStatus.SUCCEEDED

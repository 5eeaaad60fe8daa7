"""One access policy, from Django permissions: ``is_staff`` alone shows nobody's photos."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from predictions.models import ModelVersion, Prediction
from tests.factories import OperatorFactory, PredictionFactory, UserFactory


@pytest.fixture
def bare_staff(db: None) -> User:
    """A staff account with no permissions: may enter the admin site, nothing more."""
    return UserFactory.create(is_staff=True)


@pytest.fixture
def reviewer(db: None) -> User:
    """A staff account granted ``predictions.view_prediction`` (not a superuser)."""
    return OperatorFactory.create()


@pytest.fixture
def someone_elses(db: None) -> Prediction:
    return PredictionFactory.create(
        user=UserFactory.create(), label="tabby cat", status="succeeded", confidence=0.9, completed_at=timezone.now()
    )


def test_staff_without_permission_sees_no_other_users_photos_log_stats_or_metrics(
    client: Client, bare_staff: User, someone_elses: Prediction
) -> None:
    client.force_login(bare_staff)

    assert client.get(reverse("admin:predictions_prediction_changelist")).status_code == 403
    assert client.get(reverse("admin-prediction-image", args=[someone_elses.id])).status_code == 403
    assert client.get(reverse("predictions:image", args=[someone_elses.id])).status_code == 404
    assert client.get(reverse("metrics")).status_code == 403
    api = APIClient()
    api.force_authenticate(bare_staff)
    report = api.get(reverse("api:stats")).json()
    assert report["all_users"] is False
    assert report["total"] == 0
    assert b"All users" not in client.get(reverse("stats")).content


def test_the_view_prediction_permission_opens_the_log_images_stats_and_metrics(
    client: Client, reviewer: User, someone_elses: Prediction
) -> None:
    client.force_login(reviewer)

    listing = client.get(reverse("admin:predictions_prediction_changelist"))
    assert listing.status_code == 200
    assert b"tabby cat" in listing.content
    assert client.get(reverse("admin-prediction-image", args=[someone_elses.id])).status_code == 200
    assert client.get(reverse("metrics")).status_code == 200
    api = APIClient()
    api.force_authenticate(reviewer)
    report = api.get(reverse("api:stats")).json()
    assert report["all_users"] is True
    assert report["total"] == 1
    # Reading is not deleting: the log offers no delete without delete_prediction.
    assert b"delete_selected" not in listing.content


def test_activating_a_model_needs_the_change_permission(
    client: Client, bare_staff: User, reviewer: User, active_model: ModelVersion
) -> None:
    viewer_of_models = UserFactory.create(is_staff=True)
    viewer_of_models.user_permissions.add(
        Permission.objects.get(codename="view_modelversion", content_type__app_label="predictions")
    )
    client.force_login(viewer_of_models)
    listing = client.get(reverse("admin:predictions_modelversion_changelist"))

    assert listing.status_code == 200
    assert b'value="activate"' not in listing.content

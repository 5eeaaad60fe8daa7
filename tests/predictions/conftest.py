"""Fixtures shared by the predictions tests: a copy of the shipped model under another
version, an account allowed to switch versions, API clients (the user's token, or any
user), and the messages the services send to the workers."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from predictions.models import ModelVersion, Prediction, PredictionId
from predictions.services import submissions
from tests.factories import CorrectionFactory, SucceededPredictionFactory, UserFactory


def _copy_model(source: Path, root: Path, version: str, **metadata_changes: object) -> Path:
    """The shipped model exported again as ``<name>/<version>`` under ``root`` (the
    SavedModel and its cards only: the engine the tests use)."""
    metadata = json.loads((source / "metadata.json").read_text())
    target = Path(root, metadata["name"], version)
    target.mkdir(parents=True)
    shutil.copytree(source / "saved_model", target / "saved_model")
    shutil.copy(source / "labels.json", target / "labels.json")
    metadata.update(version=version, **metadata_changes)
    (target / "metadata.json").write_text(json.dumps(metadata))
    return target


@pytest.fixture
def switcher(db: None) -> User:
    """A staff account allowed to switch model versions, nothing else."""
    account = UserFactory.create(is_staff=True)
    account.user_permissions.add(
        Permission.objects.get(codename="change_modelversion", content_type__app_label="predictions"),
        Permission.objects.get(codename="view_modelversion", content_type__app_label="predictions"),
    )
    return account


@pytest.fixture
def api(user: User) -> APIClient:
    """An API client with ``user``'s token, as a script would call the API."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


@pytest.fixture
def api_for() -> Callable[[User], APIClient]:
    def client(user: User) -> APIClient:
        api = APIClient()
        api.force_authenticate(user)
        return api

    return client


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[PredictionId]:
    """The prediction ids the services send to the workers, recorded instead of sent."""
    messages: list[PredictionId] = []

    def enqueue(*, prediction_id: PredictionId, chunk: Sequence[PredictionId] = ()) -> bool:
        messages.extend([prediction_id, *chunk])
        return True

    monkeypatch.setattr(submissions, "prediction_enqueue", enqueue)
    return messages


@pytest.fixture
def measured(active_model: ModelVersion) -> None:
    """Four reviewed predictions of the active version: three confirmed, one corrected;
    40 ms from upload to result, 20 ms of it in the model (the figures the registry's
    confirmation pages and the Models page show)."""
    owner = UserFactory.create()
    for index in range(4):
        prediction: Prediction = SucceededPredictionFactory.create(
            user=owner, model_version=active_model, total_ms=40.0, inference_ms=20.0
        )
        if index < 3:
            CorrectionFactory.create(
                prediction=prediction, confirmed=True, label=prediction.label, class_id="n02123159"
            )
        else:
            CorrectionFactory.create(prediction=prediction, label="tabby cat", class_id="n02123045")

"""Fixtures shared by the predictions tests: a copy of the shipped model under another
version, an account allowed to switch versions, API clients (the user's token, or any
user), and the messages the services send to the workers."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgiref.sync import async_to_sync
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


class AsgiApi:
    """An API client that calls ``imagerec.asgi.application`` as the server does: the
    body limit, the fast path (``predictions.api.fastpath``) and Django behind it. The
    request runs in the test's thread (``async_to_sync``), so it sees the test's rows;
    as Django's own test clients do, the request signals do not close that connection."""

    def __init__(self, token: str | None) -> None:
        self.headers = {} if token is None else {"Authorization": f"Token {token}"}

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        from django.core.signals import request_finished, request_started
        from django.db import close_old_connections

        from imagerec.asgi import application

        kwargs["headers"] = {**self.headers, **kwargs.get("headers", {})}

        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=application)  # type: ignore[arg-type]  # Mapping vs MutableMapping
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                return await client.request(method, url, **kwargs)

        request_started.disconnect(close_old_connections)
        request_finished.disconnect(close_old_connections)
        try:
            return async_to_sync(call)()
        finally:
            request_started.connect(close_old_connections)
            request_finished.connect(close_old_connections)

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)


@pytest.fixture(params=["fast path", "django"])
def front_door(request: pytest.FixtureRequest, settings: Any) -> str:
    """Each test using it runs twice: with the API's fast path on, and with it off."""
    settings.API_FAST_PATH = request.param == "fast path"
    return str(request.param)


@pytest.fixture
def asgi_api(user: User, front_door: str) -> AsgiApi:
    """``user``'s token client through the real ASGI application, fast path on and off."""
    return AsgiApi(Token.objects.create(user=user).key)

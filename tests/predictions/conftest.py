"""Fixtures shared by the predictions tests: a copy of the shipped model under another
version, an account allowed to switch versions, and API clients for any user."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from rest_framework.test import APIClient

from tests.factories import UserFactory


def _copy_model(source: Path, root: Path, version: str, **metadata_changes: object) -> Path:
    """The shipped model exported again as ``<name>/<version>`` under ``root`` (the
    SavedModel and its cards only: the engine the tests use)."""
    metadata = json.loads((source / "metadata.json").read_text())
    target = root / metadata["name"] / version
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
def api_for() -> Callable[[User], APIClient]:
    def client(user: User) -> APIClient:
        api = APIClient()
        api.force_authenticate(user)
        return api

    return client

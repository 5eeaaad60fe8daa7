"""The model versions a submission chooses from are kept in the web process, and a
switch is seen by the next submission: made here (at once), made by another process
(announced on Redis, or within ANNOUNCED_CACHE_SECONDS without Redis)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import redis
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from pytest_django import DjangoAssertNumQueries, DjangoCaptureOnCommitCallbacks, Settings

from predictions import events, services
from predictions.announced import AnnouncedValue
from predictions.models import ModelVersion, ModelVersionStatus, Prediction
from predictions.registry import selectors as registry_selectors
from predictions.registry import services as registry_services
from tests.factories import jpeg_bytes
from tests.predictions.conftest import _copy_model

LOCAL_REDIS = os.environ.get("TEST_EVENTS_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def second(active_model: ModelVersion, tmp_path: Path, model_dir: Path) -> ModelVersion:
    """The shipped model registered again as version 2 (available, not active)."""
    folder = _copy_model(model_dir, tmp_path / "models", "2", parent={"name": "efficientnet_lite0", "version": "1"})
    return registry_services.model_version_register(model_dir=folder)


def _submit(user: User) -> Prediction:
    upload = SimpleUploadedFile("photo.jpg", jpeg_bytes(), content_type="image/jpeg")
    return services.prediction_create(user=user, uploaded_file=upload)


def _switched_elsewhere(to: ModelVersion) -> None:
    """What another process's activation leaves in the database, without this process's
    signals (a bulk update)."""
    ModelVersion.objects.filter(is_active=True).update(is_active=False, status=ModelVersionStatus.AVAILABLE)
    ModelVersion.objects.filter(pk=to.pk).update(is_active=True, status=ModelVersionStatus.ACTIVE)


def test_the_versions_are_read_once_not_on_every_submission(
    user: User, active_model: ModelVersion, django_assert_num_queries: DjangoAssertNumQueries, settings: Settings
) -> None:
    settings.EVENTS_REDIS_URL = ""  # kept for ANNOUNCED_CACHE_SECONDS; with Redis, see the test below
    assert registry_selectors.model_version_for_user(user=user) == active_model
    with django_assert_num_queries(0):
        assert registry_selectors.model_version_for_user(user=user) == active_model


def test_an_activation_here_is_seen_by_the_next_submission(
    user: User,
    active_model: ModelVersion,
    second: ModelVersion,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    assert _submit(user).assigned_version == active_model
    with django_capture_on_commit_callbacks(execute=True):
        registry_services.model_version_activate(model_version=second)
    assert _submit(user).assigned_version == second
    with django_capture_on_commit_callbacks(execute=True):
        registry_services.model_version_rollback()
    assert _submit(user).assigned_version == active_model


def test_retiring_the_candidate_ends_its_share_at_once(
    user: User, active_model: ModelVersion, tmp_path: Path, model_dir: Path
) -> None:
    folder = _copy_model(model_dir, tmp_path / "models", "3", parent={"name": "efficientnet_lite0", "version": "1"})
    candidate = registry_services.model_version_register(model_dir=folder, candidate=True)
    registry_services.model_version_set_traffic(model_version=candidate, traffic_percent=100)
    assert _submit(user).assigned_version == candidate
    registry_services.model_version_retire(model_version=candidate)  # a bulk update, no save signal
    assert _submit(user).assigned_version == active_model


def test_without_redis_another_processs_switch_is_seen_within_announced_cache_seconds(
    user: User, active_model: ModelVersion, second: ModelVersion, settings: Settings
) -> None:
    settings.EVENTS_REDIS_URL = ""
    settings.ANNOUNCED_CACHE_SECONDS = 3600
    assert _submit(user).assigned_version == active_model
    _switched_elsewhere(second)
    assert _submit(user).assigned_version == active_model  # kept: nobody told this process
    settings.ANNOUNCED_CACHE_SECONDS = 0  # the time is up
    assert _submit(user).assigned_version == second


def test_another_processs_switch_is_heard_over_redis(
    user: User, active_model: ModelVersion, second: ModelVersion, settings: Settings
) -> None:
    try:
        redis.Redis.from_url(LOCAL_REDIS, socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip(f"needs Redis at {LOCAL_REDIS} (the CI machine runs one)")
    settings.EVENTS_REDIS_URL = LOCAL_REDIS
    settings.ANNOUNCED_CACHE_SECONDS = 3600  # without the announcement it would be kept
    events.change_stamp("registry")  # starts the listener
    listener = events._listener()
    assert listener is not None
    assert listener.subscribed.wait(10)
    assert _submit(user).assigned_version == active_model

    before = events.change_stamp("registry")
    _switched_elsewhere(second)
    events.change_publish("registry")  # what the other process does once it committed
    for _ in range(200):  # the listener thread hears it (not a timing assertion: a wait for it)
        if events.change_stamp("registry") != before:
            break
        time.sleep(0.05)
    assert _submit(user).assigned_version == second


def test_a_read_that_a_change_overtook_is_not_kept() -> None:
    reads: list[int] = []
    kept: AnnouncedValue[int] = AnnouncedValue(topic="test", load=lambda: len(reads))

    def load() -> int:
        reads.append(1)
        if len(reads) == 1:
            kept.forget()  # a switch commits while the first read is under way
        return len(reads)

    kept._load = load
    assert kept.get() == 1  # that request used what it read...
    assert kept.get() == 2  # ...but the next one reads again
    assert kept.get() == 2  # and keeps that

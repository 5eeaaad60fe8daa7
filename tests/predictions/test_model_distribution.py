"""Models distributed through the bucket (MODEL_DISTRIBUTION) on a real SeaweedFS: the
registry publishes a version's files with checksums, a host without them fetches, verifies
and serves the version, and files that do not match are refused, never served."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from pytest_django import Settings

from ml.manifest import MANIFEST_FILE
from predictions import services
from predictions.exceptions import ModelIntegrityError, ModelUnavailableError
from predictions.models import ModelVersion, Prediction, PredictionId, PredictionStatus
from predictions.operations import services as operations_services
from predictions.registry import distribution
from predictions.registry import services as registry_services
from predictions.tasks import prediction_run
from tests.conftest import BASE_DIR, CAT_CLASSES, _database_url, api_as, photo_bytes
from tests.seaweedfs import S3Server

pytestmark = pytest.mark.storage

LIST_URL = "/api/v1/predictions/"


@pytest.fixture
def distributed(settings: Settings, s3_media: S3Server, tmp_path: Path) -> Path:
    """Models distributed through the bucket; this host's model cache starts empty."""
    settings.MODEL_DISTRIBUTION = True
    settings.MODEL_CACHE_DIR = tmp_path / "model-cache"
    return Path(settings.MODEL_CACHE_DIR)


@pytest.fixture
def published(db: None, distributed: Path, model_dir: Path, tmp_path: Path) -> ModelVersion:
    """The shipped model registered from a copy with `register_model`, the copy deleted,
    then activated: no folder of the version is left on this host, nor needed."""
    copy = tmp_path / "export" / model_dir.parent.name / model_dir.name
    shutil.copytree(model_dir, copy)
    call_command("register_model", str(copy), "--no-load")
    shutil.rmtree(tmp_path / "export")
    model_version = ModelVersion.objects.get(path=str(copy))
    assert not Path(model_version.path).exists()
    return registry_services.model_version_activate(model_version=model_version)


def test_register_model_publishes_every_file_with_its_checksum(
    published: ModelVersion, s3_media: S3Server, model_dir: Path
) -> None:
    client = s3_media.client()
    prefix = f"models/{published.name}/{published.version}/"
    manifest = json.loads(client.get_object(Bucket=s3_media.bucket, Key=prefix + MANIFEST_FILE)["Body"].read())

    local = {p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == local
    assert {"saved_model/saved_model.pb", "model.keras", "metadata.json", "labels.json"} <= local
    assert all(len(entry["sha256"]) == 64 for entry in manifest["files"].values())
    assert distribution.published_sha256(published)


def test_a_host_without_the_files_fetches_the_version_and_classifies_a_real_photo(
    published: ModelVersion, distributed: Path, user: User, sent: list[PredictionId]
) -> None:
    response = api_as(user).post(
        LIST_URL, {"image": SimpleUploadedFile("cat.jpg", photo_bytes("chelsea"))}, format="multipart"
    )

    services.prediction_process(prediction_id=response.json()["id"])

    prediction = Prediction.objects.get(id=response.json()["id"])
    assert prediction.status == PredictionStatus.SUCCEEDED
    assert prediction.class_id in CAT_CLASSES
    assert prediction.model_version == published
    fetched = distribution.cache_path(published)
    assert fetched.parent.parent == distributed
    assert (fetched / "saved_model" / "saved_model.pb").exists()
    assert (fetched / distribution.VERIFIED_MARK).exists()


def test_a_tampered_file_is_refused_and_the_prediction_fails_with_a_message(
    published: ModelVersion, distributed: Path, s3_media: S3Server, user: User, sent: list[PredictionId]
) -> None:
    client = s3_media.client()
    key = f"models/{published.name}/{published.version}/labels.json"
    labels = json.loads(client.get_object(Bucket=s3_media.bucket, Key=key)["Body"].read())
    labels[0], labels[1] = labels[1], labels[0]  # swapped class names: wrong answers if served
    client.put_object(Bucket=s3_media.bucket, Key=key, Body=json.dumps(labels).encode())
    try:
        response = api_as(user).post(
            LIST_URL, {"image": SimpleUploadedFile("cat.jpg", photo_bytes("chelsea"))}, format="multipart"
        )
        prediction_id = response.json()["id"]

        with pytest.raises(ModelIntegrityError, match=r"labels\.json"):
            services.prediction_process(prediction_id=prediction_id)

        assert Prediction.objects.get(id=prediction_id).status == PredictionStatus.PENDING  # not classified
        assert not list(distributed.rglob(distribution.VERIFIED_MARK))  # nothing half-fetched kept
        # Retries exhausted: the task's failure hook fails it with a message for people.
        prediction_run.on_failure(ModelIntegrityError("refused"), "task", [prediction_id], {}, None)
        failed = Prediction.objects.get(id=prediction_id)
        assert failed.status == PredictionStatus.FAILED
        assert "checksums" in failed.error
        assert failed.label == ""
    finally:  # the next publish uploads every file again
        client.delete_object(Bucket=s3_media.bucket, Key=f"models/{published.name}/{published.version}/{MANIFEST_FILE}")


def test_a_version_never_published_cannot_be_activated(
    published: ModelVersion, distributed: Path, tmp_path: Path
) -> None:
    unpublished = ModelVersion.objects.create(name="efficientnet_lite0", version="99", path=str(tmp_path / "nowhere"))

    with pytest.raises(ModelUnavailableError, match="cannot be activated"):
        registry_services.model_version_activate(model_version=unpublished)
    assert ModelVersion.objects.get(is_active=True) == published


def test_the_cache_evicts_the_least_recently_used_version_not_in_use(settings: Settings, tmp_path: Path) -> None:
    settings.MODEL_CACHE_DIR = tmp_path / "cache"
    settings.MODEL_CACHE_MAX_VERSIONS = 2
    folders = []
    for age, version in enumerate(["3", "2", "1"]):  # "3" used longest ago
        folder = tmp_path / "cache" / "m" / f"{version}-abc"
        folder.mkdir(parents=True)
        mark = folder / distribution.VERIFIED_MARK
        mark.touch()
        stamp = time.time() - 100 + age
        os.utime(mark, (stamp, stamp))
        folders.append(folder)

    removed = distribution.cache_evict(keep=[folders[0]])  # the oldest is still in use

    assert removed == [folders[1]]
    assert folders[0].exists()
    assert folders[2].exists()


def test_a_web_host_without_model_files_is_ready_once_the_active_version_is_published(
    published: ModelVersion, client: Client, settings: Settings
) -> None:
    settings.METRICS_TOKEN = "probe-token"
    operations_services.worker_heartbeat_record(
        hostname="celery@other-host", started_at=timezone.now(), queues=["inference"], model_loaded=True,
        model_version=published.key, model_load_seconds=1.0,
    )  # fmt: skip

    response = client.get("/health/ready", HTTP_AUTHORIZATION="Bearer probe-token")

    assert response.status_code == 200, response.json()
    assert response.json()["checks"]["model"]["model"] == published.key
    assert not Path(published.path).exists()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_another_process_with_no_model_files_and_an_empty_cache_classifies_from_the_bucket(
    published: ModelVersion, s3_media: S3Server, user: User, tmp_path: Path, sent: list[PredictionId]
) -> None:
    """A second "host": its own process, an empty MODEL_DIR and model cache, only the
    database and the bucket in common; it runs the worker's service for the upload."""
    response = api_as(user).post(
        LIST_URL, {"image": SimpleUploadedFile("cat.jpg", photo_bytes("chelsea"))}, format="multipart"
    )
    prediction_id = response.json()["id"]
    host = tmp_path / "host2"
    (host / "models").mkdir(parents=True)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        **s3_media.env(),
        "DATABASE_URL": _database_url(),
        "VAR_DIR": str(host / "var"),
        "MODEL_DIR": str(host / "models"),
        "MODEL_DISTRIBUTION": "true",
    }
    code = f"from predictions import services; services.prediction_process(prediction_id={prediction_id!r})"

    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code], cwd=BASE_DIR, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr[-3000:]
    prediction = Prediction.objects.get(id=prediction_id)
    assert prediction.status == PredictionStatus.SUCCEEDED
    assert prediction.class_id in CAT_CLASSES
    assert list((host / "var" / "model-cache").rglob("saved_model.pb"))  # fetched there, nowhere else
    assert not list((host / "models").iterdir())

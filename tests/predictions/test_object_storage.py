"""Media in object storage (MEDIA_STORAGE=s3) against a real SeaweedFS server: uploads,
thumbnails and results through the bucket, access only through the app, deletion that
removes the objects, and an outage that is a 503 on upload and a retry in the worker."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from django.contrib.auth.models import User
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from pytest_django import DjangoCaptureOnCommitCallbacks, Settings

from predictions import services
from predictions.exceptions import StorageUnavailableError
from predictions.models import ModelVersion, Prediction, PredictionId, PredictionStatus
from tests.conftest import CAT_CLASSES, api_as, photo_bytes
from tests.seaweedfs import S3Server, free_port_run

pytestmark = pytest.mark.storage

LIST_URL = "/api/v1/predictions/"


def _bucket_keys(server: S3Server) -> set[str]:
    """Every object in the bucket, read with boto3 directly (not through the app)."""
    client = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name="us-east-1",
    )
    keys: set[str] = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=server.bucket):
        keys |= {entry["Key"] for entry in page.get("Contents", [])}
    return keys


def _files(media_dir: Path) -> set[Path]:
    return {path for path in media_dir.rglob("*") if path.is_file()}


@pytest.fixture
def store_down(settings: Settings, s3_media: S3Server) -> S3Server:
    """The same bucket settings, but the endpoint is a port nothing listens on."""
    dead = S3Server(
        endpoint=f"http://127.0.0.1:{free_port_run(1)}",
        bucket=s3_media.bucket,
        access_key=s3_media.access_key,
        secret_key=s3_media.secret_key,
    )
    return dead


def test_upload_goes_to_the_bucket_and_back_only_through_the_app(
    s3_media: S3Server, user: User, other_user: User, active_model: ModelVersion, media_dir: Path, sent: object
) -> None:
    content = photo_bytes("chelsea")
    before = _files(media_dir)

    response = api_as(user).post(LIST_URL, {"image": SimpleUploadedFile("cat.jpg", content)}, format="multipart")

    assert response.status_code == 202, response.content
    prediction = Prediction.objects.get(id=response.json()["id"])
    assert prediction.image.name in _bucket_keys(s3_media)
    assert _files(media_dir) == before  # nothing on the web host's disk
    owner = api_as(user).get(response.json()["image"]["url"])
    assert owner.status_code == 200
    assert b"".join(owner.streaming_content) == content  # type: ignore[attr-defined]
    assert api_as(other_user).get(response.json()["image"]["url"]).status_code == 404


def test_worker_classifies_from_the_bucket_and_stores_the_thumbnail_there(
    s3_media: S3Server, user: User, active_model: ModelVersion, sent: list[PredictionId]
) -> None:
    response = api_as(user).post(
        LIST_URL, {"image": SimpleUploadedFile("cat.jpg", photo_bytes("chelsea"))}, format="multipart"
    )
    prediction_id = response.json()["id"]

    services.prediction_process(prediction_id=prediction_id)

    prediction = Prediction.objects.get(id=prediction_id)
    assert prediction.status == PredictionStatus.SUCCEEDED
    assert prediction.class_id in CAT_CLASSES
    assert prediction.thumbnail.name in _bucket_keys(s3_media)
    thumbnail = api_as(user).get(response.json()["image"]["thumbnail_url"])
    assert thumbnail.status_code == 200
    assert thumbnail["Content-Type"] == "image/jpeg"


def test_deleting_a_prediction_deletes_its_objects(
    s3_media: S3Server,
    user: User,
    active_model: ModelVersion,
    sent: list[PredictionId],
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    response = api_as(user).post(
        LIST_URL, {"image": SimpleUploadedFile("cat.jpg", photo_bytes("chelsea"))}, format="multipart"
    )
    services.prediction_process(prediction_id=response.json()["id"])
    prediction = Prediction.objects.get(id=response.json()["id"])
    names = {prediction.image.name, prediction.thumbnail.name}
    assert names <= _bucket_keys(s3_media)

    with django_capture_on_commit_callbacks(execute=True):
        assert api_as(user).delete(f"{LIST_URL}{prediction.id}/").status_code == 204

    assert not names & _bucket_keys(s3_media)
    assert not Prediction.objects.filter(id=prediction.id).exists()


def test_upload_during_an_outage_is_a_503_with_retry_after_and_writes_nothing(
    settings: Settings, store_down: S3Server, user: User, active_model: ModelVersion, sent: list[PredictionId]
) -> None:
    settings.STORAGES = {**settings.STORAGES, "default": store_down.backend()}

    response = api_as(user).post(
        LIST_URL, {"image": SimpleUploadedFile("cat.jpg", photo_bytes("chelsea"))}, format="multipart"
    )

    assert response.status_code == 503
    assert response["Retry-After"] == "10"
    assert response.json()["error"]["code"] == "storage_unavailable"
    assert not Prediction.objects.exists()


def test_page_upload_during_an_outage_is_a_503_with_retry_after(
    settings: Settings, store_down: S3Server, user: User, client: object, active_model: ModelVersion
) -> None:
    from django.test import Client

    assert isinstance(client, Client)
    client.force_login(user)
    settings.STORAGES = {**settings.STORAGES, "default": store_down.backend()}

    response = client.post("/", {"images": SimpleUploadedFile("cat.jpg", photo_bytes("chelsea")), "top_k": 5})

    assert response.status_code == 503
    assert response["Retry-After"] == "10"
    assert b"storage is unavailable" in response.content
    assert not Prediction.objects.exists()


def test_an_outage_in_the_worker_hands_the_batch_back_and_it_succeeds_once_the_store_is_back(
    settings: Settings, s3_media: S3Server, store_down: S3Server, user: User, active_model: ModelVersion,
    sent: list[PredictionId],
) -> None:  # fmt: skip
    response = api_as(user).post(
        LIST_URL, {"image": SimpleUploadedFile("cat.jpg", photo_bytes("chelsea"))}, format="multipart"
    )
    prediction_id = response.json()["id"]
    settings.STORAGES = {**settings.STORAGES, "default": store_down.backend()}

    with pytest.raises(StorageUnavailableError):
        services.prediction_process(prediction_id=prediction_id)

    waiting = Prediction.objects.get(id=prediction_id)
    assert (waiting.status, waiting.attempts, waiting.error) == (PredictionStatus.PENDING, 0, "")
    settings.STORAGES = {**settings.STORAGES, "default": s3_media.backend()}
    services.prediction_process(prediction_id=prediction_id)
    done = Prediction.objects.get(id=prediction_id)
    assert done.status == PredictionStatus.SUCCEEDED
    assert done.class_id in CAT_CLASSES


def test_reading_an_image_during_an_outage_is_a_503(
    settings: Settings, s3_media: S3Server, store_down: S3Server, user: User, active_model: ModelVersion,
    sent: list[PredictionId],
) -> None:  # fmt: skip
    response = api_as(user).post(
        LIST_URL, {"image": SimpleUploadedFile("cat.jpg", photo_bytes("chelsea"))}, format="multipart"
    )
    settings.STORAGES = {**settings.STORAGES, "default": store_down.backend()}

    answer = api_as(user).get(response.json()["image"]["url"])

    assert answer.status_code == 503
    assert answer["Retry-After"] == "10"


def test_media_storage_setting_picks_the_backend(settings: Settings, s3_media: S3Server) -> None:
    name = default_storage.save("probe/hello.txt", SimpleUploadedFile("hello.txt", b"hello"))
    assert name in _bucket_keys(s3_media)
    default_storage.delete(name)
    assert name not in _bucket_keys(s3_media)

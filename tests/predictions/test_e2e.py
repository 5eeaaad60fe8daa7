"""End to end through a real Celery worker process, on the configured database and broker."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from predictions import services
from predictions.models import ModelVersion, Prediction, PredictionStatus
from tests.conftest import CAT_CLASSES, PHOTOS, photo_bytes, wait_for_final

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_upload_in_the_browser_flow_is_classified_by_the_worker(
    celery_worker: subprocess.Popen[bytes], active_model: ModelVersion, client: Client, user: User
) -> None:
    client.force_login(user)
    photo = SimpleUploadedFile("chelsea.jpg", photo_bytes("chelsea"), content_type="image/jpeg")

    response = client.post(reverse("predictions:upload"), {"images": [photo], "top_k": 5})
    prediction = Prediction.objects.get(user=user)
    assert response["Location"] == reverse("predictions:detail", args=[prediction.id])

    prediction = wait_for_final(prediction.id)
    assert prediction.status == PredictionStatus.SUCCEEDED, prediction.error
    assert prediction.class_id in CAT_CLASSES
    assert prediction.model_version is not None
    assert prediction.model_version.name == "efficientnet_lite0"
    for timing in (
        prediction.queue_ms,
        prediction.preprocess_ms,
        prediction.inference_ms,
        prediction.total_ms,
    ):
        assert timing is not None
        assert timing >= 0
    assert prediction.inference_ms is not None
    assert prediction.inference_ms > 0
    assert prediction.started_at
    assert prediction.completed_at

    card = client.get(reverse("predictions:card", args=[prediction.id])).content.decode()
    assert prediction.label in card
    page = client.get(reverse("predictions:detail", args=[prediction.id])).content.decode()
    assert page.count('class="bar-row"') == 5  # the top-5 chart, on the photo's page
    history = client.get(reverse("predictions:history")).content.decode()
    assert "chelsea.jpg" in history
    assert prediction.label in history


def test_api_submit_and_long_poll_gives_the_right_label(
    celery_worker: subprocess.Popen[bytes], active_model: ModelVersion, user: User
) -> None:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    photos = {name: photo_bytes(name) for name in ("coffee", "rocket")}

    submitted = api.post(
        "/api/v1/predictions/",
        {"image": [SimpleUploadedFile(f"{n}.jpg", c) for n, c in photos.items()]},
        format="multipart",
    )
    assert submitted.status_code == 202
    for entry, name in zip(submitted.json(), photos, strict=True):
        body = api.get(f"/api/v1/predictions/{entry['id']}/", {"wait": 30}).json()
        if body["status"] not in ("succeeded", "failed"):
            body = api.get(f"/api/v1/predictions/{entry['id']}/", {"wait": 30}).json()
        assert body["status"] == "succeeded", body
        assert {p["class_id"] for p in body["predictions"][:3]} & set(PHOTOS[name].expected), body["predictions"]
        assert body["timings_ms"]["inference"] > 0


def test_worker_marks_an_unreadable_stored_file_failed_and_keeps_serving(
    celery_worker: subprocess.Popen[bytes], active_model: ModelVersion, user: User
) -> None:

    broken = services.prediction_create(user=user, uploaded_file=SimpleUploadedFile("cat.jpg", photo_bytes("chelsea")))
    # Damage the stored file after validation: the model step must fail cleanly.
    with open(broken.image.path, "wb") as stored:
        stored.write(b"garbage")
    good = services.prediction_create(user=user, uploaded_file=SimpleUploadedFile("cup.jpg", photo_bytes("coffee")))

    broken = wait_for_final(broken.id)
    good = wait_for_final(good.id)
    assert broken.status == PredictionStatus.FAILED
    assert broken.error.startswith("The image is damaged")
    assert good.status == PredictionStatus.SUCCEEDED


def test_submit_with_wait_answers_with_the_label_in_one_request(
    celery_worker: subprocess.Popen[bytes], active_model: ModelVersion, user: User
) -> None:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")

    response = api.post(
        "/api/v1/predictions/?wait=30", {"image": SimpleUploadedFile("cat.jpg", photo_bytes("chelsea"))}
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "succeeded"
    assert body["class_id"] in CAT_CLASSES
    assert body["cached"] is False
    assert body["timings_ms"]["inference"] > 0
    assert response["Location"] == body["url"]

    # The same bytes again: the stored result, at once, marked cached; the model is not run.
    again = api.post(
        "/api/v1/predictions/", {"image": SimpleUploadedFile("cat.jpg", photo_bytes("chelsea"))}, HTTP_PREFER="wait=5"
    )
    assert again.status_code == 201
    assert again.json()["cached"] is True
    assert again.json()["label"] == body["label"]
    assert again.json()["timings_ms"]["inference"] == 0


def test_a_batch_of_20_with_wait_is_classified_in_one_request(
    celery_worker: subprocess.Popen[bytes], active_model: ModelVersion, user: User, settings: Any
) -> None:
    # 20 images in one request (one message per INFERENCE_BATCH_SIZE of them), each image classified.
    settings.RESULT_CACHE = "off"  # the same photos repeat: each is classified, none reused
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    files = [SimpleUploadedFile(f"{i}.jpg", photo_bytes("chelsea" if i % 2 else "coffee")) for i in range(20)]

    response = api.post("/api/v1/predictions/batch/?wait=30", {"image": files}, format="multipart")

    assert response.status_code == 201, response.content
    results = response.json()["results"]
    assert [r["filename"] for r in results] == [f"{i}.jpg" for i in range(20)]
    assert all(r["prediction"]["status"] == "succeeded" and not r["prediction"]["cached"] for r in results)
    assert {r["prediction"]["class_id"] for i, r in enumerate(results) if i % 2} <= CAT_CLASSES
    stored = Prediction.objects.filter(user=user)
    assert stored.count() == 20
    assert set(stored.values_list("attempts", flat=True)) == {1}

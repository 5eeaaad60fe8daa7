"""/metrics: Prometheus text that parses, counts what the test did, and is not public."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from pytest_django import Settings

from predictions.models import ModelVersion, PredictionStatus
from predictions.operations import services as operations_services
from tests.factories import OperatorFactory, PredictionFactory, jpeg_bytes

URL = "/metrics"


@pytest.fixture
def staff_client(client: Client, db: None) -> Client:
    """An operator: staff, and allowed to read every user's predictions (what /metrics asks)."""
    client.force_login(OperatorFactory.create())
    return client


# {family name: {(sample name, sorted labels): value}}
Families = dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]


def scrape(client: Client, **headers: Any) -> Families:
    """{family name: {(sample name, sorted labels): value}}."""
    response = client.get(URL, **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    families: Families = {}
    for family in text_string_to_metric_families(response.content.decode()):
        families[family.name] = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value for sample in family.samples
        }
    return families


def value(families: Families, family: str, sample: str | None = None, **labels: str) -> float:
    return families[family].get((sample or family, tuple(sorted(labels.items()))), 0.0)


def test_anonymous_and_regular_users_are_refused(client: Client, user: User) -> None:
    assert client.get(URL).status_code == 403
    client.force_login(user)
    assert client.get(URL).status_code == 403


def test_bearer_token_and_allowed_ip(client: Client, settings: Settings, db: None) -> None:
    settings.METRICS_TOKEN = "s3cret-token"
    assert client.get(URL, HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert client.get(URL, HTTP_AUTHORIZATION="Bearer s3cret-token").status_code == 200

    settings.METRICS_TOKEN = ""
    assert client.get(URL, HTTP_AUTHORIZATION="Bearer ").status_code == 403  # empty token never matches
    settings.METRICS_ALLOWED_IPS = ["127.0.0.1"]  # the test client's REMOTE_ADDR
    assert client.get(URL).status_code == 200
    assert client.get(URL, REMOTE_ADDR="10.1.2.3").status_code == 403


def test_counts_a_prediction_made_in_the_test(staff_client: Client, user: User) -> None:
    before = scrape(staff_client)
    version = ModelVersion.objects.create(name="m", version="7", path="/x")

    # One submitted through the API (stays pending: no worker here) ...
    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(user)
    upload = SimpleUploadedFile("red.jpg", jpeg_bytes(), content_type="image/jpeg")
    assert api.post("/api/v1/predictions/", {"image": upload}, format="multipart").status_code == 202
    # ... and one the worker finished, with a 42 ms inference.
    now = timezone.now()
    PredictionFactory.create(
        user=user,
        status=PredictionStatus.SUCCEEDED,
        model_version=version,
        created_at=now,
        completed_at=now,
        label="cat",
        confidence=0.9,
        queue_ms=5.0,
        preprocess_ms=3.0,
        inference_ms=42.0,
        total_ms=60.0,
    )

    after = scrape(staff_client)
    pending_before = value(before, "imagerec_predictions", status="pending", model_version="")
    assert value(after, "imagerec_predictions", status="pending", model_version="") == pending_before + 1
    assert value(after, "imagerec_predictions", status="succeeded", model_version="m:7") == 1
    histogram = "imagerec_inference_duration_seconds"
    count_before = value(before, histogram, f"{histogram}_count")
    assert value(after, histogram, f"{histogram}_count") == count_before + 1
    # 42 ms lands in the 0.05 s bucket and every bucket above it, not below.
    assert (
        value(after, histogram, f"{histogram}_bucket", le="0.05")
        == value(before, histogram, f"{histogram}_bucket", le="0.05") + 1
    )
    assert value(after, histogram, f"{histogram}_bucket", le="0.025") == value(
        before, histogram, f"{histogram}_bucket", le="0.025"
    )
    assert value(after, histogram, f"{histogram}_sum") == pytest.approx(
        value(before, histogram, f"{histogram}_sum") + 0.042
    )
    # The API request itself was counted by the middleware, by URL name.
    assert (
        value(
            after,
            "imagerec_http_requests",
            "imagerec_http_requests_total",
            view="api:prediction-list",
            method="POST",
            status="202",
        )
        >= 1
    )


def test_workers_queue_and_model_load_time(staff_client: Client, db: None) -> None:
    operations_services.worker_heartbeat_record(
        hostname="celery@w1", started_at=timezone.now(), model_version="m:1", model_load_seconds=3.5
    )

    families = scrape(staff_client)

    assert value(families, "imagerec_workers") == 1
    assert value(families, "imagerec_model_load_seconds", worker="celery@w1", model_version="m:1") == 3.5
    assert value(families, "imagerec_broker_up") == 1  # the default filesystem broker
    assert ("imagerec_queue_depth", (("queue", "inference"),)) in families["imagerec_queue_depth"]
    assert value(families, "imagerec_database_up") == 1
    assert "imagerec_http_request_duration_seconds" in families


def test_scrape_survives_a_dead_broker(staff_client: Client, settings: Settings) -> None:
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6390/0"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {}

    families = scrape(staff_client)

    assert value(families, "imagerec_broker_up") == 0
    assert "imagerec_queue_depth" not in families

"""Liveness and readiness probes: per-check JSON, 503 naming the failing check, fast
failure when the broker is down, and the worker heartbeat that readiness reads (only a
worker consuming the inference queue with its model loaded counts)."""

from __future__ import annotations

import socket
import subprocess
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from pytest_django import Settings

from predictions.models import ModelVersion, WorkerHeartbeat
from predictions.operations import services as operations_services

READY_URL = "/health/ready"


# Readiness details (errors, workers, model) are for operators: the tests read them.
pytestmark = pytest.mark.usefixtures("operator_probe")


@pytest.fixture
def fresh_worker(db: None) -> WorkerHeartbeat:
    return operations_services.worker_heartbeat_record(
        hostname="celery@test",
        started_at=timezone.now(),
        queues=["inference"],
        model_loaded=True,
        model_version="m:1",
        model_load_seconds=1.5,
    )


def test_live_is_always_ok(client: Client) -> None:
    response = client.get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_when_everything_is_there(
    client: Client, active_model: ModelVersion, fresh_worker: WorkerHeartbeat
) -> None:
    response = client.get(READY_URL)

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ok"
    assert body["failing"] == []
    assert set(body["checks"]) == {"database", "broker", "workers", "model"}
    assert all(check["ok"] for check in body["checks"].values())
    assert body["checks"]["workers"]["workers"] == ["celery@test"]
    assert body["checks"]["model"]["model"] == f"{active_model.name}:{active_model.version}"


def test_ready_fails_fast_naming_the_broker_when_redis_is_down(
    client: Client,
    settings: Settings,
    active_model: ModelVersion,
    fresh_worker: WorkerHeartbeat,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6390/0"  # nothing listens there
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {}
    attempts: list[tuple[str, int]] = []
    real_connect = socket.socket.connect

    def connect(sock: socket.socket, address: Any) -> None:
        if isinstance(address, tuple) and address[1] == 6390:
            attempts.append(address)
        real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)

    response = client.get(READY_URL)

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["failing"] == ["broker"]
    assert body["checks"]["broker"]["ok"] is False
    assert "6390" in body["checks"]["broker"]["error"]
    assert body["checks"]["database"]["ok"] is True
    # Why it answers at once: a refused connection is retried once, not until the timeout.
    assert 1 <= len(attempts) <= 2, attempts


def test_ready_fails_without_a_fresh_worker_heartbeat(
    client: Client, settings: Settings, active_model: ModelVersion, fresh_worker: WorkerHeartbeat
) -> None:
    WorkerHeartbeat.objects.update(last_seen_at=timezone.now() - timedelta(minutes=5))

    response = client.get(READY_URL)

    assert response.status_code == 503
    assert response.json()["failing"] == ["workers"]
    assert response.json()["checks"]["workers"]["count"] == 0


def test_ready_fails_without_an_active_model(
    client: Client, fresh_worker: WorkerHeartbeat, settings: Settings, tmp_path: Path
) -> None:
    settings.MODEL_DIR = tmp_path  # nothing to sync either

    response = client.get(READY_URL)

    assert response.status_code == 503
    assert response.json()["failing"] == ["model"]


def test_a_maintenance_worker_alone_is_not_ready(client: Client, active_model: ModelVersion) -> None:
    """The maintenance worker (no inference queue) answers, but cannot classify an image."""
    operations_services.worker_heartbeat_record(
        hostname="maintenance@box", started_at=timezone.now(), queues=["celery", "maintenance"]
    )

    response = client.get(READY_URL)

    assert response.status_code == 503
    workers = response.json()["checks"]["workers"]
    assert response.json()["failing"] == ["workers"]
    assert workers["count"] == 0
    assert workers["workers"] == []
    assert "does not consume the 'inference' queue" in workers["not_serving"]["maintenance@box"]
    assert "no worker consuming the 'inference' queue with its model loaded" in workers["error"]


def test_an_inference_worker_still_warming_up_is_not_ready_and_says_why(
    client: Client, active_model: ModelVersion
) -> None:
    operations_services.worker_heartbeat_record(
        hostname="celery@box",
        started_at=timezone.now(),
        queues=["inference"],
        model_error="database: OperationalError: no such table: predictions_modelversion",
    )

    response = client.get(READY_URL)

    assert response.status_code == 503
    workers = response.json()["checks"]["workers"]
    assert workers["not_serving"] == {
        "celery@box": "model not loaded yet: database: OperationalError: no such table: predictions_modelversion"
    }
    assert "celery@box model not loaded yet" in workers["error"]


def test_one_serving_worker_beside_a_maintenance_worker_is_ready(
    client: Client, active_model: ModelVersion, fresh_worker: WorkerHeartbeat
) -> None:
    operations_services.worker_heartbeat_record(
        hostname="maintenance@box", started_at=timezone.now(), queues=["maintenance"]
    )

    response = client.get(READY_URL)

    assert response.status_code == 200, response.json()
    assert response.json()["checks"]["workers"]["workers"] == ["celery@test"]
    assert list(response.json()["checks"]["workers"]["not_serving"]) == ["maintenance@box"]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_real_worker_makes_the_service_ready(
    client: Client, celery_worker: subprocess.Popen[bytes], active_model: ModelVersion
) -> None:
    """A real worker on the filesystem broker (``-Q inference,maintenance,celery``)
    writes its heartbeat (its queues, the model load time) once the model is warm, and
    readiness turns 200."""
    deadline = time.monotonic() + 60
    while not WorkerHeartbeat.objects.filter(model_loaded=True).exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    row = WorkerHeartbeat.objects.get()
    assert row.queues == ["celery", "inference", "maintenance"]  # as the pool child sees them
    assert row.model_loaded
    assert row.model_error == ""
    assert row.model_load_seconds is not None
    assert row.model_load_seconds > 0
    assert row.model_version == f"{active_model.name}:{active_model.version}"

    response = client.get(READY_URL)
    assert response.status_code == 200, response.json()


def test_anyone_gets_the_status_but_not_the_details(
    settings: Settings, active_model: ModelVersion, fresh_worker: WorkerHeartbeat
) -> None:
    """The probe is public: which checks fail, yes; hosts, paths and worker names, no."""
    from django.test import Client

    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6390/0"  # nothing listens there
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {}

    response = Client().get(READY_URL)

    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "failing": ["broker"],
        "checks": {"database": {"ok": True}, "broker": {"ok": False}, "workers": {"ok": True}, "model": {"ok": True}},
    }

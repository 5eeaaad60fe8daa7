"""Liveness and readiness probes: per-check JSON, 503 naming the failing check, fast
failure when the broker is down, and the worker heartbeat that readiness reads."""

from __future__ import annotations

import time
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.utils import timezone

from predictions import heartbeat, tasks
from predictions.models import WorkerHeartbeat

READY_URL = "/health/ready"


@pytest.fixture
def fresh_worker(db):
    return heartbeat.worker_heartbeat_record(
        hostname="celery@test", started_at=timezone.now(), model_version="m:1", model_load_seconds=1.5
    )


def test_live_is_always_ok(client):
    response = client.get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_when_everything_is_there(client, active_model, fresh_worker):
    response = client.get(READY_URL)

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ok" and body["failing"] == []
    assert set(body["checks"]) == {"database", "broker", "workers", "model"}
    assert all(check["ok"] for check in body["checks"].values())
    assert body["checks"]["workers"]["workers"] == ["celery@test"]
    assert body["checks"]["model"]["model"] == f"{active_model.name}:{active_model.version}"


def test_ready_fails_fast_naming_the_broker_when_redis_is_down(client, settings, active_model, fresh_worker):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6390/0"  # nothing listens there
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {}

    started = time.monotonic()
    response = client.get(READY_URL)
    elapsed = time.monotonic() - started

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["failing"] == ["broker"]
    assert body["checks"]["broker"]["ok"] is False
    assert "6390" in body["checks"]["broker"]["error"]
    assert body["checks"]["database"]["ok"] is True
    assert elapsed < 3.0


def test_ready_fails_without_a_fresh_worker_heartbeat(client, settings, active_model, fresh_worker):
    WorkerHeartbeat.objects.update(last_seen_at=timezone.now() - timedelta(minutes=5))

    response = client.get(READY_URL)

    assert response.status_code == 503
    assert response.json()["failing"] == ["workers"]
    assert response.json()["checks"]["workers"]["count"] == 0


def test_ready_fails_without_an_active_model(client, fresh_worker, settings, tmp_path):
    settings.MODEL_DIR = tmp_path  # nothing to sync either

    response = client.get(READY_URL)

    assert response.status_code == 503
    assert response.json()["failing"] == ["model"]


def test_worker_signals_write_and_remove_the_heartbeat(active_model, settings, monkeypatch):
    """What ``worker_ready`` / ``worker_shutdown`` do, without starting the thread's loop."""
    monkeypatch.setattr(heartbeat, "loaded_model", lambda: ("m:1", 2.25))
    monkeypatch.setattr(heartbeat.HeartbeatThread, "start", lambda self: None)

    tasks._start_heartbeat(sender=SimpleNamespace(hostname="celery@box"))
    row = WorkerHeartbeat.objects.get(hostname="celery@box")
    assert (row.model_version, row.model_load_seconds) == ("m:1", 2.25)
    assert timezone.now() - row.last_seen_at < timedelta(seconds=5)

    tasks._stop_heartbeat()
    assert not WorkerHeartbeat.objects.exists()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_real_worker_makes_the_service_ready(client, celery_worker, active_model):
    """A real worker on the filesystem broker writes its heartbeat (with the model load
    time) once the model is warm, and readiness turns 200."""
    deadline = time.monotonic() + 60
    while not WorkerHeartbeat.objects.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    row = WorkerHeartbeat.objects.get()
    assert row.model_load_seconds is not None and row.model_load_seconds > 0
    assert row.model_version

    response = client.get(READY_URL)
    assert response.status_code == 200, response.json()

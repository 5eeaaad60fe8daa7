"""The worker's life cycle (predictions.worker): which workers load the model, and a
warm-up that fails (database not migrated yet) is retried while heartbeats go on."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import OperationalError
from django.test import Client
from django.utils import timezone
from pytest_django import Settings

from predictions import worker
from predictions.models import ModelVersion, WorkerHeartbeat
from predictions.registry import runtime
from predictions.registry import selectors as registry_selectors
from tests.conftest import BASE_DIR

READY_URL = "/health/ready"


# Readiness details (errors, workers, model) are for operators: the tests read them.
pytestmark = pytest.mark.usefixtures("operator_probe")


@pytest.fixture
def pool_child(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """worker_process_start / _stop as a pool child runs them, minus the thread's loop
    (tests call ``beat()``, which the loop runs every WORKER_HEARTBEAT_INTERVAL_SECONDS)."""
    monkeypatch.setattr(worker.HeartbeatThread, "start", lambda self: None)
    yield
    worker.worker_process_stop()


def test_a_warm_up_failing_on_the_database_still_beats_and_turns_ready_once_it_is_back(
    client: Client, active_model: ModelVersion, pool_child: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker started beside the one-shot migrate: its warm-up hits a missing table."""
    real_active_version = registry_selectors.model_version_active_get
    database = {"migrated": False}

    def active_version() -> ModelVersion:
        if not database["migrated"]:
            raise OperationalError("no such table: predictions_modelversion")
        return real_active_version()

    monkeypatch.setattr(registry_selectors, "model_version_active_get", active_version)
    monkeypatch.setattr(worker, "consumed_queues", lambda: ["inference"])

    heartbeat = worker.worker_process_start()

    row = WorkerHeartbeat.objects.get()
    assert row.queues == ["inference"]
    assert row.model_loaded is False
    assert "no such table" in row.model_error
    response = client.get(READY_URL)
    assert response.status_code == 503
    assert "model not loaded yet" in response.json()["checks"]["workers"]["not_serving"][row.hostname]

    database["migrated"] = True
    heartbeat.beat()  # the next heartbeat retries the warm-up

    row = WorkerHeartbeat.objects.get()
    assert row.model_loaded
    assert row.model_error == ""
    assert row.model_version == f"{active_model.name}:{active_model.version}"
    assert client.get(READY_URL).status_code == 200

    worker.worker_process_stop()
    assert not WorkerHeartbeat.objects.exists()  # a stopping worker stops counting at once


def test_a_missing_model_is_retried_too(
    client: Client, db: None, settings: Settings, tmp_path: Path, pool_child: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker, "consumed_queues", lambda: ["inference"])
    settings.MODEL_DIR = tmp_path  # a deploy that has not copied the model yet

    heartbeat = worker.worker_process_start()

    row = WorkerHeartbeat.objects.get()
    assert not row.model_loaded
    assert "No model version is active" in row.model_error
    assert heartbeat.model_loaded is False


def test_the_maintenance_worker_never_loads_the_model(
    client: Client, active_model: ModelVersion, pool_child: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads = []
    monkeypatch.setattr(runtime, "get_classifier", lambda *args, **kwargs: loads.append(args))
    monkeypatch.setattr(worker, "consumed_queues", lambda: ["celery", "maintenance"])

    heartbeat = worker.worker_process_start()
    heartbeat.beat()

    assert loads == []
    row = WorkerHeartbeat.objects.get()
    assert row.queues == ["celery", "maintenance"]
    assert not row.model_loaded
    assert "does not consume 'inference'" in row.model_error
    assert client.get(READY_URL).status_code == 503


def test_consumed_queues_are_the_ones_the_worker_selected(monkeypatch: pytest.MonkeyPatch) -> None:
    from celery import current_app

    queues = current_app.amqp.queues
    monkeypatch.setattr(queues, "_consume_from", None)
    queues.select(["maintenance", "celery"])  # what `celery worker -Q maintenance,celery` does

    assert worker.consumed_queues() == ["celery", "maintenance"]


# --- Real worker processes, on a database that is not migrated when they start --------


def _tensorflow_mapped(pid: int) -> bool:
    return "/tensorflow/" in Path(f"/proc/{pid}/maps").read_text()


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _heartbeats(database: Path) -> dict[str, dict[str, Any]]:
    try:
        with sqlite3.connect(database) as connection:
            rows = connection.execute(
                "SELECT hostname, queues, model_loaded, model_error FROM predictions_workerheartbeat"
            ).fetchall()
    except sqlite3.OperationalError:  # not migrated yet
        return {}
    return {
        hostname: {"queues": json.loads(queues), "model_loaded": bool(loaded), "model_error": error}
        for hostname, queues, loaded, error in rows
    }


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc to see who loaded TensorFlow")
def test_workers_started_before_migrate_become_ready_after_it(tmp_path: Path, model_dir: Path) -> None:
    """As in docker-compose: an inference and a maintenance worker start while the
    database is still empty. Both keep beating; once migrated and the models registered
    (compose's migrate service), the inference worker loads the model and readiness
    passes; the maintenance worker never loads it, and no pool parent ever maps
    TensorFlow."""
    database = tmp_path / "db.sqlite3"
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("CACHE_URL", "EVENTS_REDIS_URL", "DATABASE_URL", "CELERY_BROKER_URL")
    }
    env.update(
        VAR_DIR=str(tmp_path),  # its own database, broker folders and cache
        DATABASE_URL=f"sqlite:///{database}",
        CELERY_BROKER_URL="filesystem://",
        WORKER_HEARTBEAT_INTERVAL_SECONDS="1",
    )
    command = [sys.executable, "-m", "celery", "-A", "imagerec", "worker", "--pool=prefork", "--concurrency=1",
               "--loglevel=INFO", "--without-gossip", "--without-mingle"]  # fmt: skip
    logs = {name: tmp_path / f"{name}.log" for name in ("inference", "maintenance")}
    processes = {}
    try:
        for name, queues in (("inference", "inference"), ("maintenance", "maintenance,celery")):
            with open(logs[name], "w") as log:
                processes[name] = subprocess.Popen(
                    [*command, "-Q", queues, "--hostname", f"{name}@%h"],
                    cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
                )  # fmt: skip
        deadline = time.monotonic() + 120
        while not all("ready." in log.read_text() for log in logs.values()):
            tails = {name: log.read_text()[-3000:] for name, log in logs.items()}
            assert time.monotonic() < deadline, tails
            assert all(p.poll() is None for p in processes.values()), tails
            time.sleep(0.5)
        assert "no such table" in logs["inference"].read_text()  # the warm-up failed

        for step in (["migrate", "--noinput"], ["sync_models"]):  # what compose's one-shot migrate service runs
            subprocess.run([sys.executable, "manage.py", *step], cwd=BASE_DIR, env=env, check=True, capture_output=True)

        def loaded_and_both_beating() -> bool:  # each worker has beaten since the migration
            beating = _heartbeats(database)
            return len(beating) == 2 and any(row["model_loaded"] for row in beating.values())

        deadline = time.monotonic() + 120
        while not loaded_and_both_beating():
            assert time.monotonic() < deadline, (_heartbeats(database), logs["inference"].read_text()[-3000:])
            time.sleep(0.5)
        rows = sorted(_heartbeats(database).values(), key=lambda row: row["queues"])
        assert [(row["queues"], row["model_loaded"]) for row in rows] == [
            (["celery", "maintenance"], False),
            (["inference"], True),
        ]
        readiness = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c",
             "import json; from predictions.operations.health import check_workers; "
             "print(json.dumps(check_workers().as_dict()))"],
            cwd=BASE_DIR, env=env, check=True, capture_output=True, text=True,
        )  # fmt: skip
        workers = json.loads(readiness.stdout.strip().splitlines()[-1])
        assert workers["ok"] is True
        assert workers["count"] == 1

        inference_child, maintenance_child = (_children(processes[name].pid) for name in ("inference", "maintenance"))
        assert [_tensorflow_mapped(pid) for pid in inference_child] == [True]
        assert [_tensorflow_mapped(pid) for pid in maintenance_child] == [False]
        assert not any(_tensorflow_mapped(process.pid) for process in processes.values())  # pool parents
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def test_each_worker_is_named_after_its_celery_node_and_readiness_and_stats_group_them_by_host(
    client: Client, active_model: ModelVersion, pool_child: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker started with `-n inference@%h` on host gpu-2 beats as inference@gpu-2:<pid>;
    readiness and the operators' stats page list it under its host with its model."""
    from predictions.operations import services as operations_services
    from tests.factories import OperatorFactory

    monkeypatch.setitem(worker._node, "name", "inference@gpu-2")  # what install() got from Celery
    monkeypatch.setattr(worker, "consumed_queues", lambda: ["inference"])
    worker.worker_process_start()
    now = timezone.now()
    operations_services.worker_heartbeat_record(hostname="maintenance@web-1:12", started_at=now, queues=["maintenance"])

    row = WorkerHeartbeat.objects.get(hostname__startswith="inference@")
    assert row.hostname == f"inference@gpu-2:{os.getppid()}"
    assert row.host == "gpu-2"
    model = f"{active_model.name}:{active_model.version}"
    hosts = client.get(READY_URL).json()["checks"]["workers"]["hosts"]
    assert hosts == {
        "gpu-2": {"workers": [row.hostname], "serving": 1, "models": [model]},
        "web-1": {"workers": ["maintenance@web-1:12"], "serving": 0, "models": []},
    }
    scrape = client.get("/metrics").content.decode()
    assert f'imagerec_worker_model_loaded{{host="gpu-2",model_version="{model}",worker="{row.hostname}"}} 1.0' in scrape

    client.force_login(OperatorFactory.create())
    page = client.get("/stats/").content.decode()
    assert "Worker hosts" in page
    for shown in ("gpu-2", model, "web-1"):
        assert shown in page

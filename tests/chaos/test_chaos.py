"""Chaos: hundreds of submissions through the API (one image per request, and batches of
8) while workers are SIGKILLed and the broker is restarted; every prediction must still
succeed, exactly once.

Run alone with `make chaos`. Against Redis (CELERY_BROKER_URL=redis://...) it also
restarts the Redis server, which keeps nothing on disk, so every queued message is
lost and only the reconciler can recover them.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from predictions.models import Prediction, PredictionStatus
from tests.conftest import BASE_DIR, _database_url

pytestmark = [pytest.mark.slow, pytest.mark.chaos, pytest.mark.django_db(transaction=True)]

SUBMISSIONS = int(os.environ.get("CHAOS_SUBMISSIONS", "500"))
REDIS_START = [
    "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379", "--save", "",
    "--appendonly", "no", "--dir", "/var/lib/redis", "--logfile", "/var/log/redis/ci.log",
]  # fmt: skip


def _image(index: int) -> bytes:
    colour = ((index * 37) % 256, (index * 91) % 256, (index * 13) % 256)
    image = Image.new("RGB", (48, 32), colour)
    image.putpixel((index % 48, index % 32), (255 - colour[0], 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


class Worker:
    """A real Celery process (a worker, or beat running the reconciler), in its own
    process group so a SIGKILL takes the whole of it, as a crashed machine would."""

    def __init__(self, env: dict[str, str], log_dir: Path, command: list[str], name: str = "worker") -> None:
        self.env = env
        self.log_dir = log_dir
        self.command = command
        self.name = name
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.log_dir / f"{self.name}-{self.starts}.log", "w")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "imagerec", *self.command],
            cwd=BASE_DIR, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def terminate(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=120)

    def ensure_stopped(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


def _counts() -> dict[str, int]:
    return {status: Prediction.objects.filter(status=status).count() for status in PredictionStatus.values}


def _wait(condition: Callable[[], bool], timeout: float, what: str, every: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            errors = set(Prediction.objects.exclude(error="").values_list("error", flat=True)[:50])
            raise AssertionError(f"timed out waiting for {what}: {_counts()}; errors: {errors}")
        time.sleep(every)


def _restart_redis() -> float:
    """Stop Redis (dropping every queued message) and start it again; returns downtime."""
    began = time.monotonic()
    subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", "6379", "shutdown", "nosave"], capture_output=True)
    _wait(lambda: subprocess.run(["redis-cli", "ping"], capture_output=True).returncode != 0, 30, "redis down")
    time.sleep(1.0)
    subprocess.run(REDIS_START, check=True)
    _wait(lambda: subprocess.run(["redis-cli", "ping"], capture_output=True).returncode == 0, 30, "redis up")
    return time.monotonic() - began


@pytest.fixture
def chaos_env(media_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "MEDIA_ROOT": str(media_dir),
        "RECONCILE_AFTER_SECONDS": "8",
        # Reconciling must wait longer than a task may run (system check predictions.E001).
        "CELERY_TASK_TIME_LIMIT": "7",
        "CELERY_TASK_SOFT_TIME_LIMIT": "6",
        "RECONCILE_INTERVAL_SECONDS": "3",
        "CELERY_VISIBILITY_TIMEOUT": "30",
    }


WORKER_COMMAND = ["worker", "--pool=prefork", "--concurrency=1", "-Q", "inference,maintenance,celery",
                  "--loglevel=INFO", "--without-gossip", "--without-mingle"]  # fmt: skip


@pytest.fixture
def worker(chaos_env: dict[str, str], tmp_path: Path) -> Iterator[Worker]:
    worker = Worker(chaos_env, tmp_path, WORKER_COMMAND)
    yield worker
    worker.ensure_stopped()  # never leave a worker behind, whatever the test did


@pytest.fixture
def beat(chaos_env: dict[str, str], tmp_path: Path) -> Iterator[Worker]:
    """The reconciler's schedule, in its own process as in docker-compose.yml."""
    beat = Worker(chaos_env, tmp_path, ["beat", "--schedule", str(tmp_path / "beat"), "--loglevel=INFO"], "beat")
    beat.start()
    yield beat
    beat.ensure_stopped()


# One image per request (one message each), and batches of 8 (one message per chunk, whose
# rows a killed worker's batch had claimed are claimed again when the message is redelivered).
@pytest.mark.parametrize("per_request", [1, 8], ids=["one-image", "batches-of-8"])
def test_every_submission_succeeds_exactly_once_through_kills_and_broker_restart(
    per_request: int,
    model_dir: Path,
    media_dir: Path,
    django_user_model: type[User],
    worker: Worker,
    beat: Worker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from predictions.api.throttles import SubmitRateThrottle
    from predictions.registry import services as registry_services

    monkeypatch.setattr(SubmitRateThrottle, "THROTTLE_RATES", {"submit": "100000/min"})
    uses_redis = settings.CELERY_BROKER_URL.startswith("redis")
    if uses_redis and not shutil.which("redis-server"):
        pytest.fail("redis-server is needed to restart the broker")
    registry_services.model_version_sync()  # what `make migrate` and compose's migrate service run
    user = django_user_model.objects.create_user("chaos", password="chaos-password-1")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    worker.start()
    events: list[str] = []
    began = time.monotonic()

    for start in range(0, SUBMISSIONS, per_request):
        indexes = range(start, min(start + per_request, SUBMISSIONS))
        files = [SimpleUploadedFile(f"{i}.png", _image(i)) for i in indexes]
        if per_request == 1:
            response = api.post("/api/v1/predictions/", {"image": files[0]}, format="multipart")
        else:
            response = api.post("/api/v1/predictions/batch/", {"image": files}, format="multipart")
        assert response.status_code == 202, response.content
        index = indexes[-1]
        if SUBMISSIONS // 5 in indexes or SUBMISSIONS * 3 // 5 in indexes:
            # Kill it mid-task: the moment a prediction is running.
            running = Prediction.objects.filter(status=PredictionStatus.RUNNING)
            _wait(running.exists, 120, "a running prediction", every=0.002)
            worker.kill()
            events.append(f"worker SIGKILLed mid-task after {index + 1} submissions, counts {_counts()}")
            worker.start()
        if uses_redis and SUBMISSIONS * 2 // 5 in indexes:
            downtime = _restart_redis()
            events.append(f"redis restarted ({downtime:.1f}s down) after {index + 1} submissions, counts {_counts()}")
    submitted_s = time.monotonic() - began

    unfinished = Prediction.objects.exclude(status__in=[PredictionStatus.SUCCEEDED, PredictionStatus.FAILED])
    _wait(lambda: not unfinished.exists(), 600, "every prediction to finish")
    total_s = time.monotonic() - began

    # Graceful shutdown: SIGTERM lets the worker finish its current task and exit cleanly.
    assert worker.terminate() == 0

    counts = _counts()
    attempts = list(Prediction.objects.values_list("attempts", flat=True))
    print(f"\nchaos: {SUBMISSIONS} submissions in {submitted_s:.1f}s, all final after {total_s:.1f}s")
    for event in events:
        print(f"  {event}")
    print(f"  final counts {counts}; claimed more than once (redelivered): {sum(a > 1 for a in attempts)}; "
          f"worker starts {worker.starts}")  # fmt: skip
    assert counts[PredictionStatus.SUCCEEDED] == SUBMISSIONS, counts
    assert sum(a > 1 for a in attempts) >= 1, "a task killed mid-run should have been claimed again"
    assert Prediction.objects.count() == SUBMISSIONS
    assert not Prediction.objects.filter(completed_at__isnull=True).exists()
    assert all(p.label and p.total_ms is not None for p in Prediction.objects.only("label", "total_ms"))

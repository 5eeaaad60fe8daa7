"""Shared fixtures: private media per session, the shipped model, users, real photos,
and a real Celery worker process for end-to-end tests."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.test import Client
from PIL import Image
from pytest_django import DjangoDbBlocker, Settings

from predictions.registry import selectors as registry_selectors
from predictions.registry import services as registry_services
from tests.factories import UserFactory
from tests.seaweedfs import S3Server, seaweedfs_server
from training.test_photos import TEST_PHOTOS

if TYPE_CHECKING:  # imported where used: TensorFlow loads only for the tests that need it
    from rest_framework.test import APIClient

    from predictions.models import ModelVersion, Prediction, PredictionId
    from training.finetune import FinetuneResult

BASE_DIR = Path(__file__).resolve().parent.parent
PHOTOS = {photo.name: photo for photo in TEST_PHOTOS}
CAT_CLASSES = set(PHOTOS["chelsea"].expected)


def pytest_sessionstart(session: pytest.Session) -> None:
    """A SQLite test database is deleted without its WAL files; stale ones would
    corrupt the next one ("disk I/O error"), so remove them before it is created."""
    test_name = django_settings.DATABASES["default"].get("TEST", {}).get("NAME")
    if test_name and django_settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        Path(test_name).parent.mkdir(parents=True, exist_ok=True)  # settings create no directories
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{test_name}{suffix}").unlink(missing_ok=True)


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(autouse=True)
def _private_media(settings: Settings, media_dir: Path) -> None:
    settings.MEDIA_ROOT = media_dir


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real SeaweedFS S3 server (tests/seaweedfs.py): the environment's, or one started
    for the session. Tests using it are marked ``storage``."""
    yield from seaweedfs_server(tmp_path_factory.mktemp("seaweedfs"))


@pytest.fixture
def s3_media(settings: Settings, seaweedfs: S3Server) -> S3Server:
    """Media (uploads, thumbnails, overlays) in the SeaweedFS bucket for this test."""
    settings.STORAGES = {**settings.STORAGES, "default": seaweedfs.backend()}
    return seaweedfs


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    """Throttling counters live in the cache: no test inherits another's."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _fresh_registry_choice() -> Iterator[None]:
    """Web processes keep the model versions a submission chooses from and what API
    tokens name: no test inherits another's (its rows are rolled back without a signal)."""
    from predictions.api import authentication

    registry_selectors.model_versions_forget()
    authentication.tokens_forget()
    yield
    registry_selectors.model_versions_forget()
    authentication.tokens_forget()


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The shipped default model, built by the same code as `make model` if absent."""
    path = Path(django_settings.MODEL_DIR, django_settings.MODEL_NAME, "1")
    if not (path / "metadata.json").exists():
        subprocess.run(
            [sys.executable, "-m", "training.build_imagenet", "--variant", "lite0", "--out",
             str(django_settings.MODEL_DIR)],
            check=True, cwd=BASE_DIR,
        )  # fmt: skip
    return path


DIGITS_PER_CLASS = 40  # 400 real scans: big enough to learn, small enough for a test on 2 cores


@pytest.fixture(scope="session")
def digits_subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first DIGITS_PER_CLASS scans of every digit (scikit-learn's real scans), as
    written by ``training.datasets``: ``DIR/<digit>/*.png``."""
    from training.datasets import materialise

    full = materialise("digits", tmp_path_factory.mktemp("digits-all") / "digits")
    subset = tmp_path_factory.mktemp("digits") / "digits"
    for folder in sorted(full.iterdir()):
        (subset / folder.name).mkdir(parents=True)
        for png in sorted(folder.glob("*.png"))[:DIGITS_PER_CLASS]:
            shutil.copy(png, subset / folder.name / png.name)
    return subset


@pytest.fixture(scope="session")
def finetuned(model_dir: Path, digits_subset: Path, tmp_path_factory: pytest.TempPathFactory) -> FinetuneResult:
    """A short real fine-tune of the shipped model on ``digits_subset``, once per session:
    2 head epochs, 6 fine-tuning epochs, at 96 px to stay fast. Exported as digits v2."""
    from training.finetune import FinetuneConfig, finetune

    work = tmp_path_factory.mktemp("finetune")
    config = FinetuneConfig(
        warmup_epochs=2,
        epochs=6,
        batch_size=16,
        input_size=96,
        color_jitter=0.0,  # crops stay on; the light augmentation lets a few epochs converge
        erasing=0.0,
        val_fraction=0.2,
        test_fraction=0.2,
        flip="none",  # a mirrored digit is not the same digit
        verbose=2,
    )
    return finetune(model_dir, digits_subset, work / "models", "digits", "2", config=config, workdir=work / "run")


MULTI_DIGITS_COUNT = 500  # composites of real scans: enough to learn ten labels in about 2 minutes on 2 cores


@pytest.fixture(scope="session")
def multi_digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MULTI_DIGITS_COUNT composites of 1-3 real digit scans each, as written by
    ``training.datasets multi-digits``: ``DIR/*.png`` + ``DIR/labels.csv``."""
    from training.datasets import materialise

    return materialise("multi-digits", tmp_path_factory.mktemp("multi-digits") / "set", count=MULTI_DIGITS_COUNT)


@pytest.fixture(scope="session")
def multilabel_finetuned(
    model_dir: Path, multi_digits: Path, tmp_path_factory: pytest.TempPathFactory
) -> FinetuneResult:
    """A short real multi-label fine-tune of the shipped model on ``multi_digits``, once
    per session (sigmoid head, thresholds tuned on validation), exported as multi-digits v1.
    128 px: at 96 the digits (a quarter of the canvas wide) are too small to learn in 2 minutes."""
    from training.finetune import FinetuneConfig, finetune

    work = tmp_path_factory.mktemp("finetune-multi")
    config = FinetuneConfig(
        warmup_epochs=2,
        epochs=10,
        finetune_learning_rate=1e-3,
        label_smoothing=0.0,
        batch_size=16,
        input_size=128,
        color_jitter=0.0,
        erasing=0.0,  # a rectangle of noise could wipe out a digit and make its label wrong
        crop_min=0.9,  # small crops could cut a digit at the edge off, the same way
        val_fraction=0.2,
        test_fraction=0.2,
        flip="none",
        verbose=2,
    )
    return finetune(
        model_dir, multi_digits, work / "models", "multi-digits", "1", config=config, workdir=work / "run",
        labels_csv=multi_digits / "labels.csv",
    )  # fmt: skip


@pytest.fixture
def active_model(db: None, model_dir: Path) -> ModelVersion:

    registry_services.model_version_sync()
    return registry_selectors.model_version_active_get()


@pytest.fixture
def operator_probe(client: Client, settings: Settings) -> None:
    """The test client presents the metrics token, so /health/ready shows it the details
    (errors, workers, model) it shows operators."""
    settings.METRICS_TOKEN = "probe-token"
    client.defaults["HTTP_AUTHORIZATION"] = "Bearer probe-token"


@pytest.fixture
def user(db: None) -> User:
    return UserFactory.create()


@pytest.fixture
def other_user(db: None) -> User:
    return UserFactory.create()


@pytest.fixture
def user_client(client: Client, user: User) -> Client:
    client.force_login(user)
    return client


def api_as(user: User) -> APIClient:
    """A DRF test client authenticated as ``user`` (session-less, as a token client)."""
    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(user)
    return api


def photo_bytes(name: str, image_format: str = "JPEG") -> bytes:
    """One of the real photos shipped with scikit-image, encoded as ``image_format``."""
    with Image.open(PHOTOS[name].path) as image:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, image_format)
    return buffer.getvalue()


def _database_url() -> str:
    from django.db import connection

    params = connection.settings_dict
    if params["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{params['NAME']}"
    auth = params["USER"] or ""
    if params["PASSWORD"]:
        auth += f":{params['PASSWORD']}"
    host = params["HOST"] or "localhost"
    port = params["PORT"] or 5432
    return f"postgres://{auth}@{host}:{port}/{params['NAME']}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _compose_web_command(port: int) -> list[str]:
    compose = yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text())
    command = [str(part).replace("0.0.0.0:8000", f"127.0.0.1:{port}") for part in compose["services"]["web"]["command"]]
    assert command[0] == "gunicorn"
    return [sys.executable, "-m", "gunicorn", *command[1:]]


@pytest.fixture(scope="session")
def celery_worker(
    django_db_setup: None,
    django_db_blocker: DjangoDbBlocker,
    media_dir: Path,
    model_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[subprocess.Popen[bytes]]:
    """A real `celery worker` process on the test database and media, as in production."""
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    with django_db_blocker.unblock():
        database_url = _database_url()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "MEDIA_ROOT": str(media_dir),
        "RECONCILE_AFTER_SECONDS": "30",
        # Reconciling must wait longer than a task may run (system check predictions.E001).
        "CELERY_TASK_TIME_LIMIT": "25",
        "CELERY_TASK_SOFT_TIME_LIMIT": "20",
    }
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "imagerec", "worker", "--pool=prefork", "--concurrency=1",
             "-Q", "inference,maintenance,celery", "--loglevel=INFO", "--without-gossip", "--without-mingle"],
            cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 120
    while "ready." not in log_path.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"Celery worker did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.5)
    yield process
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def wait_for_final(prediction_id: PredictionId, timeout: float = 90.0) -> Prediction:
    """Poll the database until the prediction is final (the worker writes it)."""
    from predictions.models import Prediction

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        prediction = Prediction.objects.get(id=prediction_id)
        if prediction.is_final:
            return prediction
        time.sleep(0.3)
    raise AssertionError(f"prediction {prediction_id} still {prediction.status} after {timeout}s")


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    path = BASE_DIR / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path

"""The model life cycle end to end, through a real Celery worker process and the public
surfaces: a real fine-tune registered with ``register_model``, activated and rolled back
through the API, an A/B share that keeps a user on the candidate, a reprocess job worked
by the worker, and the worker releasing the version no longer in use from memory."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from predictions.models import (
    ModelVersion,
    Prediction,
    ReprocessJob,
    ReprocessJobStatus,
    ReprocessScope,
    WorkerHeartbeat,
)
from predictions.registry import selectors as registry_selectors
from predictions.reprocessing import selectors as reprocess_selectors
from predictions.reprocessing import services as reprocess_services
from tests.conftest import CAT_CLASSES, photo_bytes
from tests.factories import UserFactory

if TYPE_CHECKING:
    from training.finetune import FinetuneResult

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

MODELS_URL = "/api/v1/models/"
DIGIT_CLASSES = {str(digit) for digit in range(10)}


def _token_client(user: User) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return api


def _switcher() -> User:
    account = UserFactory.create(is_staff=True)
    account.user_permissions.add(
        Permission.objects.get(codename="change_modelversion", content_type__app_label="predictions")
    )
    return account


def _classified(api: APIClient, content: bytes, filename: str) -> dict[str, Any]:
    """Submit one image through the API and long-poll until the worker has finished it."""
    submitted = api.post("/api/v1/predictions/", {"image": SimpleUploadedFile(filename, content)}, format="multipart")
    assert submitted.status_code == 202, submitted.content
    for _ in range(4):
        body: dict[str, Any] = api.get(f"/api/v1/predictions/{submitted.json()['id']}/", {"wait": 30}).json()
        if body["status"] in ("succeeded", "failed"):
            assert body["status"] == "succeeded", body
            return body
    raise AssertionError(f"{filename} still {body['status']} after two minutes")


def _held_out_scans_it_gets_right(model_dir: Path, data_root: Path, count: int) -> list[Path]:
    """Held-out scans (the fine-tune's test split) that the exported model, run through the
    runner in this process, classifies as their true digit."""
    from ml.cache import get_classifier

    held_out = [data_root / name for name in json.loads((model_dir / "splits.json").read_text())["test"]]
    results = get_classifier(model_dir).classify(held_out, top_k=1)
    right = [path for path, result in zip(held_out, results, strict=True) if result.top.class_id == path.parent.name]
    assert len(right) >= count, f"only {len(right)} of {len(held_out)} held-out scans right"
    # Different digits where possible, so each submission is another image and another class.
    by_digit: dict[str, Path] = {}
    for path in right:
        by_digit.setdefault(path.parent.name, path)
    chosen = list(by_digit.values()) + [path for path in right if path not in by_digit.values()]
    return chosen[:count]


def _users_split_by(candidate: ModelVersion) -> tuple[Any, Any, int]:
    """Two users and a share of traffic that puts the first on ``candidate`` and the second
    on the active version: the share is one above the first user's bucket, chosen so it is
    below the second's (buckets are a stable hash of user and version ids)."""
    users = [UserFactory.create() for _ in range(2)]
    while True:
        buckets = {registry_selectors.traffic_bucket(user_id=u.pk, model_version_id=candidate.pk): u for u in users}
        if len(buckets) >= 2:
            low, high = sorted(buckets)[:2]
            return buckets[low], buckets[high], low + 1
        users.append(UserFactory.create())


def _wait_for_job(job: ReprocessJob, timeout: float = 120.0) -> ReprocessJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.status == ReprocessJobStatus.DONE:
            return job
        time.sleep(0.5)
    raise AssertionError(f"reprocess job still {job.status}: {reprocess_selectors.reprocess_job_counts(job=job)}")


def _wait_for_heartbeat(*, naming: str, after: float, timeout: float = 75.0) -> WorkerHeartbeat:
    """The worker's first heartbeat after ``after`` (a time.time()) whose loaded versions are ``naming``."""
    deadline = time.monotonic() + timeout
    seen = set()
    while time.monotonic() < deadline:
        for heartbeat in WorkerHeartbeat.objects.all():
            if "inference" in heartbeat.queues and heartbeat.last_seen_at.timestamp() > after:
                seen.add(heartbeat.model_version)
                if heartbeat.model_version == naming:
                    return heartbeat
        time.sleep(1)
    raise AssertionError(f"no heartbeat naming only {naming!r} (saw {sorted(seen)})")


def test_fine_tune_register_activate_roll_back_ab_test_and_reprocess_with_a_real_worker(
    celery_worker: subprocess.Popen[bytes],
    finetuned: FinetuneResult,
    digits_subset: Path,
    active_model: ModelVersion,
    user: User,
) -> None:
    shipped = active_model
    imagenet_classes = {entry["class_id"] for entry in shipped.classes}
    digit_scans = _held_out_scans_it_gets_right(finetuned.target, digits_subset, count=5)
    switcher = _token_client(_switcher())
    api = _token_client(user)

    # Register the fine-tuned folder as an operator would, then switch to it through the API.
    call_command("register_model", str(finetuned.target))
    activated = switcher.post(f"{MODELS_URL}digits/2/activate/")
    assert activated.status_code == 200, activated.content
    assert activated.json()["status"] == "active", activated.content

    # The worker picks the switch up without a restart: a held-out scan gets a digit.
    scan = digit_scans[0]
    body = _classified(api, scan.read_bytes(), "digit.png")
    assert body["model"] == {"name": "digits", "version": "2"}
    assert body["class_id"] == scan.parent.name
    assert body["class_id"] in DIGIT_CLASSES

    # Roll back: a real photo gets its ImageNet cat class from the shipped version again.
    rolled_back = switcher.post(f"{MODELS_URL}rollback/")
    assert rolled_back.status_code == 200
    assert rolled_back.json()["version"] == shipped.version
    body = _classified(api, photo_bytes("chelsea"), "chelsea.jpg")
    assert body["model"] == {"name": shipped.name, "version": shipped.version}
    assert body["class_id"] in CAT_CLASSES

    # A/B: the fine-tune as a candidate with a share that takes one user and not the other.
    call_command("register_model", str(finetuned.target), "--candidate", "--no-load")
    candidate = ModelVersion.objects.get(name="digits", version="2")
    on_candidate, on_active, share = _users_split_by(candidate)
    patched = switcher.patch(f"{MODELS_URL}digits/2/", {"traffic_percent": share}, format="json")
    assert patched.status_code == 200, patched.content
    assert patched.json()["traffic_percent"] == share, patched.content
    candidate_api = _token_client(on_candidate)
    for index, scan in enumerate(digit_scans[1:4]):
        body = _classified(candidate_api, scan.read_bytes(), f"scan{index}.png")
        assert body["model"] == {"name": "digits", "version": "2"}  # sticky: every submission
        assert body["class_id"] == scan.parent.name
    body = _classified(_token_client(on_active), digit_scans[4].read_bytes(), "scan.png")
    assert body["model"] == {"name": shipped.name, "version": shipped.version}
    assert body["class_id"] in imagenet_classes
    # The worker holds both while the test runs (its heartbeat names them, the active one first).
    _wait_for_heartbeat(naming=f"{shipped.key}, digits:2", after=time.time())

    # End the test and re-run what the fine-tune classified with the active version.
    assert switcher.patch(f"{MODELS_URL}digits/2/", {"traffic_percent": 0}, format="json").status_code == 200
    job = reprocess_services.reprocess_job_start(user=None, scope=ReprocessScope.OLDER_VERSIONS)
    assert job.total == 4  # the first scan and the candidate user's three
    job = _wait_for_job(job)
    counts = reprocess_selectors.reprocess_job_counts(job=job)
    assert (counts.waiting, counts.running, counts.done, counts.failed) == (0, 0, 4, 0)
    rerun = Prediction.objects.filter(reprocess_job=job).select_related("model_version")
    assert {p.model_version.key if p.model_version else None for p in rerun} == {shipped.key}
    assert {p.class_id for p in rerun} <= imagenet_classes
    finished = time.time()

    # Neither active nor a candidate with a share, and no waiting prediction was given it:
    # within a heartbeat the worker releases the fine-tune from memory.
    _wait_for_heartbeat(naming=shipped.key, after=finished)

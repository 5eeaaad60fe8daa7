"""Reprocessing: staff re-run finished predictions with the active model in the
background, in chunks, with live counts, pause / resume / cancel; corrections are kept."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from pytest_django import DjangoCaptureOnCommitCallbacks

from predictions import tasks, worker
from predictions.exceptions import ConflictError
from predictions.models import Correction, ModelVersion, Prediction, PredictionId, PredictionStatus, ReprocessJob
from predictions.reprocessing import selectors as reprocess_selectors
from predictions.reprocessing import services as reprocess_services
from tests.factories import PredictionFactory, UserFactory


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[PredictionId, bool]]:
    """The messages a step sends (prediction id, rerun flag), instead of the broker."""
    messages: list[tuple[PredictionId, bool]] = []
    monkeypatch.setattr(
        reprocess_services,
        "prediction_enqueue",
        lambda *, prediction_id, rerun=False: messages.append((prediction_id, rerun)),
    )
    monkeypatch.setattr(reprocess_services, "reprocess_step_send", lambda *, job_id, countdown=0: None)
    return messages


@pytest.fixture
def history(user: User, active_model: ModelVersion) -> dict[str, Prediction]:
    """By an older version: one succeeded (corrected by its owner); by the active one:
    one succeeded; one failed; one still pending."""
    older = ModelVersion.objects.create(name="efficientnet_lite0", version="0", path="/gone/0")
    now = timezone.now()
    done = {"status": PredictionStatus.SUCCEEDED, "confidence": 0.4, "label": "tabby cat", "completed_at": now}
    by_older = PredictionFactory.create(user=user, model_version=older, **done)
    Correction.objects.create(
        prediction=by_older, label="tiger cat", predicted_label="tabby cat", model_version=older,
        corrected_by=user, created_at=now, updated_at=now,
    )  # fmt: skip
    return {
        "older": by_older,
        "active": PredictionFactory.create(user=user, model_version=active_model, **done),
        "failed": PredictionFactory.create(user=user, status=PredictionStatus.FAILED, error="x", completed_at=now),
        "pending": PredictionFactory.create(user=user),
    }


def _counts(job: ReprocessJob) -> tuple[int, int, int, int]:
    job.refresh_from_db()
    counts = reprocess_selectors.reprocess_job_counts(job=job)
    return counts.waiting, counts.running, counts.done, counts.failed


def test_older_versions_are_run_again_with_the_active_model_and_corrections_are_kept(
    history: dict[str, Prediction],
    active_model: ModelVersion,
    sent: list[tuple[PredictionId, bool]],
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    older = history["older"]
    worker.finished_add([older.id])  # this worker finished it before: a rerun must not be skipped
    job = reprocess_services.reprocess_job_start(user=None, scope="older_versions")
    assert job.total == 1
    assert job.model_version == active_model
    assert _counts(job) == (1, 0, 0, 0)

    with django_capture_on_commit_callbacks(execute=True):
        assert reprocess_services.reprocess_job_step(job_id=job.pk) is True
    assert sent == [(older.id, True)]
    older.refresh_from_db()
    assert older.status == PredictionStatus.PENDING
    assert older.assigned_version == active_model
    tasks.prediction_run(str(older.id), rerun=True)  # what the worker runs for the message

    older.refresh_from_db()
    assert older.status == PredictionStatus.SUCCEEDED
    assert older.model_version == active_model
    assert _counts(job) == (0, 0, 1, 0)
    assert reprocess_services.reprocess_job_step(job_id=job.pk) is False
    job.refresh_from_db()
    assert job.status == "done"
    assert job.finished_at is not None
    assert Correction.objects.get(prediction=older).label == "tiger cat"  # the user's label stays
    history["active"].refresh_from_db()
    assert history["active"].reprocess_job is None  # made by the active version: not run again


def test_all_in_chunks_with_pause_resume_and_cancel(
    history: dict[str, Prediction],
    sent: list[tuple[PredictionId, bool]],
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    monkeypatch.setattr(reprocess_services, "REPROCESS_CHUNK_SIZE", 2)
    job = reprocess_services.reprocess_job_start(user=None, scope="all")
    assert job.total == 3  # the finished ones; the pending one is left alone
    with pytest.raises(ConflictError, match="Another reprocess job"):
        reprocess_services.reprocess_job_start(user=None, scope="all")

    with django_capture_on_commit_callbacks(execute=True):
        reprocess_services.reprocess_job_step(job_id=job.pk)
    assert len(sent) == 2
    assert _counts(job) == (3, 0, 0, 0)
    assert reprocess_services.reprocess_job_step(job_id=job.pk) is True
    assert len(sent) == 2

    reprocess_services.reprocess_job_pause(job=job)
    Prediction.objects.filter(reprocess_job=job).update(
        status=PredictionStatus.SUCCEEDED, confidence=0.9, completed_at=timezone.now()
    )  # the workers did their part
    assert reprocess_services.reprocess_job_step(job_id=job.pk) is False
    assert len(sent) == 2
    with pytest.raises(ConflictError):
        reprocess_services.reprocess_job_pause(job=job)
    reprocess_services.reprocess_job_resume(job=job)
    with django_capture_on_commit_callbacks(execute=True):
        reprocess_services.reprocess_job_step(job_id=job.pk)
    assert len(sent) == 3

    reprocess_services.reprocess_job_cancel(job=job)
    assert reprocess_services.reprocess_job_step(job_id=job.pk) is False
    assert _counts(job) == (1, 0, 2, 0)  # the last one sent still finishes; nothing else waits
    with pytest.raises(ConflictError):
        reprocess_services.reprocess_job_resume(job=job)


def test_admin_starts_a_job_shows_counts_and_pauses_it(
    client: Client, history: dict[str, Prediction], sent: list[tuple[PredictionId, bool]]
) -> None:
    staff = UserFactory.create(is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="add_reprocessjob"))
    client.force_login(staff)

    page = client.get(reverse("admin:predictions_reprocessjob_add"))
    assert b"Corrected labels are kept" in page.content
    client.post(reverse("admin:predictions_reprocessjob_add"), {"scope": "older_versions"})
    job = ReprocessJob.objects.get()
    assert job.created_by == staff
    assert job.total == 1
    listing = client.get(reverse("admin:predictions_reprocessjob_changelist"))
    assert b"Waiting" in listing.content
    assert b'value="pause"' in listing.content
    client.post(reverse("admin:predictions_reprocessjob_changelist"), {"action": "pause", "_selected_action": [job.pk]})
    job.refresh_from_db()
    assert job.status == "paused"


def test_admin_reprocess_needs_the_permission(client: Client, history: dict[str, Prediction]) -> None:
    client.force_login(UserFactory.create(is_staff=True))

    assert client.get(reverse("admin:predictions_reprocessjob_add")).status_code == 403
    assert client.get(reverse("admin:predictions_reprocessjob_changelist")).status_code == 403

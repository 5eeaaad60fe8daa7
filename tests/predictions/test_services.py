"""The service layer: what is written, when it is queued, and that each image ends final."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from predictions import services
from predictions.exceptions import ImageTooLargeError, InvalidImageError, UnsupportedImageError
from predictions.models import Prediction, PredictionStatus
from tests.conftest import CAT_CLASSES, photo_bytes
from tests.factories import PredictionFactory


def _upload(content: bytes, name: str = "cat.jpg") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type="image/jpeg")


def _media_files(media_dir: Path) -> list[Path]:
    return [p for p in media_dir.rglob("*") if p.is_file()]


def test_create_stores_row_and_file_then_queues_after_commit(
    user, media_dir, django_capture_on_commit_callbacks, monkeypatch
):
    sent = []
    monkeypatch.setattr(services, "prediction_enqueue", lambda *, prediction_id: sent.append(prediction_id) or True)
    content = photo_bytes("chelsea")

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        prediction = services.prediction_create(
            user=user, uploaded_file=_upload(content, "../../etc/Chelsea the cat.jpg")
        )
        assert sent == []  # nothing is sent before the row is committed
    for callback in callbacks:
        callback()

    prediction.refresh_from_db()
    assert sent == [prediction.id]
    assert prediction.status == PredictionStatus.PENDING
    assert prediction.original_filename == "Chelsea the cat.jpg"
    assert (prediction.width, prediction.height, prediction.image_format) == (451, 300, "JPEG")
    assert prediction.size_bytes == len(content)
    stored = Path(prediction.image.path)
    assert stored.read_bytes() == content
    assert prediction.id.hex in stored.name and ".." not in prediction.image.name


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"", InvalidImageError),
        (b"%PDF-1.4 not an image", UnsupportedImageError),
        (photo_bytes("chelsea")[:4000], InvalidImageError),
    ],
    ids=["empty", "pdf", "truncated-jpeg"],
)
def test_bad_upload_writes_nothing(user, media_dir, content, error):
    before = set(_media_files(media_dir))

    with pytest.raises(error) as raised:
        services.prediction_create(user=user, uploaded_file=_upload(content))

    assert raised.value.message
    assert Prediction.objects.count() == 0
    assert set(_media_files(media_dir)) == before


def test_file_over_the_limit_is_413(user, settings):
    settings.MAX_UPLOAD_BYTES = 1000

    with pytest.raises(ImageTooLargeError) as raised:
        services.prediction_create(user=user, uploaded_file=_upload(photo_bytes("chelsea")))

    assert raised.value.status_code == 413
    assert Prediction.objects.count() == 0


def test_create_many_keeps_good_files_when_one_is_bad(user):
    outcomes = services.prediction_create_many(
        user=user, uploaded_files=[_upload(photo_bytes("coffee")), _upload(b"junk", "x.png")]
    )

    assert outcomes[0].prediction is not None and outcomes[0].error is None
    assert outcomes[1].prediction is None and outcomes[1].filename == "x.png"
    assert Prediction.objects.count() == 1


def test_process_stores_label_timings_and_model_version(user, active_model):
    prediction = services.prediction_create(user=user, uploaded_file=_upload(photo_bytes("chelsea")))

    services.prediction_process(prediction_id=prediction.id)

    prediction.refresh_from_db()
    assert prediction.status == PredictionStatus.SUCCEEDED
    assert prediction.class_id in CAT_CLASSES
    assert prediction.label and 0 < prediction.confidence <= 1
    assert len(prediction.top_predictions) == 5
    assert prediction.top_predictions[0]["class_id"] == prediction.class_id
    assert prediction.model_version == active_model
    assert all(
        v is not None and v >= 0
        for v in (prediction.queue_ms, prediction.preprocess_ms, prediction.inference_ms, prediction.total_ms)
    )
    assert prediction.started_at <= prediction.completed_at
    assert prediction.attempts == 1


def test_a_second_delivery_of_a_finished_prediction_does_nothing(user, active_model):
    prediction = services.prediction_create(user=user, uploaded_file=_upload(photo_bytes("coffee")))
    services.prediction_process(prediction_id=prediction.id)
    first = Prediction.objects.get(id=prediction.id)

    services.prediction_process(prediction_id=prediction.id)

    again = Prediction.objects.get(id=prediction.id)
    assert again.completed_at == first.completed_at
    assert again.attempts == 1


def test_missing_image_file_fails_with_a_reason(user, active_model):
    prediction = PredictionFactory(user=user)
    Path(prediction.image.path).unlink()

    services.prediction_process(prediction_id=prediction.id)

    prediction.refresh_from_db()
    assert prediction.status == PredictionStatus.FAILED
    assert "missing" in prediction.error


def test_task_failure_marks_prediction_failed(user):
    from predictions.tasks import PredictionTask

    prediction = PredictionFactory(user=user)
    PredictionTask().on_failure(RuntimeError("boom"), "task-id", [str(prediction.id)], {}, None)

    prediction.refresh_from_db()
    assert prediction.status == PredictionStatus.FAILED
    assert "boom" in prediction.error


def test_delete_removes_row_and_file(user, django_capture_on_commit_callbacks):
    prediction = PredictionFactory(user=user)
    path = Path(prediction.image.path)

    with django_capture_on_commit_callbacks(execute=True):
        services.prediction_delete(prediction=prediction)

    assert not Prediction.objects.filter(id=prediction.id).exists()
    assert not path.exists()


def test_reconcile_resends_only_old_unfinished_predictions(user, monkeypatch):
    sent = []
    monkeypatch.setattr(services, "prediction_enqueue", lambda *, prediction_id: sent.append(prediction_id) or True)
    old = PredictionFactory(user=user)
    Prediction.objects.filter(id=old.id).update(created_at=old.created_at.replace(year=2020))
    PredictionFactory(user=user)  # fresh: not stuck yet
    done = PredictionFactory(user=user, status=PredictionStatus.FAILED)
    Prediction.objects.filter(id=done.id).update(created_at=old.created_at.replace(year=2020))

    assert services.prediction_reconcile(older_than_seconds=60) == 1
    assert sent == [old.id]


def test_enqueue_with_broker_down_leaves_row_pending(user, monkeypatch):
    from kombu.exceptions import OperationalError

    from predictions import tasks

    def refuse(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(tasks.prediction_run, "apply_async", refuse)
    prediction = PredictionFactory(user=user)

    assert services.prediction_enqueue(prediction_id=prediction.id) is False
    prediction.refresh_from_db()
    assert prediction.status == PredictionStatus.PENDING


def test_model_versions_sync_from_disk_and_activate(db, model_dir):
    found = services.model_version_sync()

    assert ("efficientnet_lite0", "1") in [(v.name, v.version) for v in found]
    assert services.model_version_get_or_sync_active().metadata["input_size"] == 224


def test_reconcile_resends_running_predictions_whose_worker_died(user, monkeypatch):
    from datetime import timedelta

    from django.utils import timezone

    sent = []
    monkeypatch.setattr(services, "prediction_enqueue", lambda *, prediction_id: sent.append(prediction_id) or True)
    long_ago = timezone.now() - timedelta(minutes=30)
    dead = PredictionFactory(user=user, status=PredictionStatus.RUNNING, started_at=long_ago)
    PredictionFactory(user=user, status=PredictionStatus.RUNNING, started_at=timezone.now())  # still working

    assert services.prediction_reconcile(older_than_seconds=60) == 1
    assert sent == [dead.id]


def test_a_prediction_that_keeps_killing_workers_is_failed_after_max_attempts(user, settings):
    from datetime import timedelta

    from django.utils import timezone

    settings.MAX_ATTEMPTS = 3
    prediction = PredictionFactory(
        user=user, status=PredictionStatus.RUNNING, attempts=3, started_at=timezone.now() - timedelta(hours=1)
    )

    assert services.prediction_start(prediction_id=prediction.id) is None

    prediction.refresh_from_db()
    assert prediction.status == PredictionStatus.FAILED
    assert "Gave up after 3 attempts" in prediction.error


def test_a_running_prediction_is_not_claimed_twice_while_its_worker_is_alive(user):
    from django.utils import timezone

    prediction = PredictionFactory(user=user, status=PredictionStatus.RUNNING, attempts=1, started_at=timezone.now())

    assert services.prediction_start(prediction_id=prediction.id) is None
    prediction.refresh_from_db()
    assert prediction.status == PredictionStatus.RUNNING and prediction.attempts == 1

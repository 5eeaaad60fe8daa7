"""The service layer: what is written, when it is queued, and that each image ends final."""

from __future__ import annotations

from pathlib import Path
from typing import IO, NoReturn

import numpy as np
import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from pytest_django import DjangoCaptureOnCommitCallbacks, Settings

from predictions import images, services
from predictions.exceptions import ApplicationError, ImageTooLargeError, InvalidImageError, UnsupportedImageError
from predictions.models import ModelVersion, Prediction, PredictionId, PredictionStatus
from predictions.registry import runtime
from predictions.registry import selectors as registry_selectors
from predictions.registry import services as registry_services
from predictions.services import batches, submissions
from tests.conftest import CAT_CLASSES, photo_bytes
from tests.factories import PredictionFactory


def _upload(content: bytes, name: str = "cat.jpg") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type="image/jpeg")


def _media_files(media_dir: Path) -> list[Path]:
    return [p for p in media_dir.rglob("*") if p.is_file()]


def test_create_stores_row_and_file_then_queues_after_commit(
    user: User,
    media_dir: Path,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
    sent: list[PredictionId],
) -> None:
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
    assert prediction.id.hex in stored.name
    assert ".." not in str(prediction.image)


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"", InvalidImageError),
        (b"%PDF-1.4 not an image", UnsupportedImageError),
        (photo_bytes("chelsea")[:4000], InvalidImageError),
    ],
    ids=["empty", "pdf", "truncated-jpeg"],
)
def test_bad_upload_writes_nothing(user: User, media_dir: Path, content: bytes, error: type[ApplicationError]) -> None:
    before = set(_media_files(media_dir))

    with pytest.raises(error) as raised:
        services.prediction_create(user=user, uploaded_file=_upload(content))

    assert raised.value.message
    assert Prediction.objects.count() == 0
    assert set(_media_files(media_dir)) == before


def test_file_over_the_limit_is_413(user: User, settings: Settings) -> None:
    settings.MAX_UPLOAD_BYTES = 1000

    with pytest.raises(ImageTooLargeError) as raised:
        services.prediction_create(user=user, uploaded_file=_upload(photo_bytes("chelsea")))

    assert raised.value.status_code == 413
    assert Prediction.objects.count() == 0


def test_create_many_keeps_good_files_when_one_is_bad(user: User) -> None:
    outcomes = services.prediction_create_many(
        user=user, uploaded_files=[_upload(photo_bytes("coffee")), _upload(b"junk", "x.png")]
    )

    assert outcomes[0].prediction is not None
    assert outcomes[0].error is None
    assert outcomes[1].prediction is None
    assert outcomes[1].filename == "x.png"
    assert Prediction.objects.count() == 1


def test_process_stores_label_timings_and_model_version(user: User, active_model: ModelVersion) -> None:
    prediction = services.prediction_create(user=user, uploaded_file=_upload(photo_bytes("chelsea")))

    services.prediction_process(prediction_id=prediction.id)

    prediction.refresh_from_db()
    assert prediction.status == PredictionStatus.SUCCEEDED
    assert prediction.class_id in CAT_CLASSES
    assert prediction.label
    assert prediction.confidence is not None
    assert 0 < prediction.confidence <= 1
    assert len(prediction.top_predictions) == 5
    assert prediction.top_predictions[0]["class_id"] == prediction.class_id
    assert prediction.model_version == active_model
    assert all(
        v is not None and v >= 0
        for v in (prediction.queue_ms, prediction.preprocess_ms, prediction.inference_ms, prediction.total_ms)
    )
    assert prediction.started_at is not None
    assert prediction.completed_at is not None
    assert prediction.started_at <= prediction.completed_at
    assert prediction.attempts == 1


def test_a_second_delivery_of_a_finished_prediction_does_nothing(user: User, active_model: ModelVersion) -> None:
    prediction = services.prediction_create(user=user, uploaded_file=_upload(photo_bytes("coffee")))
    services.prediction_process(prediction_id=prediction.id)
    first = Prediction.objects.get(id=prediction.id)

    services.prediction_process(prediction_id=prediction.id)

    again = Prediction.objects.get(id=prediction.id)
    assert again.completed_at == first.completed_at
    assert again.attempts == 1


def test_missing_image_file_fails_with_a_reason(user: User, active_model: ModelVersion) -> None:
    prediction = PredictionFactory.create(user=user)
    Path(prediction.image.path).unlink()

    services.prediction_process(prediction_id=prediction.id)

    prediction.refresh_from_db()
    assert prediction.status == PredictionStatus.FAILED
    assert prediction.error == services.MISSING_FILE_MESSAGE


def test_task_failure_marks_prediction_failed(user: User) -> None:
    from predictions.tasks import PredictionTask

    prediction = PredictionFactory.create(user=user)
    PredictionTask().on_failure(RuntimeError("boom"), "task-id", [str(prediction.id)], {}, None)

    prediction.refresh_from_db()
    assert prediction.status == PredictionStatus.FAILED
    assert prediction.error == services.FAILED_SERVER_MESSAGE  # for people; "boom" goes to the log


def test_delete_removes_row_and_file(
    user: User, django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks
) -> None:
    prediction = PredictionFactory.create(user=user)
    path = Path(prediction.image.path)

    with django_capture_on_commit_callbacks(execute=True):
        services.prediction_delete(prediction=prediction)

    assert not Prediction.objects.filter(id=prediction.id).exists()
    assert not path.exists()


def test_reconcile_resends_only_old_unfinished_predictions(user: User, sent: list[PredictionId]) -> None:
    old = PredictionFactory.create(user=user)
    Prediction.objects.filter(id=old.id).update(created_at=old.created_at.replace(year=2020))
    PredictionFactory.create(user=user)  # fresh: not stuck yet
    done = PredictionFactory.create(user=user, status=PredictionStatus.FAILED)
    Prediction.objects.filter(id=done.id).update(created_at=old.created_at.replace(year=2020))

    assert services.prediction_reconcile(older_than_seconds=60) == 1
    assert sent == [old.id]


def test_enqueue_with_broker_down_leaves_the_row_to_the_reconciler(user: User, monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import timedelta

    from django.utils import timezone
    from kombu.exceptions import OperationalError

    from predictions import tasks

    def refuse(*args: object, **kwargs: object) -> NoReturn:
        raise OperationalError("connection refused")

    monkeypatch.setattr(tasks.prediction_run, "apply_async", refuse)
    prediction = PredictionFactory.create(user=user, enqueued_at=timezone.now())  # as if sent a moment ago
    Prediction.objects.filter(id=prediction.id).update(created_at=timezone.now() - timedelta(minutes=30))

    assert services.prediction_enqueue(prediction_id=prediction.id) is False

    # Once the broker is back, the next reconcile sends it (a row sent a moment ago would wait).
    sent = []
    monkeypatch.setattr(tasks.prediction_run, "apply_async", lambda *args, **kwargs: sent.append(args))
    assert services.prediction_reconcile(older_than_seconds=60) == 1
    assert sent == [((str(prediction.id),), {})]


def test_model_versions_sync_from_disk_and_activate(db: None, model_dir: Path) -> None:
    found = registry_services.model_version_sync()

    assert ("efficientnet_lite0", "1") in [(v.name, v.version) for v in found]
    assert registry_selectors.model_version_active_get().metadata["input_size"] == 224


def test_reconcile_resends_running_predictions_whose_worker_died(user: User, sent: list[PredictionId]) -> None:
    from datetime import timedelta

    from django.utils import timezone

    long_ago = timezone.now() - timedelta(minutes=30)
    dead = PredictionFactory.create(user=user, status=PredictionStatus.RUNNING, started_at=long_ago)
    PredictionFactory.create(user=user, status=PredictionStatus.RUNNING, started_at=timezone.now())  # still working

    assert services.prediction_reconcile(older_than_seconds=60) == 1
    assert sent == [dead.id]


def test_a_prediction_that_keeps_killing_workers_is_failed_after_max_attempts(user: User, settings: Settings) -> None:
    from datetime import timedelta

    from django.utils import timezone

    settings.MAX_ATTEMPTS = 3
    prediction = PredictionFactory.create(
        user=user, status=PredictionStatus.RUNNING, attempts=3, started_at=timezone.now() - timedelta(hours=1)
    )

    assert services.prediction_claim(prediction_id=prediction.id)[1] == []

    prediction.refresh_from_db()
    assert prediction.status == PredictionStatus.FAILED
    assert "Gave up after 3 attempts" in prediction.error


def test_a_running_prediction_is_not_claimed_twice_while_its_worker_is_alive(user: User) -> None:
    from django.utils import timezone

    prediction = PredictionFactory.create(
        user=user, status=PredictionStatus.RUNNING, attempts=1, started_at=timezone.now()
    )

    assert services.prediction_claim(prediction_id=prediction.id, batch_size=8)[1] == []
    prediction.refresh_from_db()
    assert prediction.status == PredictionStatus.RUNNING
    assert prediction.attempts == 1


# --- Micro-batching, claims, the duplicate-result cache, thumbnails -----------------------


def _photo_upload(name: str, image_format: str = "JPEG") -> SimpleUploadedFile:
    return _upload(photo_bytes(name, image_format), f"{name}.{image_format.lower()}")


def test_one_message_classifies_every_waiting_image_in_one_batch(
    user: User, active_model: ModelVersion, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = [
        services.prediction_create(user=user, uploaded_file=_photo_upload(name))
        for name in ("chelsea", "coffee", "rocket", "motorcycle")
    ]
    calls = []
    classifier = runtime.classifier_for(model_version=active_model)
    real_predict = classifier.predict

    def predict(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return real_predict(batch)

    monkeypatch.setattr(classifier, "predict", predict)

    report = services.prediction_process(prediction_id=created[0].id)

    assert calls == [4]  # one model call for the four images
    assert report is not None
    assert report.size == 4
    assert report.succeeded == 4
    rows = {p.id: p for p in Prediction.objects.all()}
    assert rows[created[0].id].class_id in CAT_CLASSES
    assert all(p.status == PredictionStatus.SUCCEEDED and p.attempts == 1 for p in rows.values())
    assert all((p.preprocess_ms or 0) > 0 and (p.inference_ms or 0) > 0 for p in rows.values())
    assert all(p.queue_ms is not None and p.queue_ms >= 0 for p in rows.values())
    # The later messages of the batched images find them done and do nothing.
    assert services.prediction_process(prediction_id=created[3].id) is None
    assert Prediction.objects.get(id=created[3].id).attempts == 1


def test_batch_size_bounds_what_one_message_takes(user: User, active_model: ModelVersion, settings: Settings) -> None:
    settings.INFERENCE_BATCH_SIZE = 2
    created = [services.prediction_create(user=user, uploaded_file=_photo_upload(n)) for n in ("chelsea", "coffee")]
    created.append(services.prediction_create(user=user, uploaded_file=_photo_upload("rocket")))

    report = services.prediction_process(prediction_id=created[2].id)

    assert report is not None
    assert report.size == 2
    statuses = dict(Prediction.objects.values_list("id", "status"))
    # Its own image first, then the oldest one waiting.
    assert statuses[created[2].id] == statuses[created[0].id] == PredictionStatus.SUCCEEDED
    assert statuses[created[1].id] == PredictionStatus.PENDING


def test_a_row_claimed_again_by_another_worker_is_not_completed_by_the_first(
    user: User, active_model: ModelVersion
) -> None:
    prediction = services.prediction_create(user=user, uploaded_file=_photo_upload("coffee"))
    token, claimed = services.prediction_claim(prediction_id=prediction.id)
    Prediction.objects.filter(id=prediction.id).update(claim=None)  # someone else's claim now

    stored = services.prediction_complete_many(predictions=claimed, token=token, model_version=active_model)

    assert stored == []
    assert Prediction.objects.get(id=prediction.id).status == PredictionStatus.RUNNING


def test_damaged_pixel_data_ends_failed_with_a_reason_for_people(user: User, active_model: ModelVersion) -> None:
    png = photo_bytes("chelsea", "PNG")
    middle = len(png) // 2
    damaged = png[:middle] + bytes(2000) + png[middle + 2000 :]  # header and end intact, pixel data zeroed
    prediction = services.prediction_create(user=user, uploaded_file=_upload(damaged, "damaged.png"))
    assert prediction.status == PredictionStatus.PENDING

    services.prediction_process(prediction_id=prediction.id)

    prediction.refresh_from_db()
    assert prediction.status == PredictionStatus.FAILED
    assert prediction.error.startswith("The image is damaged or incomplete")
    assert "/" not in prediction.error  # no server paths or library messages


def test_database_error_hands_the_batch_back_and_resends_the_borrowed_ones(
    user: User, active_model: ModelVersion, monkeypatch: pytest.MonkeyPatch, sent: list[PredictionId]
) -> None:
    from django.db import OperationalError

    created = [services.prediction_create(user=user, uploaded_file=_photo_upload(n)) for n in ("chelsea", "coffee")]

    def broken(**kwargs: object) -> NoReturn:
        raise OperationalError("server closed the connection")

    monkeypatch.setattr(batches, "prediction_complete_many", broken)
    with pytest.raises(OperationalError):
        services.prediction_process(prediction_id=created[1].id)

    assert set(Prediction.objects.values_list("status", flat=True)) == {PredictionStatus.PENDING}
    assert sent == [created[0].id]  # the lead's own message is retried by Celery


def test_same_bytes_reuse_the_stored_result_without_the_model(
    user: User, active_model: ModelVersion, sent: list[PredictionId]
) -> None:
    first = services.prediction_create(user=user, uploaded_file=_photo_upload("chelsea"))
    services.prediction_process(prediction_id=first.id)
    first.refresh_from_db()

    again = services.prediction_create(user=user, uploaded_file=_photo_upload("chelsea"), top_k=3)

    assert again.status == PredictionStatus.SUCCEEDED
    assert again.cached
    assert (again.label, again.class_id, again.confidence) == (first.label, first.class_id, first.confidence)
    assert again.top_predictions == first.top_predictions[:3]
    assert again.model_version_id == active_model.id
    assert Path(again.image.path).exists()
    assert sent == []  # nothing queued, the model never ran
    # A wider top-k than stored, another user, or the cache turned off: classified afresh.
    assert services.prediction_create(user=user, uploaded_file=_photo_upload("chelsea"), top_k=10).cached is False


def test_result_cache_is_per_user_unless_widened_or_off(
    user: User, active_model: ModelVersion, settings: Settings
) -> None:
    from tests.factories import UserFactory

    first = services.prediction_create(user=user, uploaded_file=_photo_upload("coffee"))
    services.prediction_process(prediction_id=first.id)
    other = UserFactory.create()

    assert services.prediction_create(user=other, uploaded_file=_photo_upload("coffee")).cached is False
    settings.RESULT_CACHE = "all"
    assert services.prediction_create(user=other, uploaded_file=_photo_upload("coffee")).cached is True
    settings.RESULT_CACHE = "off"
    assert services.prediction_create(user=user, uploaded_file=_photo_upload("coffee")).cached is False


def test_a_batch_stores_thumbnails_made_from_the_pixels_it_decoded_once(
    user: User, active_model: ModelVersion, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    created = [
        services.prediction_create(user=user, uploaded_file=_photo_upload(name)) for name in ("chelsea", "rocket")
    ]
    decoded = []
    real_open = Image.open

    def counting_open(*args: object, **kwargs: object) -> Image.Image:
        decoded.append(args[0])
        return real_open(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Image, "open", counting_open)

    services.prediction_process(prediction_id=created[0].id)

    assert len(decoded) == 2  # one decode per image: the thumbnail is made from the model's pixels
    for prediction in Prediction.objects.filter(id__in=[p.id for p in created]):
        assert prediction.status == PredictionStatus.SUCCEEDED
        with real_open(prediction.image.path) as original:
            width, height = original.size
        with real_open(prediction.thumbnail.path) as thumb:
            assert thumb.format == "JPEG"
            assert max(thumb.size) == images.THUMBNAIL_SIZE
            assert abs(thumb.size[0] / thumb.size[1] - width / height) < 0.02  # the photo's shape, not the crop's


def test_thumbnail_is_made_once_and_stored(user: User, monkeypatch: pytest.MonkeyPatch) -> None:
    prediction = services.prediction_create(user=user, uploaded_file=_photo_upload("rocket"))
    made = []

    def thumbnail_jpeg(source: str | IO[bytes]) -> bytes:
        made.append(source)
        return images.thumbnail_jpeg(source)

    monkeypatch.setattr(submissions, "thumbnail_jpeg", thumbnail_jpeg)

    name = services.prediction_thumbnail(prediction=prediction)
    again = services.prediction_thumbnail(prediction=Prediction.objects.get(id=prediction.id))

    assert name == again
    assert len(made) == 1
    from PIL import Image

    with Image.open(prediction.thumbnail.storage.path(name)) as thumb:
        assert thumb.format == "JPEG"
        assert max(thumb.size) <= 160

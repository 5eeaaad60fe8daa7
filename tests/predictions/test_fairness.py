"""Fair to every user (issue 21, item 5): batches drawn round-robin across users with a
per-user limit on what is in flight, a decode-cost budget read from each upload's header,
and page uploads and explanation requests throttled like API submissions."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Sequence
from datetime import timedelta

import numpy as np
import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from numpy.typing import NDArray
from PIL import Image, ImageFile
from pytest_django import Settings
from rest_framework.test import APIClient

from ml.decoding import ImageTooCostlyError, decode_cost
from ml.preprocessing import open_rgb
from predictions import selectors, services
from predictions.models import ExplanationStatus, ModelVersion, Prediction, PredictionId, PredictionStatus
from predictions.services.batches import DEFER_SECONDS
from tests.conftest import CAT_CLASSES, PHOTOS, photo_bytes
from tests.factories import PredictionFactory, SucceededPredictionFactory, UserFactory, jpeg_bytes

MIB = 1024 * 1024


def png16_bytes(pixels: NDArray[np.uint16], *, level: int = 1) -> bytes:
    """A 16-bit PNG (grey, RGB or RGBA by the last axis) written row by row, as a
    scanner or an image editor would save one; Pillow can read but not write these."""
    height, width, bands = pixels.shape
    color_type = {1: 0, 3: 2, 4: 6}[bands]
    compressor = zlib.compressobj(level)
    chunks, above = [], np.zeros(width * bands * 2, np.uint8)
    for row in range(height):
        raw = np.frombuffer(pixels[row].astype(">u2").tobytes(), np.uint8)
        chunks.append(compressor.compress(b"\x02" + (raw - above).tobytes()))  # filter "Up": bytes minus the row above
        above = raw
    idat = b"".join(chunks) + compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def photo_rgba16(side: int, *, photo: str = "coffee", mark: int = 0) -> NDArray[np.uint16]:
    """A real photo of scikit-image scaled up to ``side`` x ``side`` (nearest), 16-bit RGBA,
    opaque; ``mark`` changes one pixel so that each copy has its own bytes."""
    with Image.open(PHOTOS[photo].path) as image:
        source = np.asarray(image.convert("RGB"))
    rows = np.arange(side) * source.shape[0] // side
    cols = np.arange(side) * source.shape[1] // side
    rgb = source[rows][:, cols].astype(np.uint16) * 257
    pixels = np.concatenate([rgb, np.full((side, side, 1), 65535, np.uint16)], axis=2)
    pixels[0, 0, 0] = mark
    return pixels


@pytest.fixture(scope="module")
def issue_png() -> bytes:
    """The image of the issue: 7000 x 7000 pixels, 16-bit RGBA, under every size limit."""
    return png16_bytes(photo_rgba16(7000), level=6)


def _upload(content: bytes, name: str = "photo.png") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content)


def _pending(user: User, count: int, *, start: int, decode_bytes: int = 0) -> list[Prediction]:
    base = timezone.now() - timedelta(minutes=10)
    return [
        PredictionFactory.create(user=user, created_at=base + timedelta(seconds=start + i), decode_bytes=decode_bytes)
        for i in range(count)
    ]


# --- The fair draw (the worker's claim), on the configured database ---------------------


@pytest.mark.django_db
def test_pending_predictions_are_drawn_round_robin_across_users(settings: Settings) -> None:
    settings.INFLIGHT_PER_USER = 8
    flooder, second, third = UserFactory.create_batch(3)
    a = _pending(flooder, 5, start=0)  # the oldest five are all one user's
    b = _pending(second, 3, start=10)
    c = _pending(third, 1, start=20)

    order = [row.id for row in selectors.prediction_pending_fair(limit=20, per_user=8)]

    assert order == [p.id for p in (a[0], b[0], c[0], a[1], b[1], a[2], b[2], a[3], a[4])]


@pytest.mark.django_db
def test_a_batch_seats_the_other_users_before_the_flooders_backlog(
    settings: Settings, sent: list[PredictionId]
) -> None:
    settings.INFLIGHT_PER_USER = 8
    flooder, second, third = UserFactory.create_batch(3)
    a = _pending(flooder, 10, start=0)
    b = _pending(second, 2, start=30)
    c = _pending(third, 1, start=40)

    _, claimed = services.prediction_claim(prediction_id=a[0].id, batch_size=5)

    # Oldest first would have claimed a[0]..a[4]; the fair draw takes each user's oldest.
    assert {p.id for p in claimed} == {a[0].id, a[1].id, b[0].id, c[0].id, b[1].id}
    assert all(p.status == PredictionStatus.RUNNING for p in claimed)


@pytest.mark.django_db
def test_no_user_has_more_than_the_limit_in_flight(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from predictions.services import batches

    sent: list[tuple[PredictionId, float | None]] = []

    def enqueue(
        *, prediction_id: PredictionId, countdown: float | None = None, chunk: Sequence[PredictionId] = ()
    ) -> bool:
        sent.append((prediction_id, countdown))
        return True

    monkeypatch.setattr(batches, "prediction_enqueue", enqueue)
    settings.INFLIGHT_PER_USER = 3
    flooder, other = UserFactory.create_batch(2)
    a = _pending(flooder, 8, start=0)
    b = _pending(other, 1, start=30)

    _, first = services.prediction_claim(prediction_id=a[0].id, batch_size=16)
    assert sorted(p.id for p in first if p.user_id == flooder.id) == sorted(p.id for p in a[:3])
    assert b[0].id in {p.id for p in first}

    # Another worker's message for one of the flooder's rows, while three are running:
    # nothing is claimed, and the message is sent again for later.
    _, second = services.prediction_claim(prediction_id=a[3].id, batch_size=16)
    assert second == []
    assert sent == [(a[3].id, DEFER_SECONDS)]
    assert Prediction.objects.get(id=a[3].id).status == PredictionStatus.PENDING
    running = Prediction.objects.filter(user=flooder, status=PredictionStatus.RUNNING).count()
    assert running == 3


@pytest.mark.django_db
def test_costly_images_are_batched_one_at_a_time_and_cheap_ones_of_others_join(
    settings: Settings, sent: list[PredictionId]
) -> None:
    settings.INFLIGHT_PER_USER = 8
    settings.MAX_DECODE_BYTES = 64 * MIB
    flooder, other = UserFactory.create_batch(2)
    a = _pending(flooder, 6, start=0, decode_bytes=60 * MIB)
    b = _pending(other, 1, start=30, decode_bytes=MIB)

    _, claimed = services.prediction_claim(prediction_id=a[0].id, batch_size=16)

    assert {p.id for p in claimed} == {a[0].id, b[0].id}


@pytest.mark.django_db
def test_cheap_images_of_one_user_still_share_a_batch(settings: Settings, sent: list[PredictionId]) -> None:
    settings.INFLIGHT_PER_USER = 8
    user = UserFactory.create()
    rows = _pending(user, 6, start=0, decode_bytes=MIB)

    _, claimed = services.prediction_claim(prediction_id=rows[0].id, batch_size=16)

    assert {p.id for p in claimed} == {p.id for p in rows}


# --- The decode budget --------------------------------------------------------------------


def test_the_header_gives_the_decode_cost_of_a_16_bit_rgba_png(issue_png: bytes) -> None:
    with Image.open(io.BytesIO(issue_png)) as image:
        cost = decode_cost(image)
        assert image.mode == "RGBA"  # Pillow hands out 8 bits...

    assert (cost.width, cost.height, cost.bands, cost.bits) == (7000, 7000, 4, 16)  # ...but inflates 16
    assert cost.bytes == 7000 * 7000 * 8


@pytest.mark.django_db
def test_the_issues_16_bit_png_is_refused_at_upload_without_being_decoded(
    issue_png: bytes, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert len(issue_png) < 20 * MIB  # under the upload limit, as in the issue

    def decode(self: ImageFile.ImageFile) -> None:
        raise AssertionError("the upload check decoded the pixels")

    monkeypatch.setattr(ImageFile.ImageFile, "load", decode)
    api = APIClient()
    api.force_authenticate(user)
    response = api.post("/api/v1/predictions/", {"image": _upload(issue_png, "huge.png")}, format="multipart")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "image_too_costly"
    assert error["field"] == "image"
    assert "7000 x 7000 pixels, 4 channels of 16 bits" in error["message"]
    assert "374 MB" in error["message"]
    assert Prediction.objects.count() == 0


def test_the_worker_refuses_a_costly_png_before_decoding(issue_png: bytes) -> None:
    with pytest.raises(ImageTooCostlyError, match="limit is 64 MB"):
        open_rgb(issue_png, max_decode_bytes=64 * MIB)


def _big_jpeg(width: int, height: int) -> bytes:
    with Image.open(PHOTOS["chelsea"].path) as source:
        photo = source.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


@pytest.mark.django_db
def test_a_jpeg_over_the_budget_is_accepted_and_decoded_reduced(user: User, settings: Settings) -> None:
    settings.MAX_DECODE_BYTES = 64 * MIB
    content = _big_jpeg(6000, 4000)  # 72 MB decoded in full

    prediction = services.prediction_create(user=user, uploaded_file=_upload(content, "camera.jpg"))

    assert (prediction.width, prediction.height) == (6000, 4000)
    assert prediction.decode_bytes == 3000 * 2000 * 3  # what the worker will decode: half scale
    decoded = open_rgb(content, max_decode_bytes=settings.MAX_DECODE_BYTES)
    assert decoded.size == (3000, 2000)


@pytest.mark.django_db
def test_a_costly_image_already_stored_fails_with_the_reason_in_the_worker(
    user: User, settings: Settings, active_model: ModelVersion
) -> None:
    prediction = services.prediction_create(user=user, uploaded_file=_upload(png16_bytes(photo_rgba16(1200))))
    settings.MAX_DECODE_BYTES = 4 * MIB  # lowered after the upload was accepted

    services.prediction_process(prediction_id=prediction.id)

    prediction.refresh_from_db()
    assert prediction.status == PredictionStatus.FAILED
    assert "1200 x 1200 pixels, 4 channels of 16 bits" in prediction.error


# --- Pages and explanations throttled like the API ---------------------------------------


@pytest.fixture
def submit_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    from predictions.api.throttles import SubmitRateThrottle

    monkeypatch.setattr(SubmitRateThrottle, "THROTTLE_RATES", {"submit": "3/min"})


@pytest.mark.django_db
def test_page_uploads_count_against_the_api_submission_rate(submit_rate: None, user: User, client: Client) -> None:
    client.force_login(user)
    api = APIClient()
    api.force_authenticate(user)
    assert api.post("/api/v1/predictions/", {"image": _upload(jpeg_bytes(), "a.jpg")}).status_code == 202

    pages = [
        client.post(
            reverse("predictions:upload"), {"images": [_upload(jpeg_bytes(color=(i, 9, 9)), "b.jpg")], "top_k": 5}
        )
        for i in range(3)
    ]

    assert [page.status_code for page in pages] == [302, 302, 429]
    refused = pages[-1]
    assert int(refused["Retry-After"]) >= 1
    assert "Too many submissions" in refused.content.decode()
    assert Prediction.objects.filter(user=user).count() == 3


@pytest.mark.django_db
def test_the_upload_pages_script_gets_the_429_as_a_refusal_it_shows(
    submit_rate: None, user: User, client: Client
) -> None:
    client.force_login(user)
    for i in range(3):
        client.post(
            reverse("predictions:upload"), {"images": [_upload(jpeg_bytes(color=(i, 1, 1)), "c.jpg")], "top_k": 5}
        )

    answer = client.post(
        reverse("predictions:upload"),
        {"images": [_upload(jpeg_bytes(), "d.jpg")], "top_k": 5},
        HTTP_X_REQUESTED_WITH="fetch",
    )

    assert answer.status_code == 429
    assert 'class="error upload-error"' in answer.content.decode()
    assert "Try again in" in answer.content.decode()


@pytest.mark.django_db
def test_explanation_requests_on_the_page_are_throttled(submit_rate: None, user: User, client: Client) -> None:
    client.force_login(user)
    prediction = SucceededPredictionFactory.create(user=user)
    url = reverse("predictions:explain", args=[prediction.id])

    statuses = [client.post(url, {"class_id": prediction.class_id}).status_code for _ in range(4)]

    assert statuses == [302, 302, 302, 429]


@pytest.mark.django_db
def test_one_user_cannot_queue_more_explanations_than_the_limit(
    user: User, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from predictions.explanations import services as explanations

    settings.EXPLANATIONS_PENDING_PER_USER = 2
    monkeypatch.setattr(explanations, "explanation_enqueue", lambda *, explanation_id: True)
    api = APIClient()
    api.force_authenticate(user)
    predictions = SucceededPredictionFactory.create_batch(3, user=user)
    other = SucceededPredictionFactory.create()

    answers = [api.post(f"/api/v1/predictions/{p.id}/explanation/") for p in predictions]

    assert [a.status_code for a in answers] == [202, 202, 429]
    assert answers[2].json()["error"]["code"] == "throttled"
    assert answers[2]["Retry-After"]
    assert "at most 2 at a time" in answers[2].json()["error"]["message"]
    # Asking again for one already queued is not one more, and other users are not held.
    assert api.post(f"/api/v1/predictions/{predictions[0].id}/explanation/").status_code == 202
    other_api = APIClient()
    other_api.force_authenticate(other.user)
    assert other_api.post(f"/api/v1/predictions/{other.id}/explanation/").status_code == 202
    assert predictions[0].explanations.get().status == ExplanationStatus.PENDING


@pytest.mark.django_db
def test_a_batch_runs_the_light_photos_before_a_costly_image(
    settings: Settings, active_model: ModelVersion, sent: list[PredictionId]
) -> None:
    settings.MAX_DECODE_BYTES = 16 * MIB
    flooder, photographer = UserFactory.create_batch(2)
    costly = services.prediction_create(
        user=flooder, uploaded_file=_upload(png16_bytes(photo_rgba16(1200, photo="rocket")), "scan.png")
    )
    photo = services.prediction_create(user=photographer, uploaded_file=_upload(photo_bytes("chelsea"), "cat.jpg"))

    report = services.prediction_process(prediction_id=costly.id)  # the flooder's message, claimed first

    assert report is not None
    assert report.size == 2
    costly.refresh_from_db()
    photo.refresh_from_db()
    assert costly.status == photo.status == PredictionStatus.SUCCEEDED
    assert photo.class_id in CAT_CLASSES
    assert costly.claim == photo.claim  # one batch...
    assert photo.completed_at is not None
    assert costly.completed_at is not None
    assert photo.completed_at < costly.completed_at  # ...whose light photo was stored first

"""Direct uploads against a real SeaweedFS: ask for a presigned PUT, PUT the photo to the
store over HTTP (the web process never sees it), commit, and the worker classifies it;
every refusal answers a clear 4xx and writes no row; local media answer 409."""

from __future__ import annotations

import hashlib
import io
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image
from pytest_django import DjangoCaptureOnCommitCallbacks, Settings
from rest_framework.test import APIClient

from imagerec.storage import LOCAL_MEDIA_BACKEND
from predictions import services
from predictions.models import ModelVersion, Prediction, PredictionId, PredictionStatus
from predictions.services import uploads
from tests.conftest import CAT_CLASSES, api_as, photo_bytes
from tests.seaweedfs import S3Server

pytestmark = pytest.mark.storage

UPLOADS_URL = "/api/v1/uploads/"
LIST_URL = "/api/v1/predictions/"


def _keys(server: S3Server) -> set[str]:
    """Every object in the bucket, read with boto3 directly (not through the app)."""
    client = server.client()
    keys: set[str] = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=server.bucket):
        keys |= {entry["Key"] for entry in page.get("Contents", [])}
    return keys


def _presign(api: APIClient, content: bytes, content_type: str = "image/jpeg", **extra: Any) -> dict[str, Any]:
    response = api.post(
        UPLOADS_URL, {"filename": "cat.jpg", "content_type": content_type, "size": len(content), **extra}, format="json"
    )
    assert response.status_code == 201, response.content
    body: dict[str, Any] = response.json()
    return body


def _key(upload: dict[str, Any]) -> str:
    """The object key the presigned URL names (path-style: /<bucket>/<key>)."""
    return str(upload["url"].split("?", 1)[0].split("/", 4)[4])


def _put(upload: dict[str, Any], content: bytes, headers: dict[str, str] | None = None) -> int:
    """The client's PUT, over HTTP to the store itself."""
    request = urllib.request.Request(
        upload["url"], data=content, method=upload["method"], headers=headers or upload["headers"]
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def _commit(api: APIClient, upload: dict[str, Any], query: str = "") -> Any:
    return api.post(f"{UPLOADS_URL}{upload['id']}/commit/{query}")


def _error(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.content
    assert response.json()["error"]["code"] == code


def test_a_photo_put_straight_to_the_store_is_committed_and_classified(
    s3_media: S3Server,
    user: User,
    active_model: ModelVersion,
    media_dir: Path,
    sent: list[PredictionId],
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    content = photo_bytes("chelsea")
    before = {path for path in media_dir.rglob("*") if path.is_file()}
    api = api_as(user)

    upload = _presign(api, content, top_k=3)
    assert upload["headers"] == {
        "Content-Type": "image/jpeg", "Content-Length": str(len(content)), "If-None-Match": "*"
    }  # fmt: skip
    assert _put(upload, content) == 200
    with django_capture_on_commit_callbacks(execute=True):
        committed = _commit(api, upload)

    assert committed.status_code == 202, committed.content
    body = committed.json()
    assert committed["Location"] == body["url"]
    assert body["status"] == "pending"
    assert (body["image"]["width"], body["image"]["height"]) == (451, 300)  # read from the stored header
    assert body["image"]["filename"] == "cat.jpg"
    assert [str(prediction_id) for prediction_id in sent] == [body["id"]]  # queued after commit, as a submit is
    prediction = Prediction.objects.get(id=body["id"])
    assert prediction.image.name == f"uploads/direct/{user.pk}/{prediction.id.hex}.jpg"
    assert prediction.image.name in _keys(s3_media)
    assert {path for path in media_dir.rglob("*") if path.is_file()} == before  # nothing on the web host's disk

    services.prediction_process(prediction_id=prediction.id)  # the worker, run eagerly

    result = api.get(body["url"]).json()
    assert result["status"] == "succeeded"
    assert result["class_id"] in CAT_CLASSES
    assert len(result["predictions"]) == 3  # the declared top_k
    assert result["image"]["sha256"] == hashlib.sha256(content).hexdigest()  # from the worker's read
    image = api.get(result["image"]["url"])
    assert b"".join(image.streaming_content) == content  # type: ignore[attr-defined]


def test_a_waiting_commit_answers_like_a_waiting_submit(
    s3_media: S3Server, user: User, active_model: ModelVersion, sent: list[PredictionId]
) -> None:
    content = photo_bytes("chelsea")
    api = api_as(user)
    upload = _presign(api, content)
    assert _put(upload, content) == 200

    committed = _commit(api, upload, "?wait=0.2")  # no worker runs here: the wait runs out

    assert committed.status_code == 202
    assert committed["Location"] == committed.json()["url"]
    _error(_commit(api, upload, "?wait=soon"), 400, "invalid")


def test_the_store_refuses_another_size_or_type_than_was_signed(
    s3_media: S3Server, user: User, active_model: ModelVersion
) -> None:
    content = photo_bytes("chelsea")
    upload = _presign(api_as(user), content)

    signed = upload["headers"]
    assert _put(upload, content + b"more", {**signed, "Content-Length": str(len(content) + 4)}) == 403
    assert _put(upload, content, {**signed, "Content-Type": "image/png"}) == 403
    assert _put(upload, content, {k: v for k, v in signed.items() if k != "If-None-Match"}) == 403
    assert _key(upload) not in _keys(s3_media)
    assert _put(upload, content) == 200
    assert _key(upload) in _keys(s3_media)


def test_a_committed_image_cannot_be_replaced_through_its_url(
    s3_media: S3Server, user: User, active_model: ModelVersion, sent: list[PredictionId]
) -> None:
    # The URL is still good after the commit; the signed If-None-Match makes the store
    # refuse a second PUT, so the bytes the commit checked are the bytes the worker reads.
    content, other = photo_bytes("chelsea"), photo_bytes("coffee")
    api = api_as(user)
    upload = _presign(api, content)
    assert _put(upload, content) == 200
    assert _commit(api, upload).status_code == 202

    assert _put(upload, other[: len(content)]) == 412

    services.prediction_process(prediction_id=Prediction.objects.get().id)  # the worker, run eagerly
    prediction = Prediction.objects.get()
    assert prediction.sha256 == hashlib.sha256(content).hexdigest()
    assert prediction.class_id in CAT_CLASSES


def test_a_request_a_submit_would_refuse_is_refused_before_signing(
    s3_media: S3Server, user: User, settings: Settings
) -> None:
    api = api_as(user)
    declared = {"filename": "cat.jpg", "content_type": "image/jpeg", "size": 1000}

    _error(api.post(UPLOADS_URL, {**declared, "size": settings.MAX_UPLOAD_BYTES + 1}, format="json"), 413, "too_large")
    _error(api.post(UPLOADS_URL, {**declared, "content_type": "application/pdf"}, format="json"), 415,
           "unsupported_media_type")  # fmt: skip
    _error(api.post(UPLOADS_URL, {**declared, "size": 0}, format="json"), 400, "invalid_image")
    for odd in ("image/jpeg\x00", "\udb66", "   "):  # any string the schema allows: refused as a type, not a 400
        body = json.dumps({**declared, "content_type": odd})  # escaped as JSON, as a client sends it
        _error(api.post(UPLOADS_URL, body, content_type="application/json"), 415, "unsupported_media_type")
    _error(api.post(UPLOADS_URL, {**declared, "top_k": 99}, format="json"), 400, "max_value")
    _error(api.post(UPLOADS_URL, declared, format="multipart"), 415, "unsupported_media_type")
    _error(APIClient().post(UPLOADS_URL, declared, format="json"), 401, "not_authenticated")


def test_asking_for_uploads_counts_against_the_submit_rate(
    s3_media: S3Server, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    from predictions.api.throttles import SubmitRateThrottle

    monkeypatch.setattr(SubmitRateThrottle, "THROTTLE_RATES", {"submit": "2/min"})
    api = api_as(user)
    content = photo_bytes("chelsea")
    assert api.post(LIST_URL, {"image": SimpleUploadedFile("cat.jpg", content)}, format="multipart").status_code == 202
    declared = {"filename": "cat.jpg", "content_type": "image/jpeg", "size": 1000}
    assert api.post(UPLOADS_URL, declared, format="json").status_code == 201
    _error(api.post(UPLOADS_URL, declared, format="json"), 429, "throttled")  # one rate for both


def test_committing_twice_or_someone_elses_upload_is_refused(
    s3_media: S3Server, user: User, other_user: User, active_model: ModelVersion, sent: list[PredictionId]
) -> None:
    content = photo_bytes("chelsea")
    upload = _presign(api_as(user), content)
    assert _put(upload, content) == 200

    _error(_commit(api_as(other_user), upload), 404, "not_found")
    assert _commit(api_as(user), upload).status_code == 202
    _error(_commit(api_as(user), upload), 409, "already_committed")
    _error(api_as(user).post(f"{UPLOADS_URL}{upload['id']}x/commit/"), 404, "not_found")  # altered
    assert Prediction.objects.count() == 1


def test_a_commit_before_the_put_or_after_the_window_is_refused(
    s3_media: S3Server, user: User, active_model: ModelVersion, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = photo_bytes("chelsea")
    api = api_as(user)
    never_put = _presign(api, content)
    _error(_commit(api, never_put), 409, "upload_missing")

    late = _presign(api, content)
    assert _put(late, content) == 200
    later = time.time() + 3600
    monkeypatch.setattr(uploads, "time", SimpleNamespace(time=lambda: later))
    _error(_commit(api, late), 410, "upload_expired")

    assert not Prediction.objects.exists()
    assert _key(late) not in _keys(s3_media)  # the expired one deleted


@pytest.mark.parametrize(
    ("declared_type", "stored", "status", "code"),
    [
        ("image/png", photo_bytes("chelsea"), 400, "upload_mismatch"),  # a JPEG declared a PNG
        ("image/jpeg", b"%PDF-1.4 not an image at all" * 10, 415, "unsupported_media_type"),
        ("image/jpeg", photo_bytes("chelsea")[:400], 400, "invalid_image"),  # cut inside its header
    ],
)
def test_an_object_that_is_not_what_was_declared_is_refused_and_deleted(
    s3_media: S3Server, user: User, active_model: ModelVersion, declared_type: str, stored: bytes, status: int,
    code: str,
) -> None:  # fmt: skip
    api = api_as(user)
    upload = _presign(api, stored, declared_type)
    assert _put(upload, stored) == 200

    _error(_commit(api, upload), status, code)

    assert not Prediction.objects.exists()
    assert _key(upload) not in _keys(s3_media)


def test_an_object_of_another_size_than_declared_is_refused(
    s3_media: S3Server, user: User, active_model: ModelVersion
) -> None:
    content = photo_bytes("chelsea")
    api = api_as(user)
    upload = _presign(api, content)
    # A store that did not hold the client to the signed length: written past the URL.
    s3_media.client().put_object(Bucket=s3_media.bucket, Key=_key(upload), Body=content[:-10], ContentType="image/jpeg")

    _error(_commit(api, upload), 400, "upload_mismatch")
    assert not Prediction.objects.exists()


def test_uploads_never_committed_are_swept_and_committed_ones_kept(
    s3_media: S3Server, user: User, active_model: ModelVersion, sent: list[PredictionId]
) -> None:
    content = photo_bytes("chelsea")
    api = api_as(user)
    kept, abandoned = _presign(api, content), _presign(api, content)
    assert _put(kept, content) == 200
    assert _put(abandoned, content) == 200
    committed = _commit(api, kept).json()
    assert {_key(kept), _key(abandoned)} <= _keys(s3_media)

    services.direct_upload_sweep()  # within their commit window: both stay
    assert {_key(kept), _key(abandoned)} <= _keys(s3_media)
    assert services.direct_upload_sweep(older_than_seconds=-60) >= 1  # as if the window were over

    assert _key(abandoned) not in _keys(s3_media)
    assert _key(kept) in _keys(s3_media)
    prediction = Prediction.objects.get(id=committed["id"])
    assert prediction.image.name == _key(kept)
    assert prediction.status == PredictionStatus.PENDING


def test_with_local_media_direct_uploads_answer_409_naming_the_normal_path(user: User, settings: Settings) -> None:
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": LOCAL_MEDIA_BACKEND}}
    api = api_as(user)
    declared = {"filename": "cat.jpg", "content_type": "image/jpeg", "size": 1000}

    response = api.post(UPLOADS_URL, declared, format="json")

    _error(response, 409, "direct_upload_unavailable")
    assert "POST /api/v1/predictions/" in response.json()["error"]["message"]
    _error(api.post(f"{UPLOADS_URL}anything/commit/"), 409, "direct_upload_unavailable")
    assert services.direct_upload_sweep() == 0


def test_an_image_whose_header_is_past_the_first_read_is_read_whole_and_accepted(
    s3_media: S3Server, user: User, active_model: ModelVersion, sent: list[PredictionId]
) -> None:
    buffer = io.BytesIO()  # a 150 KB colour profile before the frame header
    Image.new("RGB", (64, 48), (200, 10, 10)).save(buffer, "JPEG", icc_profile=bytes(150_000))
    content = buffer.getvalue()
    assert content.find(b"\xff\xc0") > uploads.HEADER_BYTES
    api = api_as(user)
    upload = _presign(api, content)
    assert _put(upload, content) == 200

    committed = _commit(api, upload)

    assert committed.status_code == 202, committed.content
    assert (committed.json()["image"]["width"], committed.json()["image"]["height"]) == (64, 48)


def test_a_late_second_commit_is_refused_and_keeps_the_committed_image(
    s3_media: S3Server, user: User, active_model: ModelVersion, sent: list[PredictionId],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    content = photo_bytes("chelsea")
    api = api_as(user)
    upload = _presign(api, content)
    assert _put(upload, content) == 200
    assert _commit(api, upload).status_code == 202
    later = time.time() + 3600
    monkeypatch.setattr(uploads, "time", SimpleNamespace(time=lambda: later))

    _error(_commit(api, upload), 409, "already_committed")

    assert _key(upload) in _keys(s3_media)
    assert Prediction.objects.get().image.name == _key(upload)


def test_the_url_names_the_address_clients_reach_when_it_is_another(
    s3_media: S3Server, user: User, settings: Settings, active_model: ModelVersion, sent: list[PredictionId]
) -> None:
    public = s3_media.endpoint.replace("127.0.0.1", "localhost")  # the same store under another name
    settings.DIRECT_UPLOAD_ENDPOINT_URL = public
    content = photo_bytes("chelsea")
    api = api_as(user)

    upload = _presign(api, content)

    assert upload["url"].startswith(f"{public}/{s3_media.bucket}/uploads/direct/")
    assert _put(upload, content) == 200  # signed for that host
    assert _commit(api, upload).status_code == 202

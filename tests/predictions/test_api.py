"""REST API v1 contract: statuses, fields, one error shape, per-user scoping."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone
from pytest_django import Settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from predictions.models import ModelVersion, Prediction, PredictionStatus
from tests.conftest import photo_bytes
from tests.factories import PredictionFactory

if TYPE_CHECKING:
    from rest_framework.response import _MonkeyPatchedResponse as APIResponse

LIST_URL = "/api/v1/predictions/"


def _image(name: str = "cat.jpg", content: bytes | None = None) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, photo_bytes("chelsea") if content is None else content, content_type="image/jpeg")


def _assert_error(response: APIResponse, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.content
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"code", "message", "field"}
    assert error["message"]
    if code:
        assert error["code"] == code
    return error


def test_anonymous_requests_get_401(db: None) -> None:
    client = APIClient()
    _assert_error(client.get(LIST_URL), 401)
    _assert_error(client.post(LIST_URL, {"image": _image()}, format="multipart"), 401)


def test_submit_one_image_is_202_with_location(api: APIClient) -> None:
    response = api.post(LIST_URL, {"image": _image(), "top_k": 3}, format="multipart")

    assert response.status_code == 202
    body = response.json()
    assert set(body) >= {"id", "status", "url", "created_at"}
    assert body["status"] == "pending"
    assert response["Location"] == body["url"]
    assert Prediction.objects.get(id=body["id"]).top_k == 3


def test_submit_several_images_gives_one_entry_each_in_order(api: APIClient) -> None:
    files = [_image("a.jpg"), _image("bad.jpg", b"nope"), _image("c.jpg")]

    response = api.post(LIST_URL, {"image": files}, format="multipart")

    assert response.status_code == 202
    entries = response.json()
    assert [e.get("filename") for e in entries] == ["a.jpg", "bad.jpg", "c.jpg"]
    assert entries[1]["error"]["code"] == "unsupported_media_type"
    assert "id" in entries[0]
    assert "id" in entries[2]
    assert Prediction.objects.count() == 2


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b"", 400, "invalid_image"),
        (b"GIF89a-but-not-really", 415, "unsupported_media_type"),
        (b"<html>hello</html>", 415, "unsupported_media_type"),
        (photo_bytes("chelsea")[:5000], 400, "invalid_image"),
    ],
    ids=["empty", "fake-gif", "html", "truncated"],
)
def test_bad_images_get_clear_errors_and_no_row(api: APIClient, content: bytes, status: int, code: str) -> None:
    error = _assert_error(api.post(LIST_URL, {"image": _image(content=content)}, format="multipart"), status, code)

    assert error["field"] == "image"
    assert Prediction.objects.count() == 0


def test_too_large_is_413(api: APIClient, settings: Settings) -> None:
    settings.MAX_UPLOAD_BYTES = 2000
    _assert_error(api.post(LIST_URL, {"image": _image()}, format="multipart"), 413, "too_large")


def test_missing_file_and_bad_top_k_are_400(api: APIClient) -> None:
    _assert_error(api.post(LIST_URL, {"top_k": 3}, format="multipart"), 400)
    error = _assert_error(api.post(LIST_URL, {"image": _image(), "top_k": 99}, format="multipart"), 400)
    assert error["field"] == "top_k"


def test_json_body_is_415(api: APIClient) -> None:
    _assert_error(api.post(LIST_URL, {"image": "x"}, format="json"), 415)


def test_submission_is_throttled_per_user(api: APIClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from predictions.api.throttles import SubmitRateThrottle

    monkeypatch.setattr(SubmitRateThrottle, "THROTTLE_RATES", {"submit": "2/min"})

    statuses = [api.post(LIST_URL, {"image": _image()}, format="multipart").status_code for _ in range(3)]

    assert statuses == [202, 202, 429]
    assert api.get(LIST_URL).status_code == 200  # reads have their own rate


def test_reads_are_throttled_per_user_and_a_long_poll_counts_once(
    api: APIClient, user: User, other_user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    from predictions.api.throttles import ReadRateThrottle

    monkeypatch.setattr(ReadRateThrottle, "THROTTLE_RATES", {"read": "3/min"})
    prediction = PredictionFactory.create(user=user)

    # A long-poll is one read, however long it waits.
    assert api.get(f"{LIST_URL}{prediction.id}/", {"wait": 0.3}).status_code == 200
    assert api.get(LIST_URL).status_code == 200
    assert api.get("/api/v1/models/").status_code == 200  # one rate across every GET endpoint
    over = api.get(f"{LIST_URL}{prediction.id}/")

    error = _assert_error(over, 429, "throttled")
    assert int(over["Retry-After"]) > 0
    assert "second" in error["message"]
    # Not a read: deleting is not held back by the read rate.
    assert api.delete(f"{LIST_URL}{prediction.id}/").status_code == 204
    other = APIClient()
    other.force_authenticate(other_user)
    assert other.get(LIST_URL).status_code == 200  # another user has their own count


def test_poll_returns_every_documented_field(api: APIClient, user: User, active_model: ModelVersion) -> None:
    prediction = PredictionFactory.create(
        user=user, status=PredictionStatus.SUCCEEDED, label="tabby cat", class_id="n02123045", confidence=0.7,
        top_predictions=[{"label": "tabby cat", "class_id": "n02123045", "score": 0.7}], queue_ms=1.0,
        preprocess_ms=2.0, inference_ms=13.0, total_ms=30.0, completed_at=timezone.now(),
        model_version=active_model,
    )  # fmt: skip

    body = api.get(f"{LIST_URL}{prediction.id}/").json()

    assert body["status"] == "succeeded"
    assert body["label"] == "tabby cat"
    assert body["class_id"] == "n02123045"
    assert body["predictions"] == [{"label": "tabby cat", "class_id": "n02123045", "score": 0.7}]
    assert body["timings_ms"] == {"queue": 1.0, "preprocess": 2.0, "inference": 13.0, "total": 30.0}
    assert body["model"] == {"name": "efficientnet_lite0", "version": "1"}
    assert set(body["image"]) == {"url", "thumbnail_url", "sha256", "width", "height", "filename"}
    assert {"created_at", "started_at", "completed_at", "error", "confidence"} <= set(body)


def test_long_poll_returns_when_time_is_up_for_pending(api: APIClient, user: User) -> None:
    prediction = PredictionFactory.create(user=user)

    body = api.get(f"{LIST_URL}{prediction.id}/", {"wait": 0.5}).json()

    assert body["status"] == "pending"


def test_other_users_ids_are_404(api: APIClient, other_user: User) -> None:
    prediction = PredictionFactory.create(user=other_user)

    _assert_error(api.get(f"{LIST_URL}{prediction.id}/"), 404, "not_found")
    _assert_error(api.delete(f"{LIST_URL}{prediction.id}/"), 404)
    _assert_error(api.get(f"{LIST_URL}not-a-uuid/"), 404)
    assert Prediction.objects.filter(id=prediction.id).exists()


def test_list_is_own_newest_first_and_filtered(api: APIClient, user: User, other_user: User) -> None:
    PredictionFactory.create(user=user, label="espresso", status=PredictionStatus.FAILED, completed_at=timezone.now())
    newest = PredictionFactory.create(user=user)
    PredictionFactory.create(user=other_user)

    everything = api.get(LIST_URL).json()
    failed = api.get(LIST_URL, {"status": "failed"}).json()
    bad_filter = api.get(LIST_URL, {"created_after": "yesterday"})

    assert everything["count"] == 2
    assert everything["results"][0]["id"] == str(newest.id)
    assert [r["label"] for r in failed["results"]] == ["espresso"]
    _assert_error(bad_filter, 400)


def test_delete_is_204_and_removes_row(api: APIClient, user: User) -> None:
    prediction = PredictionFactory.create(user=user)

    assert api.delete(f"{LIST_URL}{prediction.id}/").status_code == 204
    assert not Prediction.objects.exists()


def test_models_lists_the_active_version(api: APIClient, active_model: ModelVersion) -> None:
    models = api.get("/api/v1/models/").json()

    active = [m for m in models if m["is_active"]]
    assert [(m["name"], m["version"]) for m in active] == [("efficientnet_lite0", "1")]
    assert active[0]["input_size"] == 224


def test_schema_documents_each_action_with_its_own_view(api: APIClient) -> None:
    """List + submit share a URL, poll + delete share another: each operation is still
    documented from its own view (parameters, request body, responses)."""
    response = api.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    paths = response.json()["paths"]

    collection, item = paths["/api/v1/predictions/"], paths["/api/v1/predictions/{prediction_id}/"]
    assert set(collection) == {"get", "post"}
    assert set(item) == {"get", "delete"}

    def codes(operation: dict[str, Any]) -> set[str]:
        return set(operation["responses"])

    def parameters(operation: dict[str, Any]) -> set[str]:
        return {parameter["name"] for parameter in operation.get("parameters", [])}

    assert codes(collection["get"]) == {"200", "400", "401", "404", "429"}
    assert {"status", "label", "created_after", "page", "page_size"} <= parameters(collection["get"])
    listed = collection["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert listed == {"$ref": "#/components/schemas/PaginatedPredictionOutputList"}  # as the API answers
    assert codes(collection["post"]) == {"201", "202", "400", "401", "413", "415", "429"}
    assert parameters(collection["post"]) == {"wait"}
    assert "multipart/form-data" in collection["post"]["requestBody"]["content"]
    assert codes(item["get"]) == {"200", "401", "404", "429"}
    assert parameters(item["get"]) == {"prediction_id", "wait"}
    assert codes(item["delete"]) == {"204", "404"}
    assert parameters(item["delete"]) == {"prediction_id"}
    operation_ids = [op["operationId"] for op in (*collection.values(), *item.values())]
    assert operation_ids == ["predictions_list", "predictions_create", "predictions_retrieve", "predictions_destroy"]


def test_other_methods_get_405_in_the_error_shape_with_allow(api: APIClient, user: User) -> None:
    prediction = PredictionFactory.create(user=user)

    on_collection = api.put(LIST_URL, {}, format="json")
    on_item = api.put(f"{LIST_URL}{prediction.id}/", {}, format="json")
    post_on_item = api.post(f"{LIST_URL}{prediction.id}/", {}, format="multipart")

    assert _assert_error(on_collection, 405, "method_not_allowed")["message"] == 'Method "PUT" not allowed.'
    assert on_collection["Allow"] == "GET, POST, HEAD, OPTIONS"
    _assert_error(on_item, 405, "method_not_allowed")
    _assert_error(post_on_item, 405, "method_not_allowed")
    assert on_item["Allow"] == post_on_item["Allow"] == "GET, DELETE, HEAD, OPTIONS"
    # Every answer of a shared URL lists every method of the URL, as one view did.
    assert api.get(LIST_URL)["Allow"] == "GET, POST, HEAD, OPTIONS"
    assert api.head(LIST_URL).status_code == 200
    assert api.options(LIST_URL)["Allow"] == "GET, POST, HEAD, OPTIONS"
    # Authentication comes first, as in any DRF view.
    _assert_error(APIClient().put(LIST_URL), 401)


def test_schema_and_docs_are_served_offline(api: APIClient) -> None:
    schema = api.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    docs = api.get(reverse("api:docs"))

    assert schema.status_code == 200
    assert "/api/v1/predictions/{prediction_id}/" in schema.json()["paths"]
    assert docs.status_code == 200
    assert b"cdn" not in docs.content.lower()


def test_more_files_than_allowed_is_a_json_400(api: APIClient, settings: Settings) -> None:
    files = [_image(f"{i}.jpg") for i in range(settings.DATA_UPLOAD_MAX_NUMBER_FILES + 1)]

    response = api.post(LIST_URL, {"image": files}, format="multipart")

    error = _assert_error(response, 400, "too_many_files")
    assert error["field"] == "image"
    assert Prediction.objects.count() == 0


def test_more_files_than_the_per_request_limit_is_400(api: APIClient, settings: Settings) -> None:
    settings.MAX_FILES_PER_REQUEST = 2

    response = api.post(LIST_URL, {"image": [_image(f"{i}.jpg") for i in range(3)]}, format="multipart")

    error = _assert_error(response, 400)
    assert "at most 2 images" in error["message"]
    assert error["field"] == "image"
    assert Prediction.objects.count() == 0


def test_a_token_client_fetches_its_image_and_thumbnail_from_the_urls_in_the_api(api: APIClient, user: User) -> None:
    from tests.factories import UserFactory

    submitted = api.post(LIST_URL, {"image": _image()}, format="multipart").json()
    body = api.get(submitted["url"]).json()

    full = api.get(body["image"]["url"])
    thumb = api.get(body["image"]["thumbnail_url"])

    assert full.status_code == 200
    assert full["Content-Type"] == "image/jpeg"
    assert full.getvalue() == Prediction.objects.get(id=body["id"]).image.open("rb").read()
    assert thumb.status_code == 200
    assert thumb.getvalue()[:2] == b"\xff\xd8"
    stranger = APIClient()
    stranger.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=UserFactory.create()).key}")
    assert stranger.get(body["image"]["url"]).status_code == 404
    assert APIClient().get(body["image"]["url"]).status_code == 401


def test_an_image_client_that_accepts_only_images_gets_the_image(api: APIClient, user: User) -> None:
    """``Accept: image/*`` (what an <img> or an image library sends) is not a 406."""
    submitted = api.post(LIST_URL, {"image": _image()}, format="multipart").json()
    body = api.get(submitted["url"]).json()

    for accept in ("image/*", "image/jpeg", "image/webp,image/*;q=0.8"):
        response = api.get(body["image"]["url"], HTTP_ACCEPT=accept)
        assert response.status_code == 200, accept
        assert response["Content-Type"] == "image/jpeg", accept
    missing = api.get(
        body["image"]["url"].replace(body["id"], "00000000-0000-0000-0000-000000000000"), HTTP_ACCEPT="image/*"
    )
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


def test_a_body_that_cannot_be_parsed_gets_a_message_for_people(api: APIClient) -> None:
    response = api.generic(
        "POST", LIST_URL, "--x\r\nnot really multipart", content_type="multipart/form-data; boundary="
    )

    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert message.startswith("The request body could not be read")
    assert "boundary" not in message

"""What the schema promises about submitting, the batch, the deprecated forms and the
inputs, checked in-process (the live-server checks are tests/contract/)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from predictions.models import ModelVersion, Prediction
from tests.conftest import api_as, photo_bytes
from tests.factories import PredictionFactory

LIST_URL = "/api/v1/predictions/"
BATCH_URL = "/api/v1/predictions/batch/"
SUNSET = "Wed, 30 Jun 2027 00:00:00 GMT"


@pytest.fixture
def api(user: User) -> APIClient:
    return api_as(user)


def _image(name: str, content: bytes | None = None) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, photo_bytes("chelsea") if content is None else content, content_type="image/jpeg")


def _error(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.content
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"code", "message", "field"}
    if field is not None:
        assert error["field"] == field
    return error


def test_one_image_answers_the_prediction_as_a_poll_shows_it(api: APIClient) -> None:
    response = api.post(LIST_URL, {"image": _image("cat.jpg")}, format="multipart")

    body = response.json()
    poll = api.get(body["url"]).json()
    assert response.status_code == 202
    assert response["Location"] == body["url"]
    assert {key: value for key, value in body.items() if key != "filename"} == poll
    assert body["filename"] == poll["image"]["filename"] == "cat.jpg"  # the deprecated field, kept
    assert not response.has_header("Deprecation")


def test_a_batch_answers_one_entry_per_file_in_order(api: APIClient) -> None:
    files = [_image("a.jpg"), _image("bad.jpg", b"nope"), _image("c.jpg", photo_bytes("coffee"))]

    response = api.post(BATCH_URL, {"image": files}, format="multipart")

    assert response.status_code == 202
    results = response.json()["results"]
    assert [entry["filename"] for entry in results] == ["a.jpg", "bad.jpg", "c.jpg"]
    assert results[1]["prediction"] is None
    assert results[1]["error"]["code"] == "unsupported_media_type"
    assert results[0]["error"] is None
    assert results[0]["prediction"]["status"] == "pending"
    assert Prediction.objects.count() == 2


def test_a_batch_with_no_file_accepted_is_a_400_that_says_why_for_each(api: APIClient) -> None:
    files = [_image("a.jpg", b"nope"), _image("b.jpg", b"")]

    response = api.post(BATCH_URL, {"image": files}, format="multipart")

    assert _error(response, 400)["code"] == "no_valid_images"
    assert [entry["error"]["code"] for entry in response.json()["results"]] == [
        "unsupported_media_type",
        "invalid_image",
    ]
    assert Prediction.objects.count() == 0


def test_several_images_on_the_one_image_url_still_get_the_old_list_with_a_sunset(api: APIClient) -> None:
    response = api.post(LIST_URL, {"image": [_image("a.jpg"), _image("b.jpg")]}, format="multipart")

    assert response.status_code == 202
    assert [entry["filename"] for entry in response.json()] == ["a.jpg", "b.jpg"]
    assert response["Deprecation"] == "@1796342400"
    assert response["Sunset"] == SUNSET
    assert response["Link"] == '<http://testserver/api/v1/predictions/batch/>; rel="successor-version"'


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"status": ""}, "status"),
        ({"label": ""}, "label"),
        ({"created_after": ""}, "created_after"),
        ({"page": "0"}, "page"),
        ({"page": "last"}, "page"),
        ({"page_size": "abc"}, "page_size"),
    ],
)
def test_a_list_query_the_schema_does_not_allow_is_a_400(api: APIClient, query: dict[str, str], field: str) -> None:
    _error(api.get(LIST_URL, query), 400, field)


def test_page_size_above_the_limit_gives_the_limit(api: APIClient, user: User) -> None:
    PredictionFactory.create_batch(3, user=user)

    body = api.get(LIST_URL, {"page_size": "1000"}).json()

    assert body["count"] == 3
    assert len(body["results"]) == 3


@pytest.mark.parametrize("wait", ["nan", "inf", "1_0", "soon", ""])
def test_a_wait_that_is_not_a_decimal_number_is_a_400(api: APIClient, user: User, wait: str) -> None:
    prediction = PredictionFactory.create(user=user)

    _error(api.get(f"{LIST_URL}{prediction.id}/", {"wait": wait}), 400, "wait")


def test_an_unusable_prefer_wait_is_ignored_as_rfc_7240_asks(api: APIClient, user: User) -> None:
    prediction = PredictionFactory.create(user=user)

    response = api.get(f"{LIST_URL}{prediction.id}/", HTTP_PREFER="respond-async, wait=soon")

    assert response.status_code == 200
    assert response.json()["id"] == str(prediction.id)


def test_an_image_size_other_than_thumb_is_a_400(api: APIClient, user: User) -> None:
    prediction = PredictionFactory.create(user=user)

    _error(api.get(f"{LIST_URL}{prediction.id}/image/", {"size": "big"}), 400, "size")


def test_a_json_value_of_another_type_than_the_schema_says_is_a_400(
    api: APIClient, user: User, active_model: ModelVersion
) -> None:
    user.is_superuser = True
    user.save(update_fields=["is_superuser"])
    prediction = PredictionFactory.create(user=user)

    _error(api.post(f"{LIST_URL}{prediction.id}/correction/", {"label": 0}, format="json"), 400, "label")
    _error(api.patch(f"/api/v1/models/{active_model.name}/{active_model.version}/", {"traffic_percent": "10"},
                     format="json"), 400, "traffic_percent")  # fmt: skip


def test_a_form_body_where_the_schema_says_json_still_works_with_a_sunset(
    api: APIClient, user: User, active_model: ModelVersion
) -> None:
    user.is_superuser = True
    user.save(update_fields=["is_superuser"])
    url = f"/api/v1/models/{active_model.name}/{active_model.version}/"

    as_json = api.patch(url, {"traffic_percent": 0}, format="json")
    as_form = api.patch(url, {"traffic_percent": "0"}, format="multipart")

    assert as_json.status_code == as_form.status_code == 200
    assert not as_json.has_header("Sunset")
    assert as_form["Sunset"] == SUNSET


def test_every_operation_on_a_prediction_is_linked_from_the_submit_answer() -> None:
    schema = APIClient().get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    by_prediction = {
        operation["operationId"]
        for path, item in schema["paths"].items()
        if path.startswith("/api/v1/predictions/{prediction_id}/")
        for operation in item.values()
    }

    links = schema["paths"]["/api/v1/predictions/"]["post"]["responses"]["202"]["links"]

    assert set(links) == by_prediction
    assert {link["parameters"]["prediction_id"] for link in links.values()} == {"$response.body#/id"}

"""Submit, poll and wait through the real ASGI application, with the API's fast path on
and off (``front_door``): every behaviour a client sees is the same on both, and the
fast path really serves the happy path (its ``imagerec_api_fast_path_requests`` counter)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token

from predictions.api.throttles import ReadRateThrottle, SubmitRateThrottle
from predictions.models import Prediction, PredictionStatus
from predictions.operations.metrics import FAST_PATH_REQUESTS, REQUESTS
from tests.conftest import photo_bytes
from tests.factories import ModelVersionFactory, PredictionFactory, SucceededPredictionFactory
from tests.predictions.conftest import AsgiApi

LIST_URL = "/api/v1/predictions/"


def _image(name: str = "cat.jpg", content: bytes | None = None) -> dict[str, Any]:
    return {"image": (name, photo_bytes("chelsea") if content is None else content, "image/jpeg")}


def _served(outcome: str) -> float:
    return float(FAST_PATH_REQUESTS.labels(outcome=outcome)._value.get())


def _error(response: httpx.Response, status: int, code: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"code", "message", "field"}
    assert code is None or error["code"] == code
    assert error["message"]
    return error


def _counts_as(front_door: str, served: float, handed_over: float, outcome: str) -> None:
    """The fast path took the request (``served``) or gave it to Django (``handed_over``);
    with the fast path off it takes nothing."""
    expected = (1, 0) if outcome == "served" else (0, 1)
    if front_door == "django":
        expected = (0, 0)
    assert (_served("served") - served, _served("handed_over") - handed_over) == expected


def test_submit_is_202_with_location_and_the_row(asgi_api: AsgiApi, front_door: str) -> None:
    before = _served("served"), _served("handed_over")
    response = asgi_api.post(LIST_URL, files=_image(), data={"top_k": "3"})

    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "pending"
    assert response.headers["Location"] == body["url"] == f"http://testserver{LIST_URL}{body['id']}/"
    assert body["filename"] == "cat.jpg"
    assert Prediction.objects.get(id=body["id"]).top_k == 3
    _counts_as(front_door, *before, "served")


def test_both_paths_answer_with_the_same_headers(user: User, settings: Any) -> None:
    api = AsgiApi(Token.objects.create(user=user).key)
    prediction = SucceededPredictionFactory.create(user=user)
    answers: dict[bool, list[httpx.Response]] = {}
    for fast in (True, False):
        settings.API_FAST_PATH = fast
        answers[fast] = [
            api.get(f"{LIST_URL}{prediction.id}/"),
            api.get(f"{LIST_URL}{prediction.id}/", params={"wait": "5"}),
            api.post(LIST_URL, files=_image()),
            api.post(LIST_URL, files=_image(content=b"not an image")),
            api.get(f"{LIST_URL}{PredictionFactory.create().id}/"),  # another user's: 404
        ]
    for fast_answer, django_answer in zip(answers[True], answers[False], strict=True):
        assert fast_answer.status_code == django_answer.status_code
        fast_headers = {k: v for k, v in fast_answer.headers.items() if k not in ("location", "content-length")}
        assert fast_headers == {k: v for k, v in django_answer.headers.items() if k in fast_headers}
        assert set(fast_answer.headers) == set(django_answer.headers)
        assert fast_answer.headers["X-Frame-Options"] == "DENY"
    for poll in (0, 1, 4):  # a poll is the same bytes both ways
        assert answers[True][poll].content == answers[False][poll].content


@pytest.mark.parametrize("token", [None, "not-a-token", "0" * 40])
def test_no_or_a_bad_token_is_401_on_both_paths(db: None, front_door: str, token: str | None) -> None:
    api = AsgiApi(token)
    prediction = PredictionFactory.create()

    _error(api.post(LIST_URL, files=_image()), 401, "not_authenticated" if token is None else "authentication_failed")
    assert api.get(f"{LIST_URL}{prediction.id}/").status_code == 401
    assert not Prediction.objects.exclude(id=prediction.id).exists()


def test_another_users_prediction_is_404(asgi_api: AsgiApi) -> None:
    prediction = PredictionFactory.create()

    _error(asgi_api.get(f"{LIST_URL}{prediction.id}/"), 404, "not_found")
    _error(asgi_api.get(f"{LIST_URL}not-an-id/", params={"wait": "1"}), 404, "not_found")


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [(b"", 400, "invalid_image"), (b"<html>hello</html>", 415, "unsupported_media_type")],
    ids=["empty", "html"],
)
def test_a_bad_image_is_refused_the_same_way(asgi_api: AsgiApi, content: bytes, status: int, code: str) -> None:
    _error(asgi_api.post(LIST_URL, files=_image(content=content)), status, code)
    assert not Prediction.objects.exists()


@pytest.mark.parametrize(
    ("data", "params", "field"),
    [({"top_k": "0"}, {}, "top_k"), ({"top_k": "many"}, {}, "top_k"), ({}, {"wait": "soon"}, "wait")],
)
def test_bad_parameters_are_400_naming_the_field(
    asgi_api: AsgiApi, front_door: str, data: dict[str, str], params: dict[str, str], field: str
) -> None:
    before = _served("served"), _served("handed_over")
    error = _error(asgi_api.post(LIST_URL, files=_image(), data=data, params=params), 400, None)

    assert error["field"] == field
    assert not Prediction.objects.exists()
    _counts_as(front_door, *before, "handed_over")


def test_several_images_keep_the_deprecated_list_answer(asgi_api: AsgiApi) -> None:
    files = [("image", ("a.jpg", photo_bytes("chelsea"), "image/jpeg")), ("image", ("b.jpg", b"nope", "image/jpeg"))]
    response = asgi_api.post(LIST_URL, files=files)

    assert response.status_code == 202
    assert [entry["filename"] for entry in response.json()] == ["a.jpg", "b.jpg"]
    assert response.headers["Deprecation"]


def test_submissions_are_throttled_once_across_both_paths(
    user: User, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SubmitRateThrottle, "THROTTLE_RATES", {"submit": "2/min"})
    api = AsgiApi(Token.objects.create(user=user).key)
    statuses = []
    for fast in (True, False, True, False):
        settings.API_FAST_PATH = fast
        statuses.append(api.post(LIST_URL, files=_image()).status_code)

    assert statuses == [202, 202, 429, 429]
    assert Prediction.objects.count() == 2
    over = api.post(LIST_URL, files=_image())
    assert int(over.headers["Retry-After"]) > 0


def test_a_throttled_read_is_429_and_a_refusal_is_not_counted(
    asgi_api: AsgiApi, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ReadRateThrottle, "THROTTLE_RATES", {"read": "2/min"})
    prediction = PredictionFactory.create(user=user)
    url = f"{LIST_URL}{prediction.id}/"

    statuses = [asgi_api.get(url, params={"wait": "0.2"}).status_code for _ in range(4)]

    assert statuses == [200, 200, 429, 429]
    _error(asgi_api.get(url), 429, "throttled")


@pytest.mark.parametrize("how", ["query", "prefer"])
def test_a_wait_answers_202_when_it_runs_out_and_201_when_final(
    asgi_api: AsgiApi, user: User, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    ask = {"params": {"wait": "0.3"}} if how == "query" else {"headers": {"Prefer": "wait=0.3"}}
    pending = asgi_api.post(LIST_URL, files=_image(), **ask)
    assert pending.status_code == 202
    assert pending.json()["status"] == "pending"

    prediction = Prediction.objects.get(id=pending.json()["id"])
    Prediction.objects.filter(id=prediction.id).update(status=PredictionStatus.FAILED, error="done elsewhere")
    polled = asgi_api.get(f"{LIST_URL}{prediction.id}/", **ask)
    assert polled.status_code == 200
    assert polled.json()["status"] == "failed"


def test_a_final_prediction_is_answered_at_once_with_its_model(asgi_api: AsgiApi, user: User) -> None:
    prediction = SucceededPredictionFactory.create(user=user, model_version=ModelVersionFactory.create())
    assert prediction.model_version is not None

    response = asgi_api.get(f"{LIST_URL}{prediction.id}/", params={"wait": "30"})

    assert response.status_code == 200
    assert response.json()["label"] == prediction.label
    version = prediction.model_version
    assert response.json()["model"] == {"name": version.name, "version": version.version}


def test_the_request_metrics_count_the_fast_path_too(asgi_api: AsgiApi, user: User) -> None:
    prediction = PredictionFactory.create(user=user)
    submitted = REQUESTS.labels(view="api:prediction-list", method="POST", status="202")
    polled = REQUESTS.labels(view="api:prediction-detail", method="GET", status="200")
    before = submitted._value.get(), polled._value.get()

    asgi_api.post(LIST_URL, files=_image())
    asgi_api.get(f"{LIST_URL}{prediction.id}/")

    assert (submitted._value.get() - before[0], polled._value.get() - before[1]) == (1, 1)


def test_other_kinds_of_request_go_to_django(asgi_api: AsgiApi, front_door: str, user: User) -> None:
    prediction = PredictionFactory.create(user=user)
    before = _served("served"), _served("handed_over")

    browsable = asgi_api.get(f"{LIST_URL}{prediction.id}/", headers={"Accept": "text/html"})
    form = asgi_api.post(LIST_URL, data={"top_k": "3"})  # urlencoded, no image

    assert browsable.status_code == 200
    assert browsable.headers["Content-Type"].startswith("text/html")
    _error(form, 400, "invalid")
    assert (_served("served"), _served("handed_over")) == before  # not even looked at


def test_a_host_not_allowed_is_refused_by_django_on_both_paths(asgi_api: AsgiApi, user: User) -> None:
    prediction = PredictionFactory.create(user=user)

    polled = asgi_api.get(f"{LIST_URL}{prediction.id}/", headers={"Host": "elsewhere.example"})
    submitted = asgi_api.post(LIST_URL, files=_image(), headers={"Host": "elsewhere.example"})

    assert (polled.status_code, submitted.status_code) == (400, 400)
    assert not Prediction.objects.exclude(id=prediction.id).exists()


def test_a_file_over_the_upload_limit_is_413(asgi_api: AsgiApi, settings: Any) -> None:
    # (A body over MAX_REQUEST_BYTES never reaches either path: tests/test_request_limits.py.)
    photo = photo_bytes("chelsea")
    settings.MAX_UPLOAD_BYTES = len(photo) - 1

    error = _error(asgi_api.post(LIST_URL, files=_image(content=photo)), 413, "too_large")

    assert error["field"] == "image"
    assert not Prediction.objects.exists()


def test_a_client_that_goes_away_ends_its_long_poll_without_an_answer(
    user: User, front_door: str, settings: Any
) -> None:
    from asgiref.sync import async_to_sync
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    from imagerec.asgi import application

    settings.EVENTS_RECHECK_SECONDS = 3600
    prediction = PredictionFactory.create(user=user, status=PredictionStatus.RUNNING)
    token = Token.objects.create(user=user).key
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": f"{LIST_URL}{prediction.id}/", "raw_path": f"{LIST_URL}{prediction.id}/".encode(),
        "query_string": b"wait=30", "root_path": "", "client": ("127.0.0.1", 5000), "server": ("testserver", 80),
        "headers": [(b"host", b"testserver"), (b"authorization", f"Token {token}".encode())],
    }  # fmt: skip
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": b"", "more_body": False},
        {"type": "http.disconnect"},
    ]
    sent: list[Mapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: Mapping[str, Any]) -> None:
        sent.append(message)

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        async_to_sync(application)(scope, receive, send)
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)

    assert sent == []  # the wait was cancelled: nobody is left to answer

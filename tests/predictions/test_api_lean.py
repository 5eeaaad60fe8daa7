"""The lean submit / wait / poll path (issue 25): the same answers as the documented
serializers, a cost per request that does not grow with the images sent, and waiting
that hears a result however early it comes."""

from __future__ import annotations

import zoneinfo
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import AsyncClient, Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from pytest_django import DjangoAssertNumQueries
from rest_framework.request import Request
from rest_framework.test import APIClient, APIRequestFactory

from predictions import events, selectors
from predictions.api.bodies import prediction_body
from predictions.api.serializers import PredictionOutputSerializer, SubmittedPredictionSerializer
from predictions.models import Prediction, PredictionId, PredictionStatus
from predictions.services import submissions
from tests.conftest import photo_bytes
from tests.factories import ModelVersionFactory, PredictionFactory, SucceededPredictionFactory

LIST_URL = "/api/v1/predictions/"
BATCH_URL = "/api/v1/predictions/batch/"


def _images(count: int) -> list[SimpleUploadedFile]:
    photos = [photo_bytes(name) for name in ("chelsea", "coffee")]
    return [
        SimpleUploadedFile(f"photo{i}.jpg", photos[i % len(photos)], content_type="image/jpeg") for i in range(count)
    ]


def _kinds(user: User) -> list[Prediction]:
    """One prediction of every shape an answer can take."""
    version = ModelVersionFactory.create()
    multi_label = [
        {"label": "dog", "class_id": "d", "score": 0.9, "positive": True},
        {"label": "cat", "class_id": "c", "score": 0.2, "positive": False},
    ]
    return [
        PredictionFactory.create(user=user),
        SucceededPredictionFactory.create(
            user=user, model_version=version, entropy=0.31, margin=0.2, uncertain=False, queue_ms=3.5,
            preprocess_ms=1.25, inference_ms=12.0, started_at=timezone.now() - timedelta(seconds=1),
        ),
        SucceededPredictionFactory.create(user=user, model_version=version, top_predictions=multi_label, cached=True),
        PredictionFactory.create(user=user, status=PredictionStatus.FAILED, error="The image could not be decoded."),
        PredictionFactory.create(user=user, status=PredictionStatus.RUNNING, started_at=timezone.now()),
    ]  # fmt: skip


@pytest.mark.parametrize("zone", ["UTC", "Asia/Tokyo"])
def test_the_written_body_is_what_the_documented_serializers_answer(user: User, zone: str) -> None:
    # The schema is generated from the serializers; the hot paths write the same JSON directly.
    request = Request(APIRequestFactory().get("/api/v1/predictions/"))
    with timezone.override(zoneinfo.ZoneInfo(zone)):
        for prediction in _kinds(user):
            prediction = Prediction.objects.select_related("model_version").get(id=prediction.id)
            context = {"request": request}
            assert prediction_body(prediction, request) == PredictionOutputSerializer(prediction, context=context).data
            submitted = SubmittedPredictionSerializer(prediction, context=context).data
            assert prediction_body(prediction, request, submitted=True) == submitted


def test_a_poll_answers_the_serializers_body(api: APIClient, user: User) -> None:
    for prediction in _kinds(user):
        response = api.get(f"{LIST_URL}{prediction.id}/")
        wsgi_request = response.wsgi_request
        fresh = Prediction.objects.select_related("model_version").get(id=prediction.id)
        expected = PredictionOutputSerializer(fresh, context={"request": Request(wsgi_request)}).data
        assert response.json() == expected


def test_one_image_costs_one_insert_and_no_query_beyond_what_it_needs(
    api: APIClient,
    sent: list[PredictionId],
    django_assert_num_queries: DjangoAssertNumQueries,
    django_capture_on_commit_callbacks: Any,
    settings: Any,
) -> None:
    # No change announcements (as without Redis): tokens are read on every request, and the
    # model versions kept for ANNOUNCED_CACHE_SECONDS (tests/predictions/test_api_authentication.py
    # and test_registry_choice.py cover what is kept while announcements are heard).
    settings.EVENTS_REDIS_URL = ""
    # The token, the model versions (read by the process's first submission only, then
    # kept until a switch), the INSERT (inside its transaction's savepoint here, as the
    # test runs in a transaction); RESULT_CACHE looks for an earlier result.
    for queries in (6, 5):
        with django_assert_num_queries(queries) as captured, django_capture_on_commit_callbacks(execute=True):
            response = api.post(LIST_URL, {"image": _images(1)}, format="multipart")
        assert response.status_code == 202, response.content
        inserts = [q["sql"] for q in captured.captured_queries if "INSERT" in q["sql"]]
        assert len(inserts) == 1
    assert len(sent) == 2


@pytest.mark.parametrize("count", [8, 20])
def test_a_batch_is_one_insert_and_its_queries_do_not_grow_with_the_images(
    api: APIClient, sent: list[PredictionId], settings: Any, count: int, django_capture_on_commit_callbacks: Any
) -> None:
    settings.RESULT_CACHE = "off"  # else one lookup per image, by design
    settings.EVENTS_REDIS_URL = ""  # as above: what is kept does not change between the two requests
    api.post(LIST_URL, {"image": _images(1)}, format="multipart")  # the model versions are read once, then kept
    with CaptureQueriesContext(connection) as one, django_capture_on_commit_callbacks(execute=True):
        assert api.post(LIST_URL, {"image": _images(1)}, format="multipart").status_code == 202
    with CaptureQueriesContext(connection) as many, django_capture_on_commit_callbacks(execute=True):
        response = api.post(BATCH_URL, {"image": _images(count)}, format="multipart")

    assert response.status_code == 202, response.content
    assert len(many.captured_queries) == len(one.captured_queries)
    assert len([q for q in many.captured_queries if "INSERT" in q["sql"]]) == 1
    results = response.json()["results"]
    assert [r["filename"] for r in results] == [f"photo{i}.jpg" for i in range(count)]
    assert Prediction.objects.filter(id__in=[r["prediction"]["id"] for r in results]).count() == count
    assert len(sent) == 1 + count  # every image still has its own message


def test_a_batch_with_a_bad_file_stores_the_others_and_refuses_it_alone(
    api: APIClient, sent: list[PredictionId], django_capture_on_commit_callbacks: Any
) -> None:
    files = [*_images(2), SimpleUploadedFile("bad.jpg", b"not an image", content_type="image/jpeg")]
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(BATCH_URL, {"image": files}, format="multipart")

    assert response.status_code == 202
    results = response.json()["results"]
    assert [r["error"] is None for r in results] == [True, True, False]
    assert results[2]["error"]["code"] == "unsupported_media_type"
    assert Prediction.objects.count() == 2 == len(sent)


def test_a_failed_insert_leaves_no_row_and_no_file(
    user: User, sent: list[PredictionId], monkeypatch: pytest.MonkeyPatch
) -> None:
    stored: list[str] = []
    real_stored = submissions._prediction_stored

    def remember(**kwargs: Any) -> Prediction:
        prediction = real_stored(**kwargs)
        stored.append(str(prediction.image.name))
        return prediction

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(submissions, "_prediction_stored", remember)
    monkeypatch.setattr(Prediction.objects, "bulk_create", refuse)
    with pytest.raises(RuntimeError):
        submissions.prediction_create_many(user=user, uploaded_files=_images(3))

    assert len(stored) == 3
    assert not Prediction.objects.exists()
    assert not any(Prediction.image.field.storage.exists(name) for name in stored)
    assert sent == []


@pytest.mark.django_db(transaction=True)
def test_a_waiting_submit_listens_before_its_rows_are_queued(
    user: User, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    # The worker may finish before the request starts waiting: the submission subscribes
    # inside the transaction, before the message is sent, and does not read its rows
    # again until it is woken (or its deadline).
    settings.EVENTS_RECHECK_SECONDS = 30
    order: list[str] = []
    real_add = events.Subscription.add

    def add(self: events.Subscription, prediction_ids: Any) -> None:
        order.append("subscribed")
        real_add(self, prediction_ids)

    def enqueue(*, prediction_id: PredictionId, chunk: Sequence[PredictionId] = ()) -> bool:
        order.append("queued")
        Prediction.objects.filter(id__in=[prediction_id, *chunk]).update(
            status=PredictionStatus.SUCCEEDED, label="tabby cat", class_id="n02123045", confidence=0.9,
            top_predictions=[{"label": "tabby cat", "class_id": "n02123045", "score": 0.9}],
            completed_at=timezone.now(),
        )  # fmt: skip
        return True

    reads: list[int] = []
    real_read = selectors._predictions_read_sync

    def read(*args: Any) -> list[Prediction]:
        reads.append(1)
        return real_read(*args)

    monkeypatch.setattr(events.Subscription, "add", add)
    monkeypatch.setattr(submissions, "prediction_enqueue", enqueue)
    monkeypatch.setattr(selectors, "_predictions_read", _sync_to_async(read))
    client = AsyncClient()
    client.force_login(user)

    async def submit() -> Any:
        image = _images(1)[0]
        return await client.post(f"{LIST_URL}?wait=5", {"image": image})

    response = async_to_sync(submit)()

    assert response.status_code == 201, response.content
    assert response.json()["status"] == "succeeded"
    assert order == ["subscribed", "queued"]
    assert len(reads) == 1  # after the wake-up (or the first re-check), not before


def _sync_to_async(function: Any) -> Any:
    from asgiref.sync import sync_to_async

    return sync_to_async(function)


def test_the_time_zone_middleware_works_on_the_async_path(user: User) -> None:
    # Both site-wide middleware are async-capable (no thread hop per API request) and
    # still do their work there: the browser's zone applies to an async view too.
    prediction = SucceededPredictionFactory.create(user=user, completed_at=timezone.now())
    client = AsyncClient()
    client.force_login(user)
    client.cookies["tz"] = "Asia/Tokyo"

    response = async_to_sync(client.get)(f"{LIST_URL}{prediction.id}/")

    assert response.status_code == 200
    assert response.json()["completed_at"].endswith("+09:00")


@pytest.mark.parametrize("path", ["/api/v1/predictions/", "/", "/accounts/login/", "/accounts/login"])
def test_the_async_path_sets_the_same_security_headers_as_the_sync_one(user: User, path: str) -> None:
    # Security, CSP, Common and X-Frame-Options run their hooks in the event loop under
    # ASGI (imagerec.middleware.InlineHooksMixin): the answer carries what the sync path sets.
    synchronous = Client()
    asynchronous = AsyncClient()
    for client in (synchronous, asynchronous):
        client.force_login(user)
    sync_response = synchronous.get(path)
    async_response = async_to_sync(asynchronous.get)(path)

    assert async_response.status_code == sync_response.status_code
    for header in ("X-Frame-Options", "X-Content-Type-Options", "Referrer-Policy", "Content-Security-Policy"):
        assert async_response.headers.get(header) == sync_response.headers.get(header), header
    assert async_response.headers.get("Content-Security-Policy")
    if path == "/accounts/login":  # APPEND_SLASH, answered by CommonMiddleware in the event loop
        assert async_response.status_code == 301
        assert async_response.headers["Location"] == "/accounts/login/"
    else:
        assert async_response.headers.get("X-Frame-Options") == "DENY"

"""A GET never writes: every GET route of the site, the API and the admin, asked by the
owner of real data and by a superuser, changes no row, queues no task and stores no file."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.app.task import Task
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from predictions.models import (
    Correction,
    Explanation,
    ExplanationStatus,
    ModelActivation,
    ModelVersion,
    Prediction,
    ReprocessJob,
    WorkerHeartbeat,
)
from tests.factories import ModelVersionFactory, SucceededPredictionFactory, UserFactory

WRITE_SQL = re.compile(r"^\s*(INSERT|UPDATE|DELETE|REPLACE|CREATE|ALTER|DROP|TRUNCATE)\b", re.IGNORECASE)


def _routes(patterns: list[URLPattern | URLResolver], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(route, name) of every URL the project serves, nested includes flattened."""
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _routes(list(pattern.url_patterns), route)
        else:
            yield route, pattern.name or ""


def _fill(route: str, values: dict[str, str]) -> str | None:
    """The route with each converter replaced by a real value; ``None`` for a route whose
    arguments this test has no value for (a regex route of Django's own, such as the
    admin's static redirect)."""
    if route.startswith("^") or "(?P" in route:
        return None
    filled = re.sub(r"<(?:\w+:)?(\w+)>", lambda match: values.get(match.group(1), "\0"), route)
    return None if "\0" in filled else "/" + filled


@pytest.fixture
def data(db: None) -> dict[str, Any]:
    """One of everything a GET can show: a model version with an activation, a succeeded
    prediction with a correction and two explanations (done and pending), a reprocess job
    and a worker heartbeat."""
    owner = UserFactory.create()
    version = ModelVersionFactory.create()
    ModelActivation.objects.create(model_version=version, kind="default", activated_at=timezone.now())
    prediction = SucceededPredictionFactory.create(user=owner, model_version=version)
    correction = Correction.objects.create(
        prediction=prediction, label="Chihuahua", class_id="n02085620", predicted_label=prediction.label,
        model_version=version, corrected_by=owner, created_at=timezone.now(), updated_at=timezone.now(),
    )  # fmt: skip
    now = timezone.now()
    Explanation.objects.create(
        prediction=prediction, class_id=prediction.class_id, model_version=version, status=ExplanationStatus.SUCCEEDED,
        image=prediction.image.name, created_at=now, enqueued_at=now, finished_at=now,
    )  # fmt: skip
    Explanation.objects.create(
        prediction=prediction, class_id="n02123045", model_version=version, created_at=now, enqueued_at=now
    )
    job = ReprocessJob.objects.create(model_version=version, created_at=now, status="done", finished_at=now)
    WorkerHeartbeat.objects.create(hostname="celery@test:1", pid=1, started_at=now, last_seen_at=now)
    superuser = User.objects.create_superuser("root", "root@example.com", "a long enough password 1")
    return {
        "owner": owner,
        "superuser": superuser,
        "values": {
            "prediction_id": str(prediction.id),
            "name": version.name,
            "version": version.version,
            "object_id": "",  # per admin model, below
            "token": "x",
            "uidb64": "x",
        },
        "admin_ids": {
            "prediction": str(prediction.id),
            "modelversion": str(version.pk),
            "modelactivation": str(ModelActivation.objects.get().pk),
            "correction": str(correction.pk),
            "reprocessjob": str(job.pk),
        },
    }


def _get_urls(data: dict[str, Any]) -> list[str]:
    urls = []
    for route, name in _routes(list(get_resolver().url_patterns)):
        values = dict(data["values"])
        match = re.match(r"predictions_(\w+?)_", name)
        if match and match.group(1) in data["admin_ids"]:
            values["object_id"] = data["admin_ids"][match.group(1)]
        url = _fill(route, values)
        if url is not None:
            urls.append(url)
    return urls


def _query(url: str) -> dict[str, str]:
    """A pending explanation's class for explanation URLs; the thumbnail for image URLs
    (one that was never stored, which a read must make without storing)."""
    if "explanation" in url:
        return {"class_id": "n02123045"}
    if url.endswith("/image/"):
        return {"size": "thumb"}
    return {}


def _media_files() -> set[Path]:
    return {path for path in Path(settings.MEDIA_ROOT).rglob("*") if path.is_file()}


@pytest.mark.parametrize("who", ["owner", "superuser"])
def test_no_get_changes_a_row_queues_a_task_or_stores_a_file(
    data: dict[str, Any], who: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = Client()
    client.force_login(data[who])
    queued: list[str] = []
    monkeypatch.setattr(Task, "apply_async", lambda task, *args, **kwargs: queued.append(task.name))
    monkeypatch.setattr(Celery, "send_task", lambda app, name, *args, **kwargs: queued.append(name))
    urls = _get_urls(data)
    files_before = _media_files()
    answered: dict[str, int] = {}

    for url in urls:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url, _query(url))
        writes = [query["sql"] for query in queries.captured_queries if WRITE_SQL.match(query["sql"])]
        assert writes == [], f"GET {url} wrote: {writes}"
        answered[url] = response.status_code

    assert queued == []
    assert _media_files() == files_before
    # 503 is readiness saying no worker is up (none runs here); anything else 5xx is a bug.
    assert {url: status for url, status in answered.items() if status >= 500 and status != 503} == {}
    # The routes were really asked, with data behind them: the pages and API of the
    # prediction, its explanation (pending: 202), the models, the admin's change pages.
    prediction_id = data["values"]["prediction_id"]
    assert answered["/api/v1/models/"] == 200
    if who == "owner":
        assert answered[f"/predictions/{prediction_id}/"] == 200
        assert answered[f"/predictions/{prediction_id}/image/"] == 200
        assert answered[f"/api/v1/predictions/{prediction_id}/explanation/"] == 202
    else:  # someone else's prediction: not found on the site, readable in the admin
        assert answered[f"/predictions/{prediction_id}/"] == 404
        assert answered[f"/admin/predictions/prediction/{prediction_id}/change/"] == 200
        assert answered["/admin/predictions/reprocessjob/"] == 200
    assert Prediction.objects.get(id=prediction_id).thumbnail.name == ""  # shown, never stored by a read
    assert ModelVersion.objects.count() == 1

"""A/B tests of model versions: a candidate classifies a configured share of users'
predictions (sticky per user), the worker runs a mixed batch on each row's version, the
share is set through the API and the admin (with the permission), and the stats put the
two versions side by side."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from pytest_django import Settings
from rest_framework.test import APIClient

from ml import cache as model_cache
from ml import runner
from predictions import services
from predictions.exceptions import ApplicationError, ConflictError
from predictions.models import ModelVersion, Prediction, PredictionStatus
from predictions.operations import stats
from predictions.registry import selectors as registry_selectors
from predictions.registry import services as registry_services
from tests.conftest import CAT_CLASSES, photo_bytes
from tests.factories import OperatorFactory, PredictionFactory, UserFactory, jpeg_bytes
from tests.predictions.conftest import _copy_model

if TYPE_CHECKING:
    from rest_framework.response import _MonkeyPatchedResponse as APIResponse

    from ml.runner import ImageResult

MODELS_URL = "/api/v1/models/"


@pytest.fixture
def candidate(active_model: ModelVersion, tmp_path: Path, model_dir: Path) -> ModelVersion:
    """The shipped model exported again as version 2 and registered as a candidate."""
    folder = _copy_model(model_dir, tmp_path / "models", "2", parent={"name": "efficientnet_lite0", "version": "1"})
    return registry_services.model_version_register(model_dir=folder, candidate=True)


def _user_on(version: ModelVersion, *, percent: int, candidate: bool) -> User:
    """A new user whose bucket puts them on the candidate's side (or not) at ``percent``."""
    for _ in range(200):
        user = UserFactory.create()
        if (registry_selectors.traffic_bucket(user_id=user.pk, model_version_id=version.pk) < percent) == candidate:
            return user
    raise AssertionError("no user on that side in 200 tries")


def _submit(user: User, content: bytes, *, top_k: int = 5) -> Prediction:
    upload = SimpleUploadedFile("photo.jpg", content, content_type="image/jpeg")
    return services.prediction_create(user=user, uploaded_file=upload, top_k=top_k)


def _assert_error(response: APIResponse, status: int, code: str | None) -> dict[str, Any]:
    """The error shape; ``code=None`` accepts any code (DRF names each range check)."""
    assert response.status_code == status, response.content
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"code", "message", "field"}
    assert error["message"]
    assert code is None or error["code"] == code
    return error


# --- Assignment ---------------------------------------------------------------------


def test_a_user_stays_on_the_same_version_across_submissions(
    active_model: ModelVersion, candidate: ModelVersion
) -> None:
    registry_services.model_version_set_traffic(model_version=candidate, traffic_percent=50)
    on_candidate = _user_on(candidate, percent=50, candidate=True)
    on_active = _user_on(candidate, percent=50, candidate=False)

    for user, expected in ((on_candidate, candidate), (on_active, active_model)):
        submitted = [_submit(user, jpeg_bytes(color=(10 * n, 80, 160))) for n in range(3)]
        assert {Prediction.objects.get(id=p.id).assigned_version for p in submitted} == {expected}


def test_raising_the_share_moves_users_only_towards_the_candidate(
    active_model: ModelVersion, candidate: ModelVersion
) -> None:
    users = [User(pk=pk) for pk in range(1, 301)]
    registry_services.model_version_set_traffic(model_version=candidate, traffic_percent=10)
    at_10 = {u.pk for u in users if registry_selectors.model_version_for_user(user=u) == candidate}
    registry_services.model_version_set_traffic(model_version=candidate, traffic_percent=30)
    at_30 = {u.pk for u in users if registry_selectors.model_version_for_user(user=u) == candidate}

    assert at_10 < at_30  # everyone on the candidate at 10 % is still there at 30 %


@pytest.mark.parametrize("percent", [10, 50])
def test_the_candidate_gets_roughly_its_share_of_many_users(
    active_model: ModelVersion, candidate: ModelVersion, percent: int
) -> None:
    registry_services.model_version_set_traffic(model_version=candidate, traffic_percent=percent)
    users = [User(pk=pk) for pk in range(1, 1001)]  # the assignment reads only the id

    assigned = [registry_selectors.model_version_for_user(user=user) for user in users]

    share = sum(version == candidate for version in assigned) / len(users)
    assert abs(share - percent / 100) <= 0.03
    assert all(version in (candidate, active_model) for version in assigned)


def test_a_share_of_0_or_100_is_nobody_or_everybody(active_model: ModelVersion, candidate: ModelVersion) -> None:
    users = [User(pk=pk) for pk in range(1, 101)]
    registry_services.model_version_set_traffic(model_version=candidate, traffic_percent=100)
    assert {registry_selectors.model_version_for_user(user=user) for user in users} == {candidate}
    registry_services.model_version_set_traffic(model_version=candidate, traffic_percent=0)
    assert {registry_selectors.model_version_for_user(user=user) for user in users} == {active_model}


def test_without_a_share_everyone_gets_the_active_version(
    user: User, active_model: ModelVersion, candidate: ModelVersion
) -> None:
    assert _submit(user, jpeg_bytes()).assigned_version == active_model


def test_the_result_cache_only_reuses_results_of_the_assigned_version(
    active_model: ModelVersion, candidate: ModelVersion
) -> None:
    registry_services.model_version_set_traffic(model_version=candidate, traffic_percent=50)
    content = jpeg_bytes(color=(1, 2, 3))
    users = {side: _user_on(candidate, percent=50, candidate=side) for side in (True, False)}
    for user in users.values():  # each classified these bytes before, with the active version
        PredictionFactory.create(
            user=user, status=PredictionStatus.SUCCEEDED, model_version=active_model, label="cat", confidence=0.9,
            completed_at=timezone.now(), sha256=hashlib.sha256(content).hexdigest(),
        )  # fmt: skip

    assert _submit(users[False], content).cached is True
    again = _submit(users[True], content)
    assert again.cached is False
    assert again.status == PredictionStatus.PENDING


# --- The worker ---------------------------------------------------------------------


def test_the_worker_runs_a_mixed_batch_with_each_rows_version(
    settings: Settings, active_model: ModelVersion, candidate: ModelVersion, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.INFERENCE_BATCH_SIZE = 16
    registry_services.model_version_set_traffic(model_version=candidate, traffic_percent=50)
    older = PredictionFactory.create(user=UserFactory.create())  # from before A/B: no assignment
    on_active = _submit(_user_on(candidate, percent=50, candidate=False), photo_bytes("chelsea"))
    on_candidate = _submit(_user_on(candidate, percent=50, candidate=True), photo_bytes("chelsea"))
    calls: list[tuple[str, int]] = []
    original = runner.Classifier.classify

    def counted(
        self: runner.Classifier,
        sources: Sequence[bytes | str | Path],
        *,
        top_k: int = 5,
        max_decode_bytes: int | None = None,
        thumbnail_size: int = 0,
    ) -> list[ImageResult]:
        calls.append((Path(self.model_dir).name, len(sources)))
        return original(self, sources, top_k=top_k, max_decode_bytes=max_decode_bytes, thumbnail_size=thumbnail_size)

    monkeypatch.setattr(runner.Classifier, "classify", counted)

    report = services.prediction_process(prediction_id=on_active.id)

    assert report is not None
    assert report.size == 3
    assert report.succeeded == 3
    assert sorted(calls) == [("1", 2), ("2", 1)]  # one model call per version
    rows = {p.id: p for p in Prediction.objects.filter(id__in=[older.id, on_active.id, on_candidate.id])}
    assert rows[older.id].model_version == active_model
    assert rows[on_active.id].model_version == active_model
    assert rows[on_candidate.id].model_version == candidate
    assert rows[on_active.id].class_id in CAT_CLASSES
    assert rows[on_candidate.id].class_id in CAT_CLASSES
    assert Path(candidate.path).resolve().as_posix() in model_cache.loaded_model_dirs()


def test_a_row_assigned_to_a_version_retired_since_runs_with_the_active_one(
    user: User, active_model: ModelVersion, candidate: ModelVersion
) -> None:
    registry_services.model_version_set_traffic(model_version=candidate, traffic_percent=100)
    prediction = _submit(user, jpeg_bytes())
    assert prediction.assigned_version == candidate
    registry_services.model_version_retire(model_version=candidate)

    services.prediction_process(prediction_id=prediction.id)

    prediction.refresh_from_db()
    assert prediction.status == PredictionStatus.SUCCEEDED
    assert prediction.model_version == active_model


# --- Setting the share: service, API, admin -----------------------------------------


def test_only_a_candidate_gets_a_share_and_only_one_at_a_time(
    active_model: ModelVersion, candidate: ModelVersion, tmp_path: Path, model_dir: Path
) -> None:
    with pytest.raises(ApplicationError, match="only a candidate"):
        registry_services.model_version_set_traffic(model_version=active_model, traffic_percent=10)
    with pytest.raises(ApplicationError, match="between 0 and 100"):
        registry_services.model_version_set_traffic(model_version=candidate, traffic_percent=101)
    registry_services.model_version_set_traffic(model_version=candidate, traffic_percent=10)
    third = registry_services.model_version_register(
        model_dir=_copy_model(model_dir, tmp_path / "more", "3"), candidate=True
    )

    with pytest.raises(ConflictError, match="set it to 0 first"):
        registry_services.model_version_set_traffic(model_version=third, traffic_percent=5)
    registry_services.model_version_set_traffic(model_version=candidate, traffic_percent=0)
    assert registry_services.model_version_set_traffic(model_version=third, traffic_percent=5).traffic_percent == 5


def test_activating_or_retiring_the_candidate_ends_its_share(
    active_model: ModelVersion, candidate: ModelVersion
) -> None:
    registry_services.model_version_set_traffic(model_version=candidate, traffic_percent=20)
    registry_services.model_version_activate(model_version=candidate)
    candidate.refresh_from_db()
    assert candidate.status == "active"
    assert candidate.traffic_percent == 0

    registry_services.model_version_register(model_dir=Path(active_model.path), candidate=True)
    old = ModelVersion.objects.get(pk=active_model.pk)
    registry_services.model_version_set_traffic(model_version=old, traffic_percent=20)
    registry_services.model_version_retire(model_version=old)
    old.refresh_from_db()
    assert old.status == "retired"
    assert old.traffic_percent == 0


def test_api_patch_sets_the_candidates_share(
    api_for: Callable[[User], APIClient], switcher: User, active_model: ModelVersion, candidate: ModelVersion
) -> None:
    response = api_for(switcher).patch(f"{MODELS_URL}efficientnet_lite0/2/", {"traffic_percent": 10}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["traffic_percent"] == 10
    assert response.json()["status"] == "candidate"
    candidate.refresh_from_db()
    assert candidate.traffic_percent == 10
    listing = {m["version"]: m for m in api_for(switcher).get(MODELS_URL).json()}
    assert (listing["1"]["traffic_percent"], listing["2"]["traffic_percent"]) == (0, 10)


def test_api_patch_needs_the_permission(
    api_for: Callable[[User], APIClient], active_model: ModelVersion, candidate: ModelVersion
) -> None:
    url = f"{MODELS_URL}efficientnet_lite0/2/"

    _assert_error(
        api_for(UserFactory.create(is_staff=True)).patch(url, {"traffic_percent": 10}), 403, "permission_denied"
    )
    _assert_error(api_for(OperatorFactory.create()).patch(url, {"traffic_percent": 10}), 403, "permission_denied")
    _assert_error(APIClient().patch(url, {"traffic_percent": 10}), 401, "not_authenticated")
    candidate.refresh_from_db()
    assert candidate.traffic_percent == 0


def test_api_patch_errors_in_the_error_shape(
    api_for: Callable[[User], APIClient], switcher: User, active_model: ModelVersion, candidate: ModelVersion
) -> None:
    api = api_for(switcher)

    error = _assert_error(api.patch(f"{MODELS_URL}efficientnet_lite0/9/", {"traffic_percent": 10}), 404, "not_found")
    assert "efficientnet_lite0:9" in error["message"]
    for bad in (101, -1, "ten"):
        error = _assert_error(api.patch(f"{MODELS_URL}efficientnet_lite0/2/", {"traffic_percent": bad}), 400, None)
        assert error["field"] == "traffic_percent"
    assert _assert_error(api.patch(f"{MODELS_URL}efficientnet_lite0/2/", {}), 400, "required")["field"] == (
        "traffic_percent"
    )
    # A share for a version that is not a candidate: a well-formed request the version's state refuses.
    error = _assert_error(api.patch(f"{MODELS_URL}efficientnet_lite0/1/", {"traffic_percent": 10}), 409, "conflict")
    assert error["field"] == "traffic_percent"
    assert "only a candidate" in error["message"]
    assert ModelVersion.objects.filter(traffic_percent__gt=0).count() == 0


def test_admin_edits_the_share_of_a_candidate_only(
    client: Client, switcher: User, active_model: ModelVersion, candidate: ModelVersion
) -> None:
    client.force_login(switcher)

    response = client.post(
        reverse("admin:predictions_modelversion_change", args=[candidate.pk]),
        {"traffic_percent": 25, "confirmed_switch": "yes"},  # the confirmation page's button
    )
    assert response.status_code == 302, response.content
    candidate.refresh_from_db()
    assert candidate.traffic_percent == 25

    response = client.post(
        reverse("admin:predictions_modelversion_change", args=[active_model.pk]), {"traffic_percent": 25}
    )
    assert response.status_code == 200
    assert b"only a candidate version gets a share of traffic" in response.content
    active_model.refresh_from_db()
    assert active_model.traffic_percent == 0
    listing = client.get(reverse("admin:predictions_modelversion_changelist"))
    assert b"25 %" in listing.content


# --- Stats --------------------------------------------------------------------------


def _succeeded(version: ModelVersion, *, confidence: float, total_ms: float) -> Prediction:
    now = timezone.now()
    return PredictionFactory.create(
        status=PredictionStatus.SUCCEEDED, model_version=version, confidence=confidence, label="cat",
        created_at=now, completed_at=now + timedelta(milliseconds=total_ms), total_ms=total_ms,
        queue_ms=1.0, preprocess_ms=1.0, inference_ms=total_ms / 2,
    )  # fmt: skip


@pytest.fixture
def ab_history(db: None) -> tuple[ModelVersion, ModelVersion]:
    """active a:1: 4 predictions, confidence 0.9, 0.8, 0.3, 0.2, total 10..40 ms;
    candidate a:2 (20 %): 2 predictions, confidence 0.95 and 0.4, total 100 and 300 ms."""
    active = ModelVersion.objects.create(name="a", version="1", path="/x/1", status="active", is_active=True)
    candidate = ModelVersion.objects.create(name="a", version="2", path="/x/2", status="candidate", traffic_percent=20)
    for confidence, total in ((0.9, 10.0), (0.8, 20.0), (0.3, 30.0), (0.2, 40.0)):
        _succeeded(active, confidence=confidence, total_ms=total)
    for confidence, total in ((0.95, 100.0), (0.4, 300.0)):
        _succeeded(candidate, confidence=confidence, total_ms=total)
    return active, candidate


def test_stats_compare_the_active_version_and_the_candidate(
    settings: Settings, ab_history: tuple[ModelVersion, ModelVersion]
) -> None:
    settings.LOW_CONFIDENCE_THRESHOLD = 0.5

    comparison = stats.prediction_stats(user=None).comparison

    assert comparison is not None
    assert comparison.traffic_percent == 20
    assert (comparison.active.version, comparison.candidate.version) == ("1", "2")
    assert (comparison.active.predictions, comparison.candidate.predictions) == (4, 2)
    assert comparison.active.mean_confidence == pytest.approx(0.55)
    assert comparison.candidate.mean_confidence == pytest.approx(0.675)
    assert (comparison.active.low_confidence_share, comparison.candidate.low_confidence_share) == (0.5, 0.5)
    assert comparison.active.latency["total_ms"].p50 == pytest.approx(25.0)
    assert comparison.candidate.latency["total_ms"].p50 == pytest.approx(200.0)
    assert comparison.candidate.latency["total_ms"].p95 == pytest.approx(290.0)


def test_stats_api_and_page_show_the_comparison(
    client: Client, settings: Settings, ab_history: tuple[ModelVersion, ModelVersion]
) -> None:
    settings.LOW_CONFIDENCE_THRESHOLD = 0.5
    operator = OperatorFactory.create()
    api = APIClient()
    api.force_authenticate(operator)

    body = api.get("/api/v1/stats/").json()["comparison"]

    assert body["traffic_percent"] == 20
    assert body["active"]["version"] == "1"
    assert body["candidate"]["version"] == "2"
    assert body["candidate"]["predictions"] == 2
    assert body["candidate"]["low_confidence_share"] == 0.5
    assert body["candidate"]["latency_ms"]["total"]["p50"] == pytest.approx(200.0)
    client.force_login(operator)
    page = client.get("/stats/").content.decode()
    assert "A/B test: active vs candidate" in page
    assert "Candidate: a 2" in page


def test_no_comparison_without_a_candidate(db: None, ab_history: tuple[ModelVersion, ModelVersion]) -> None:
    ModelVersion.objects.filter(version="2").update(status="available", traffic_percent=0)

    assert stats.prediction_stats(user=None).comparison is None

"""The model registry: registering exported folders, switching the active version (admin,
API, services), the activation history, and a worker releasing models no longer in use."""

from __future__ import annotations

import gc
import json
import shutil
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from pytest_django import Settings
from rest_framework.test import APIClient

from ml import cache as model_cache
from predictions import services, worker
from predictions.exceptions import ConflictError
from predictions.models import ModelActivation, ModelVersion, Prediction, PredictionStatus, WorkerHeartbeat
from predictions.registry import runtime
from predictions.registry import selectors as registry_selectors
from predictions.registry import services as registry_services
from tests.conftest import CAT_CLASSES, photo_bytes
from tests.factories import PredictionFactory, UserFactory
from tests.predictions.conftest import _copy_model
from training.metrics import ClassificationMetrics

if TYPE_CHECKING:
    from rest_framework.response import _MonkeyPatchedResponse as APIResponse

    from training.finetune import FinetuneResult

MODELS_URL = "/api/v1/models/"
ROLLBACK_URL = "/api/v1/models/rollback/"


@pytest.fixture
def model_v2(tmp_path: Path, model_dir: Path) -> Path:
    return _copy_model(model_dir, tmp_path / "models", "2", parent={"name": "efficientnet_lite0", "version": "1"})


@pytest.fixture
def fresh_classifier_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty per-process model cache for this test (the session's loaded model is kept aside)."""
    monkeypatch.setattr(model_cache, "models", model_cache.ModelCache())


def _assert_error(response: APIResponse, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"code", "message", "field"}
    assert error["message"]
    assert error["code"] == code
    return error


# --- Registering --------------------------------------------------------------------


def test_sync_registers_classes_metrics_and_records_the_default_activation(db: None, model_dir: Path) -> None:
    registry_services.model_version_sync()

    active = registry_selectors.model_version_active()
    assert active is not None
    assert active.status == "active"
    assert active.is_active
    assert len(active.classes) == 1000
    assert active.classes[0] == {"class_id": "n01440764", "label": "tench"}
    assert active.metrics["test_photos"]["top1_accuracy"] > 0
    assert active.metrics["parameters"] == 4694024
    assert active.exported_at is not None
    (activation,) = ModelActivation.objects.all()
    assert (activation.model_version, activation.previous, activation.kind) == (active, None, "default")


def test_register_model_loads_and_registers_a_folder_in_place_then_activates(
    active_model: ModelVersion, model_v2: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    call_command("register_model", str(model_v2), "--activate")

    v2 = ModelVersion.objects.get(name="efficientnet_lite0", version="2")
    assert Path(v2.path) == model_v2.resolve()  # nothing copied
    assert v2.parent == active_model
    assert v2.status == "active"
    assert len(v2.classes) == 1000
    active_model.refresh_from_db()
    assert active_model.status == "available"
    assert not active_model.is_active
    assert ModelActivation.objects.all()[0].previous == active_model
    assert "Registered efficientnet_lite0 v2 (active, 1000 classes)" in capsys.readouterr().out


def test_a_fine_tuned_model_is_registered_with_its_parent_and_its_held_out_figures(
    active_model: ModelVersion, finetuned: FinetuneResult
) -> None:
    """What training.finetune writes (parent_model, test_metrics) is what the registry and
    the stats page show: the parent version and the test split's top-1."""
    from predictions.operations.stats.cards import evaluation_top1

    call_command("register_model", str(finetuned.target), "--no-load")

    digits = ModelVersion.objects.get(name="digits", version="2")
    assert digits.parent == active_model
    assert isinstance(finetuned.test, ClassificationMetrics)
    assert digits.metrics["test"]["top1"] == pytest.approx(finetuned.test.top1, abs=1e-4)
    assert digits.metrics["test"]["count"] == finetuned.test.count
    assert "per_class" not in digits.metrics["test"]  # headline figures, not the report
    assert evaluation_top1(digits.metrics) == ("test.top1", digits.metrics["test"]["top1"])


def test_register_model_as_candidate_does_not_activate(active_model: ModelVersion, model_v2: Path) -> None:
    call_command("register_model", str(model_v2), "--candidate", "--no-load")

    assert ModelVersion.objects.get(version="2").status == "candidate"
    assert registry_selectors.model_version_active() == active_model


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: (d / "metadata.json").write_text(json.dumps({"format_version": 99, "input_size": 224})),
         "format_version 99"),
        (lambda d: (d / "labels.json").unlink(), "No exported model"),
        (lambda d: (d / "labels.json").write_text(json.dumps([{"class_id": "n1", "label": "one"}])),
         "has 1 classes; metadata.json says 1000"),
    ],
)  # fmt: skip
def test_register_model_refuses_a_folder_the_runner_would_refuse(
    db: None, model_v2: Path, change: Callable[[Path], object], message: str
) -> None:
    change(model_v2)

    with pytest.raises(CommandError, match=message):
        call_command("register_model", str(model_v2), "--no-load")

    assert not ModelVersion.objects.filter(version="2").exists()


# --- Switching ----------------------------------------------------------------------


def test_activate_then_roll_back_walks_the_history_and_records_each_switch(
    active_model: ModelVersion, model_v2: Path, tmp_path: Path, switcher: User
) -> None:
    v1 = active_model
    v2 = registry_services.model_version_register(model_dir=model_v2)
    v3 = registry_services.model_version_register(model_dir=_copy_model(Path(v1.path), tmp_path / "more", "3"))

    registry_services.model_version_activate(model_version=v2, user=switcher)
    registry_services.model_version_activate(model_version=v3, user=switcher)
    assert registry_services.model_version_rollback(user=switcher) == v2
    assert registry_services.model_version_rollback(user=switcher) == v1
    with pytest.raises(ConflictError, match="no previous one"):
        registry_services.model_version_rollback(user=switcher)

    history = [(a.previous.version if a.previous else None, a.model_version.version, a.kind) for a in
               ModelActivation.objects.order_by("activated_at", "id")]  # fmt: skip
    assert history == [
        (None, "1", "default"),
        ("1", "2", "activate"),
        ("2", "3", "activate"),
        ("3", "2", "rollback"),
        ("2", "1", "rollback"),
    ]
    assert list(ModelVersion.objects.filter(status="active")) == [v1]
    assert ModelActivation.objects.filter(activated_by=switcher).count() == 4


def test_a_retired_version_is_not_activated_or_rolled_back_to_until_registered_again(
    active_model: ModelVersion, model_v2: Path
) -> None:
    v2 = registry_services.model_version_register(model_dir=model_v2)
    registry_services.model_version_activate(model_version=v2)
    with pytest.raises(ConflictError, match="is active"):
        registry_services.model_version_retire(model_version=v2)
    registry_services.model_version_retire(model_version=active_model)

    with pytest.raises(ConflictError, match="is retired"):
        registry_services.model_version_rollback()
    with pytest.raises(ConflictError, match="is retired"):
        registry_services.model_version_activate(model_version=active_model)
    call_command("register_model", active_model.path, "--no-load")

    assert registry_services.model_version_rollback() == active_model
    assert ModelVersion.objects.get(version="2").status == "available"


def test_activating_the_active_version_records_nothing(active_model: ModelVersion) -> None:
    registry_services.model_version_activate(model_version=active_model)

    assert ModelActivation.objects.count() == 1  # the default activation only


def test_a_switch_takes_effect_for_the_next_prediction_without_a_restart(
    user: User, active_model: ModelVersion, model_v2: Path
) -> None:
    """The worker resolves the active version before each batch: the prediction after a
    switch is classified, and labelled, by the new version in the same process."""
    v2 = registry_services.model_version_register(model_dir=model_v2)

    def upload() -> SimpleUploadedFile:
        return SimpleUploadedFile("cat.jpg", photo_bytes("chelsea"), content_type="image/jpeg")

    before = services.prediction_create(user=user, uploaded_file=upload(), top_k=3)
    services.prediction_process(prediction_id=before.id)

    registry_services.model_version_activate(model_version=v2)
    after = services.prediction_create(user=user, uploaded_file=upload(), top_k=4)  # not a cached result
    services.prediction_process(prediction_id=after.id)

    before.refresh_from_db()
    after.refresh_from_db()
    assert before.model_version == active_model
    assert after.status == PredictionStatus.SUCCEEDED
    assert after.model_version == v2
    assert after.class_id in CAT_CLASSES
    assert str(model_v2.resolve()) in model_cache.loaded_model_dirs()


def test_a_heartbeat_after_a_switch_releases_the_old_version_and_a_batch_holding_it_finishes(
    settings: Settings, active_model: ModelVersion, model_dir: Path, tmp_path: Path, fresh_classifier_cache: None
) -> None:
    """Only the active version and the A/B candidate stay loaded in a worker: one
    heartbeat after a switch the old one is released; a batch that took it before the
    switch still finishes with it (the batch holds it), and then its memory is freed."""
    v2 = registry_services.model_version_register(model_dir=_copy_model(model_dir, tmp_path, "2"))
    v3 = registry_services.model_version_register(model_dir=_copy_model(model_dir, tmp_path, "3"), candidate=True)
    heartbeat = worker.HeartbeatThread(hostname="celery@test:1", queues=["inference"])
    heartbeat.beat()
    in_flight = runtime.classifier_for(model_version=active_model)  # what a running batch holds
    v1_ref = weakref.ref(in_flight)

    registry_services.model_version_activate(model_version=v2)
    heartbeat.beat()

    assert model_cache.loaded_model_dirs() == [str(Path(v2.path).resolve())]
    (result,) = in_flight.classify([photo_bytes("chelsea")], top_k=1)  # the batch finishes on v1
    assert result.top.class_id in CAT_CLASSES
    assert in_flight.version == "1"
    del in_flight, result
    gc.collect()
    assert v1_ref() is None  # nothing holds the old model any more: its memory is free
    assert WorkerHeartbeat.objects.get().model_version == "efficientnet_lite0:2"

    # An A/B candidate with a share of traffic stays loaded beside the active one ...
    registry_services.model_version_set_traffic(model_version=v3, traffic_percent=50)
    runtime.classifier_for(model_version=v3)
    heartbeat.beat()
    assert sorted(model_cache.loaded_model_dirs()) == [str(Path(v.path).resolve()) for v in (v2, v3)]
    assert WorkerHeartbeat.objects.get().model_version == "efficientnet_lite0:2, efficientnet_lite0:3"

    # ... until its share ends.
    registry_services.model_version_set_traffic(model_version=v3, traffic_percent=0)
    heartbeat.beat()
    assert model_cache.loaded_model_dirs() == [str(Path(v2.path).resolve())]


def test_a_version_a_waiting_prediction_was_given_stays_loaded(
    user: User, active_model: ModelVersion, model_dir: Path, tmp_path: Path
) -> None:
    """A reprocess job (or an A/B test just ended) may leave pending rows on a version that
    is no longer active: it is kept until they are done, not loaded again for each batch."""
    v2 = registry_services.model_version_register(model_dir=_copy_model(model_dir, tmp_path, "2"))
    waiting = PredictionFactory.create(user=user, assigned_version=active_model)
    registry_services.model_version_activate(model_version=v2)

    assert list(registry_selectors.model_version_in_use()) == [v2, active_model]
    Prediction.objects.filter(id=waiting.id).update(status=PredictionStatus.FAILED)
    assert list(registry_selectors.model_version_in_use()) == [v2]


def test_past_the_cap_the_least_recently_used_model_is_released(
    settings: Settings, model_dir: Path, tmp_path: Path, fresh_classifier_cache: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A safety net for a worker whose heartbeat is late: never more than MAX_LOADED."""
    monkeypatch.setattr(model_cache.models, "max_loaded", 1)
    first = model_cache.get_classifier(model_dir, engine=settings.MODEL_ENGINE)
    first_ref = weakref.ref(first)
    del first
    v2 = _copy_model(model_dir, tmp_path, "2")

    model_cache.get_classifier(v2, engine=settings.MODEL_ENGINE)
    gc.collect()

    assert model_cache.loaded_model_dirs() == [str(v2.resolve())]
    assert first_ref() is None


# --- Admin --------------------------------------------------------------------------


def test_admin_activate_and_roll_back_actions(
    client: Client, switcher: User, active_model: ModelVersion, model_v2: Path
) -> None:
    v2 = registry_services.model_version_register(model_dir=model_v2)
    client.force_login(switcher)
    changelist = reverse("admin:predictions_modelversion_changelist")

    listing = client.get(changelist)
    assert b'value="activate"' in listing.content
    assert b'value="rollback"' in listing.content
    # Each switch is applied by the confirmation page's button (tests/predictions/test_registry_admin.py).
    activate = {"action": "activate", "_selected_action": [v2.pk], "confirmed_switch": "yes"}
    client.post(changelist, {**activate, "active_shown": active_model.pk})
    assert registry_selectors.model_version_active() == v2
    rollback = {"action": "rollback", "_selected_action": [v2.pk], "confirmed_switch": "yes"}
    client.post(changelist, {**rollback, "rollback_to": active_model.pk})

    assert registry_selectors.model_version_active() == active_model
    assert ModelActivation.objects.all()[0].kind == "rollback"
    assert ModelActivation.objects.all()[0].activated_by == switcher


def test_admin_roll_back_with_nothing_to_go_back_to_says_so(
    client: Client, switcher: User, active_model: ModelVersion
) -> None:
    client.force_login(switcher)
    changelist = reverse("admin:predictions_modelversion_changelist")

    response = client.post(changelist, {"action": "rollback", "_selected_action": [active_model.pk]}, follow=True)

    assert b"no previous one to roll back to" in response.content
    assert registry_selectors.model_version_active() == active_model


# --- API ----------------------------------------------------------------------------


def test_model_list_shows_status_classes_metrics_and_parent(
    api_for: Callable[[User], APIClient], user: User, active_model: ModelVersion, model_v2: Path
) -> None:
    registry_services.model_version_register(model_dir=model_v2)

    listing = api_for(user).get(MODELS_URL).json()

    by_version = {entry["version"]: entry for entry in listing}
    assert by_version["1"]["status"] == "active"
    assert by_version["1"]["is_active"] is True
    assert by_version["2"]["status"] == "available"
    assert by_version["2"]["parent"] == {"name": "efficientnet_lite0", "version": "1"}
    assert by_version["1"]["num_classes"] == 1000
    assert by_version["1"]["classes"][0] == {"class_id": "n01440764", "label": "tench"}
    assert "test_photos" in by_version["1"]["metrics"]
    assert "path" not in by_version["1"]  # the server's paths are not shown


def test_api_activate_and_roll_back(
    api_for: Callable[[User], APIClient], switcher: User, active_model: ModelVersion, model_v2: Path
) -> None:
    registry_services.model_version_register(model_dir=model_v2)
    api = api_for(switcher)

    activated = api.post(f"{MODELS_URL}efficientnet_lite0/2/activate/")
    assert activated.status_code == 200
    assert activated.json()["status"] == "active"
    history = api.get(f"{MODELS_URL}activations/").json()
    assert history[0]["model"] == "efficientnet_lite0:2"
    assert history[0]["previous"] == "efficientnet_lite0:1"
    assert history[0]["activated_by"] == switcher.username

    rolled_back = api.post(ROLLBACK_URL)
    assert rolled_back.status_code == 200
    assert rolled_back.json()["version"] == "1"
    assert registry_selectors.model_version_active() == active_model


def test_api_switching_needs_the_permission(
    api_for: Callable[[User], APIClient], user: User, active_model: ModelVersion, model_v2: Path
) -> None:
    registry_services.model_version_register(model_dir=model_v2)
    api = api_for(UserFactory.create(is_staff=True))  # staff alone is not enough

    _assert_error(api.post(f"{MODELS_URL}efficientnet_lite0/2/activate/"), 403, "permission_denied")
    _assert_error(api.post(ROLLBACK_URL), 403, "permission_denied")
    _assert_error(api.get(f"{MODELS_URL}activations/"), 403, "permission_denied")
    _assert_error(APIClient().post(ROLLBACK_URL), 401, "not_authenticated")
    assert registry_selectors.model_version_active() == active_model


def test_api_unknown_version_is_404_and_nothing_to_roll_back_is_409(
    api_for: Callable[[User], APIClient], switcher: User, active_model: ModelVersion
) -> None:
    api = api_for(switcher)

    error = _assert_error(api.post(f"{MODELS_URL}efficientnet_lite0/9/activate/"), 404, "not_found")
    assert "efficientnet_lite0:9" in error["message"]
    _assert_error(api.post(ROLLBACK_URL), 409, "conflict")


def test_api_activate_a_version_whose_files_are_gone_is_503(
    api_for: Callable[[User], APIClient], switcher: User, active_model: ModelVersion, model_v2: Path
) -> None:
    v2 = registry_services.model_version_register(model_dir=model_v2)
    shutil.rmtree(model_v2)

    error = _assert_error(
        api_for(switcher).post(f"{MODELS_URL}efficientnet_lite0/2/activate/"), 503, "model_unavailable"
    )

    assert str(model_v2) not in error["message"]
    assert registry_selectors.model_version_active() == active_model
    assert not ModelActivation.objects.filter(model_version=v2)

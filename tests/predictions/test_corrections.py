"""Corrections: the owner marks a prediction wrong and gives the right label (card, history,
API); operators export them as a class-per-folder dataset (command, admin zip); the stats
count them per model version and show the active model's card."""

from __future__ import annotations

import csv
import io
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from predictions import services
from predictions.exceptions import ApplicationError, ConflictError
from predictions.models import Correction, ModelVersion, ModelVersionStatus, Prediction, PredictionStatus
from predictions.reviews import services as review_services
from tests.conftest import api_as
from tests.factories import (
    ModelVersionFactory,
    OperatorFactory,
    PredictionFactory,
    SucceededPredictionFactory,
    UserFactory,
)

if TYPE_CHECKING:
    from rest_framework.response import _MonkeyPatchedResponse as APIResponse


@pytest.fixture
def model_version(db: None) -> ModelVersion:
    return ModelVersionFactory.create()


def _succeeded(user: User, model_version: ModelVersion, **fields: object) -> Prediction:
    return SucceededPredictionFactory.create(user=user, model_version=model_version, **fields)


@pytest.fixture
def done(user: User, model_version: ModelVersion) -> Prediction:
    return _succeeded(user, model_version)


def _correct(user: User, prediction: Prediction, label: str) -> APIResponse:
    return api_as(user).post(f"/api/v1/predictions/{prediction.id}/correction/", {"label": label}, format="json")


# --- The service -----------------------------------------------------------------


def test_a_label_of_the_model_is_matched_ignoring_case_and_the_prediction_stays_as_it_was(
    user: User, done: Prediction, model_version: ModelVersion
) -> None:
    correction = review_services.correction_set(prediction=done, user=user, label="  TABBY   Cat ")

    assert (correction.label, correction.class_id) == ("tabby cat", "n02123045")  # the model's spelling
    assert (correction.predicted_label, correction.model_version, correction.corrected_by) == (
        "tiger cat", model_version, user,
    )  # fmt: skip
    row = Prediction.objects.get(id=done.id)
    assert (row.label, row.class_id, row.confidence) == ("tiger cat", "n02123159", 0.61)


def test_free_text_is_a_new_class_and_a_second_correction_replaces_the_first(user: User, done: Prediction) -> None:
    first = review_services.correction_set(prediction=done, user=user, label="Chihuahua")
    second = review_services.correction_set(prediction=done, user=user, label="ocelot", new_class=True)

    assert Correction.objects.count() == 1
    row = Correction.objects.get()
    assert (row.label, row.class_id, row.new_class) == ("ocelot", "", True)
    assert row.created_at == first.created_at
    assert row.updated_at >= second.created_at


@pytest.mark.parametrize(("label", "status"), [("", 400), ("   ", 400), ("Tiger Cat", 409)])
def test_an_empty_label_or_the_models_own_is_refused(user: User, done: Prediction, label: str, status: int) -> None:
    with pytest.raises(ApplicationError) as refused:
        review_services.correction_set(prediction=done, user=user, label=label)

    # Empty: a malformed request (400). The model's own label: the prediction's state refuses it (409).
    assert refused.value.status_code == status
    assert refused.value.field == "label"
    assert not Correction.objects.exists()


@pytest.mark.parametrize("status", [PredictionStatus.PENDING, PredictionStatus.RUNNING, PredictionStatus.FAILED])
def test_only_a_succeeded_prediction_is_corrected(user: User, status: str) -> None:
    extra = {"completed_at": timezone.now(), "error": "broken"} if status == "failed" else {}
    prediction = PredictionFactory.create(user=user, status=status, **extra)

    with pytest.raises(ConflictError, match=f"this one is {status}"):
        review_services.correction_set(prediction=prediction, user=user, label="cat")
    assert not Correction.objects.exists()


# --- The API -----------------------------------------------------------------------


def test_api_correction_answers_the_correction(user: User, done: Prediction, model_version: ModelVersion) -> None:
    response = _correct(user, done, "tabby CAT")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["prediction"] == str(done.id)
    assert body["url"].endswith(f"/api/v1/predictions/{done.id}/")
    assert (body["label"], body["class_id"], body["predicted_label"]) == ("tabby cat", "n02123045", "tiger cat")
    assert body["model"] == {"name": "lite", "version": "3"}

    again = api_as(user).post(
        f"/api/v1/predictions/{done.id}/correction/",
        {"label": "a cat I have never seen", "new_class": True},
        format="json",
    )
    assert again.status_code == 200
    assert (again.json()["class_id"], again.json()["new_class"]) == ("", True)
    assert Correction.objects.get(prediction=done).label == "a cat I have never seen"


def test_api_empty_or_missing_label_is_400(user: User, done: Prediction) -> None:
    empty = _correct(user, done, "  ")
    missing = api_as(user).post(f"/api/v1/predictions/{done.id}/correction/", {}, format="json")

    assert empty.status_code == 400
    assert empty.json()["error"]["field"] == "label"
    assert missing.status_code == 400
    assert missing.json()["error"]["field"] == "label"
    assert not Correction.objects.exists()


def test_api_correction_of_a_prediction_not_succeeded_is_409(user: User) -> None:
    pending = PredictionFactory.create(user=user)

    response = _correct(user, pending, "cat")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"


def test_api_correction_of_another_users_prediction_is_404(done: Prediction) -> None:
    response = _correct(UserFactory.create(), done, "cat")

    assert response.status_code == 404
    assert set(response.json()["error"]) == {"code", "message", "field"}
    assert not Correction.objects.exists()


# --- Pages -----------------------------------------------------------------------


def test_the_result_card_has_a_correction_form_that_records_and_shows_it(user_client: Client, done: Prediction) -> None:
    detail_url = reverse("predictions:detail", args=[done.id])
    correct_url = reverse("predictions:correct", args=[done.id])
    page = user_client.get(detail_url)
    assert correct_url.encode() in page.content
    assert b"Wrong: pick the right class" in page.content
    assert b'<option value="tabby cat">' in page.content  # the model's other guesses are offered

    response = user_client.post(correct_url, {"label": "Tabby cat"}, follow=True)

    assert response.redirect_chain[-1][0].startswith(detail_url)
    assert b"You corrected this to" in response.content
    assert b"tabby cat" in response.content
    assert Correction.objects.get(prediction=done).class_id == "n02123045"
    assert user_client.get(correct_url).status_code == 405


def test_the_form_says_why_a_correction_was_refused(user_client: Client, done: Prediction) -> None:
    response = user_client.post(reverse("predictions:correct", args=[done.id]), {"label": ""}, follow=True)

    assert b"Give the right label." in response.content
    assert not Correction.objects.exists()


def test_no_correction_form_on_a_card_that_has_not_succeeded(user_client: Client, user: User) -> None:
    pending = PredictionFactory.create(user=user)

    assert b"Wrong label?" not in user_client.get(reverse("predictions:detail", args=[pending.id])).content


def test_another_users_prediction_cannot_be_corrected_from_the_page(client: Client, done: Prediction) -> None:
    client.force_login(UserFactory.create())

    assert client.post(reverse("predictions:correct", args=[done.id]), {"label": "cat"}).status_code == 404


def test_history_links_to_the_form_and_shows_the_correction(
    user_client: Client, user: User, done: Prediction, model_version: ModelVersion
) -> None:
    other = _succeeded(user, model_version, label="Chihuahua", class_id="n02085620")
    review_services.correction_set(prediction=other, user=user, label="ocelot", new_class=True)

    page = user_client.get(reverse("predictions:history"), {"view": "list"}).content.decode()
    gallery = user_client.get(reverse("predictions:history"), {"label": "ocelot"}).content.decode()

    assert f'{reverse("predictions:detail", args=[done.id])}?back=view%3Dlist#review-{done.id}">Wrong?' in page
    assert '→ <span class="label">ocelot</span>' in page
    assert "Change correction" in page
    # The label search finds the corrected label too; the tile says what the owner said.
    assert 'You corrected it: <span class="label">ocelot</span>' in gallery
    assert gallery.count('class="card"') == 1


# --- Export: command and admin action ----------------------------------------------


@pytest.fixture
def corrected(user: User, model_version: ModelVersion) -> list[Correction]:
    """Three corrections of model lite:3 (two to tabby cat, one to a new class) and one of
    another version."""
    rows = []
    for label in ["tabby cat", "Tabby Cat", "snow leopard"]:
        prediction = _succeeded(user, model_version)
        rows.append(
            review_services.correction_set(
                prediction=prediction, user=user, label=label, new_class=label == "snow leopard"
            )
        )
    old = ModelVersionFactory.create(
        version="2", is_active=False, status=ModelVersionStatus.AVAILABLE, metrics={}, exported_at=None
    )
    rows.append(review_services.correction_set(prediction=_succeeded(user, old), user=user, label="Chihuahua"))
    return rows


def _manifest(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_export_command_writes_a_folder_per_label_and_a_manifest(corrected: list[Correction], tmp_path: Path) -> None:
    out = io.StringIO()
    call_command("export_corrections", str(tmp_path / "set"), "--model-version", "lite:3", stdout=out)

    root = tmp_path / "set"
    assert sorted(p.name for p in root.iterdir()) == ["manifest.csv", "snow leopard", "tabby cat"]
    tabby = sorted(p.name for p in (root / "tabby cat").iterdir())
    assert tabby == sorted(f"{c.prediction_id}.jpg" for c in corrected[:2])
    image = root / "tabby cat" / tabby[0]
    assert image.read_bytes() == Path(Prediction.objects.get(id=image.stem).image.path).read_bytes()
    rows = _manifest((root / "manifest.csv").read_text())
    assert len(rows) == 3
    assert {r["model_version"] for r in rows} == {"3"}
    new_class = next(r for r in rows if r["label"] == "snow leopard")
    assert new_class["class_id"] == ""
    assert new_class["predicted_label"] == "tiger cat"
    assert new_class["path"] == f"snow leopard/{corrected[2].prediction_id}.jpg"
    assert "Exported 3 image(s) (3 corrected, 0 confirmed) in 2 label folder(s)" in out.getvalue()


def test_the_exported_set_is_what_finetune_reads_a_new_class_included(
    corrected: list[Correction], tmp_path: Path
) -> None:
    from training.finetune import scan_folder

    call_command("export_corrections", str(tmp_path / "set"), stdout=io.StringIO())
    folder = scan_folder(tmp_path / "set")

    # One class per label, the free-text one ("snow leopard") a class of its own; the manifest is not an image.
    assert folder.classes == ["Chihuahua", "snow leopard", "tabby cat"]
    by_class: dict[str, set[str]] = {}
    for path, target in zip(folder.files, folder.targets, strict=True):
        by_class.setdefault(folder.classes[target], set()).add(path.stem)
    assert by_class == {
        "Chihuahua": {str(corrected[3].prediction_id)},
        "snow leopard": {str(corrected[2].prediction_id)},
        "tabby cat": {str(c.prediction_id) for c in corrected[:2]},
    }
    for path in folder.files:  # the uploaded bytes themselves, ready to decode
        assert path.read_bytes() == Path(Prediction.objects.get(id=path.stem).image.path).read_bytes()


def test_export_never_overwrites_silently_and_a_rerun_keeps_the_labels(
    corrected: list[Correction], tmp_path: Path, user: User
) -> None:
    root = tmp_path / "set"
    call_command("export_corrections", str(root), stdout=io.StringIO())
    call_command("export_corrections", str(root), stdout=io.StringIO())  # unchanged: fine
    assert len(_manifest((root / "manifest.csv").read_text())) == 4

    # A newer correction changes what the export would write.
    review_services.correction_set(prediction=corrected[2].prediction, user=user, label="lynx", new_class=True)
    mine = root / "tabby cat" / f"{corrected[0].prediction_id}.jpg"
    mine.write_bytes(b"edited by hand")
    with pytest.raises(CommandError, match=r"2 file\(s\) in .* differ .*nothing was written"):
        call_command("export_corrections", str(root), stdout=io.StringIO())
    assert mine.read_bytes() == b"edited by hand"
    assert not (root / "lynx").exists()

    out = io.StringIO()
    call_command("export_corrections", str(root), "--overwrite", stdout=out)
    assert "2 file(s) replaced" in out.getvalue()
    assert (root / "lynx").is_dir()
    assert mine.read_bytes() != b"edited by hand"
    assert Correction.objects.get(id=corrected[0].id).label == "tabby cat"


def test_a_corrected_prediction_is_not_run_again_so_its_correction_stays(user: User, done: Prediction) -> None:
    review_services.correction_set(prediction=done, user=user, label="tabby cat")

    with pytest.raises(ConflictError):
        services.prediction_retry(prediction=done)

    assert Correction.objects.get(prediction=done).label == "tabby cat"
    assert Prediction.objects.get(id=done.id).status == PredictionStatus.SUCCEEDED


def test_export_command_refuses_an_unknown_model_version(db: None, tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="No model version lite:9"):
        call_command("export_corrections", str(tmp_path), "--model-version", "lite:9")
    with pytest.raises(CommandError, match="NAME:VERSION"):
        call_command("export_corrections", str(tmp_path), "--model-version", "lite")


def test_admin_export_action_downloads_the_same_dataset_as_a_zip(client: Client, corrected: list[Correction]) -> None:
    client.force_login(OperatorFactory.create())
    changelist = reverse("admin:predictions_correction_changelist")
    assert client.get(changelist).status_code == 200

    response = client.post(changelist, {"action": "export_dataset", "_selected_action": [c.pk for c in corrected[:3]]})

    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    assert "attachment" in response["Content-Disposition"]
    archive = zipfile.ZipFile(io.BytesIO(response.getvalue()))
    names = sorted(archive.namelist())
    assert names == sorted(["manifest.csv", *(f"{c.label}/{c.prediction_id}.jpg" for c in corrected[:3])])
    assert len(_manifest(archive.read("manifest.csv").decode())) == 3


def test_staff_without_the_permission_see_no_corrections(client: Client, corrected: list[Correction]) -> None:
    client.force_login(UserFactory.create(is_staff=True))

    assert client.get(reverse("admin:predictions_correction_changelist")).status_code == 403


# --- Stats -------------------------------------------------------------------------


def test_stats_count_corrections_per_model_version_and_show_the_model_card(
    user: User, user_client: Client, model_version: ModelVersion
) -> None:
    predictions = [_succeeded(user, model_version) for _ in range(4)]
    review_services.correction_set(prediction=predictions[0], user=user, label="tabby cat")
    PredictionFactory.create(user=user, status=PredictionStatus.FAILED, completed_at=timezone.now())

    body = api_as(user).get("/api/v1/stats/").json()
    (row,) = body["per_model_version"]
    assert (row["predictions"], row["corrections"], row["correction_rate"]) == (4, 1, 0.25)
    card = body["active_model"]
    assert (card["name"], card["version"], card["classes"]) == ("lite", "3", 3)
    assert card["trained_at"].startswith("2026-11-20T")
    assert card["metrics"] == {"test_photos.count": "5", "test_photos.top1_accuracy": "0.8", "num_classes": "3"}

    page = user_client.get("/stats/").content.decode()
    assert "The model</h2>" in page
    assert "lite v3" in page
    assert "built <time" in page
    # The card in words with its sample size, never its raw keys; the rate as a percentage.
    assert "Top-1 80 % on 5 test images: too few to tell much (when it was built)." in page
    assert "test_photos.top1_accuracy" not in page
    assert "correction rate <strong>25 %</strong>" in page


def test_stats_counts_only_the_users_own_corrections(user: User, model_version: ModelVersion) -> None:
    mine = _succeeded(user, model_version)
    theirs = _succeeded(UserFactory.create(), model_version)
    review_services.correction_set(prediction=theirs, user=theirs.user, label="tabby cat")

    (row,) = api_as(user).get("/api/v1/stats/").json()["per_model_version"]

    assert (row["predictions"], row["corrections"], row["correction_rate"]) == (1, 0, 0.0)
    assert not Correction.objects.filter(prediction=mine).exists()


def test_stats_without_an_active_model_has_no_card(user: User) -> None:
    assert api_as(user).get("/api/v1/stats/").json()["active_model"] is None


def test_stats_window_excludes_old_corrected_predictions(user: User, model_version: ModelVersion) -> None:
    old = _succeeded(user, model_version)
    Prediction.objects.filter(id=old.id).update(created_at=timezone.now() - timedelta(days=40))
    review_services.correction_set(prediction=old, user=user, label="tabby cat")

    assert api_as(user).get("/api/v1/stats/?days=30").json()["per_model_version"] == []
    (row,) = api_as(user).get("/api/v1/stats/?days=90").json()["per_model_version"]
    assert row["corrections"] == 1

"""Confirmations: the owner marks a succeeded prediction right (card, history, API); a
prediction has one review, a correction or a confirmation, the later replacing the
earlier; the stats show each version's live top-1 (confirmed / reviewed) beside the
model card's; confirmed predictions are exported as labelled data too."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import IntegrityError, transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from predictions.exceptions import ApplicationError, ConflictError, NotFoundError
from predictions.models import Correction, ModelVersion, ModelVersionStatus, Prediction, PredictionStatus
from predictions.registry import services as registry_services
from predictions.reviews import services as review_services
from tests.conftest import api_as
from tests.factories import (
    ModelVersionFactory,
    OperatorFactory,
    PredictionFactory,
    SucceededPredictionFactory,
    UserFactory,
)


@pytest.fixture
def model_version(db: None) -> ModelVersion:
    return ModelVersionFactory.create(
        metrics={"test_photos": {"count": 5, "top1_accuracy": 0.8, "top5_accuracy": 1.0}, "num_classes": 3}
    )


def _succeeded(user: User, model_version: ModelVersion, **fields: object) -> Prediction:
    return SucceededPredictionFactory.create(user=user, model_version=model_version, **fields)


@pytest.fixture
def done(user: User, model_version: ModelVersion) -> Prediction:
    return _succeeded(user, model_version)


def _review_url(prediction: Prediction, kind: str) -> str:
    return f"/api/v1/predictions/{prediction.id}/{kind}/"


# --- The service -------------------------------------------------------------------


def test_confirm_then_correct_then_confirm_again_keeps_one_review(
    user: User, done: Prediction, model_version: ModelVersion
) -> None:
    confirmation = review_services.prediction_confirm(prediction=done, user=user)
    assert (confirmation.confirmed, confirmation.label, confirmation.class_id) == (True, "tiger cat", "n02123159")
    assert (confirmation.predicted_label, confirmation.model_version, confirmation.corrected_by) == (
        "tiger cat", model_version, user,
    )  # fmt: skip

    review_services.correction_set(prediction=done, user=user, label="tabby cat")
    row = Correction.objects.get()
    assert (row.confirmed, row.label, row.class_id) == (False, "tabby cat", "n02123045")

    review_services.prediction_confirm(prediction=done, user=user)
    row = Correction.objects.get()
    assert (row.confirmed, row.label, row.class_id) == (True, "tiger cat", "n02123159")
    assert row.created_at == confirmation.created_at
    assert row.updated_at > confirmation.updated_at
    # Confirming twice is still one confirmation; the prediction's own answer never changes.
    review_services.prediction_confirm(prediction=done, user=user)
    assert Correction.objects.count() == 1
    assert Prediction.objects.get(id=done.id).label == "tiger cat"


def test_correcting_with_the_models_own_label_points_at_confirming(user: User, done: Prediction) -> None:
    with pytest.raises(ApplicationError, match="if it is right, confirm it") as refused:
        review_services.correction_set(prediction=done, user=user, label="TIGER cat")

    # 409: the label is well formed; it is the prediction's own answer that refuses it.
    assert refused.value.status_code == 409
    assert not Correction.objects.exists()


@pytest.mark.parametrize("status", [PredictionStatus.PENDING, PredictionStatus.RUNNING, PredictionStatus.FAILED])
def test_only_a_succeeded_prediction_is_confirmed(user: User, status: str) -> None:
    extra = {"completed_at": timezone.now(), "error": "broken"} if status == "failed" else {}
    prediction = PredictionFactory.create(user=user, status=status, **extra)

    with pytest.raises(ConflictError, match=f"can be confirmed; this one is {status}") as refused:
        review_services.prediction_confirm(prediction=prediction, user=user)
    assert refused.value.status_code == 409
    assert not Correction.objects.exists()


def test_a_confirmation_must_carry_the_models_own_label(user: User, done: Prediction) -> None:
    review_services.prediction_confirm(prediction=done, user=user)

    with pytest.raises(IntegrityError), transaction.atomic():
        Correction.objects.filter(prediction=done).update(label="ocelot")
    assert Correction.objects.get().label == "tiger cat"


def test_withdrawing_takes_back_only_the_kind_asked_for(user: User, done: Prediction) -> None:
    review_services.prediction_confirm(prediction=done, user=user)
    with pytest.raises(NotFoundError, match="no correction to withdraw"):
        review_services.correction_withdraw(prediction=done, confirmed=False)
    assert Correction.objects.filter(confirmed=True).count() == 1

    review_services.correction_withdraw(prediction=done, confirmed=True)
    assert not Correction.objects.exists()


# --- The API -----------------------------------------------------------------------


def test_api_confirmation_answers_the_review_and_replaces_a_correction(user: User, done: Prediction) -> None:
    api = api_as(user)
    assert api.post(_review_url(done, "correction"), {"label": "tabby cat"}, format="json").json()["confirmed"] is False

    response = api.post(_review_url(done, "confirmation"))

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["prediction"] == str(done.id)
    assert body["url"].endswith(f"/api/v1/predictions/{done.id}/")
    assert (body["confirmed"], body["label"], body["class_id"], body["predicted_label"]) == (
        True, "tiger cat", "n02123159", "tiger cat",
    )  # fmt: skip
    assert body["model"] == {"name": "lite", "version": "3"}
    assert Correction.objects.get(prediction=done).confirmed

    same_label = api.post(_review_url(done, "correction"), {"label": "tiger cat"}, format="json")
    assert same_label.status_code == 409
    assert "confirm it instead" in same_label.json()["error"]["message"]


def test_api_confirmation_of_a_prediction_not_succeeded_is_409(user: User) -> None:
    response = api_as(user).post(_review_url(PredictionFactory.create(user=user), "confirmation"))

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"
    assert not Correction.objects.exists()


def test_api_confirmation_of_another_users_prediction_is_404(done: Prediction) -> None:
    stranger = api_as(UserFactory.create())

    assert stranger.post(_review_url(done, "confirmation")).status_code == 404
    assert stranger.delete(_review_url(done, "confirmation")).status_code == 404
    assert not Correction.objects.exists()


def test_api_delete_withdraws_the_confirmation_or_the_correction(user: User, done: Prediction) -> None:
    api = api_as(user)
    api.post(_review_url(done, "confirmation"))

    wrong_kind = api.delete(_review_url(done, "correction"))
    assert wrong_kind.status_code == 404
    assert "no correction" in wrong_kind.json()["error"]["message"]
    assert api.delete(_review_url(done, "confirmation")).status_code == 204
    assert not Correction.objects.exists()
    assert api.delete(_review_url(done, "confirmation")).status_code == 404

    api.post(_review_url(done, "correction"), {"label": "ocelot", "new_class": True}, format="json")
    assert api.delete(_review_url(done, "correction")).status_code == 204
    assert not Correction.objects.exists()


def test_schema_documents_confirming_and_withdrawing(user: User) -> None:
    paths = api_as(user).get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()["paths"]

    confirmation = paths["/api/v1/predictions/{prediction_id}/confirmation/"]
    correction = paths["/api/v1/predictions/{prediction_id}/correction/"]
    assert set(confirmation) == set(correction) == {"post", "delete"}
    assert set(confirmation["post"]["responses"]) == {"200", "401", "404", "409", "429"}
    assert "requestBody" not in confirmation["post"]
    assert set(confirmation["delete"]["responses"]) == set(correction["delete"]["responses"]) == {"204", "401", "404"}
    ok = confirmation["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == correction["post"]["responses"]["200"]["content"]["application/json"]["schema"]


# --- Pages -------------------------------------------------------------------------


def test_the_page_has_a_correct_button_that_records_and_shows_it(user_client: Client, done: Prediction) -> None:
    detail_url = reverse("predictions:detail", args=[done.id])
    confirm_url = reverse("predictions:confirm", args=[done.id])
    page = user_client.get(detail_url).content.decode()
    assert f'action="{confirm_url}"' in page
    assert ">Correct</button>" in page
    assert "Wrong: pick the right class" in page

    response = user_client.post(confirm_url, follow=True)

    assert response.redirect_chain[-1][0] == f"{detail_url}#review-{done.id}"
    page = response.content.decode()
    assert "You confirmed this" in page
    assert ">Correct</button>" not in page
    assert "you confirmed photo" in page.lower()  # the message names the file
    assert Correction.objects.get(prediction=done).confirmed
    assert user_client.get(confirm_url).status_code == 405


def test_the_card_switches_between_correction_and_confirmation_and_undoes(
    user_client: Client, done: Prediction
) -> None:
    user_client.post(reverse("predictions:correct", args=[done.id]), {"label": "tabby cat"})
    page = user_client.get(reverse("predictions:detail", args=[done.id])).content.decode()
    assert "You corrected this to" in page
    assert ">Correct</button>" in page
    assert "was right after all" in page

    page = user_client.post(reverse("predictions:confirm", args=[done.id]), follow=True).content.decode()
    assert "You confirmed this" in page
    assert "You corrected this to" not in page
    assert Correction.objects.get(prediction=done).confirmed

    page = user_client.post(reverse("predictions:review-withdraw", args=[done.id]), follow=True).content.decode()
    assert "is not reviewed any more" in page
    assert ">Correct</button>" in page
    assert not Correction.objects.exists()


def test_no_right_button_on_a_card_that_has_not_succeeded(user_client: Client, user: User) -> None:
    pending = PredictionFactory.create(user=user)

    page = user_client.get(reverse("predictions:detail", args=[pending.id])).content.decode()

    assert reverse("predictions:confirm", args=[pending.id]) not in page


def test_the_page_says_why_a_confirmation_was_refused(user_client: Client, user: User) -> None:
    failed = PredictionFactory.create(user=user, status=PredictionStatus.FAILED, completed_at=timezone.now(), error="x")

    response = user_client.post(reverse("predictions:confirm", args=[failed.id]), follow=True)

    assert b"Only a succeeded prediction can be confirmed; this one is failed." in response.content
    assert not Correction.objects.exists()


def test_another_users_prediction_cannot_be_confirmed_from_the_page(client: Client, done: Prediction) -> None:
    client.force_login(UserFactory.create())

    assert client.post(reverse("predictions:confirm", args=[done.id])).status_code == 404
    assert client.post(reverse("predictions:review-withdraw", args=[done.id])).status_code == 404


def test_history_rows_have_a_correct_button_that_stays_on_the_list(
    user_client: Client, user: User, done: Prediction, model_version: ModelVersion
) -> None:
    history = reverse("predictions:history")
    confirm_url = reverse("predictions:confirm", args=[done.id])
    assert f'action="{confirm_url}"' in user_client.get(history, {"view": "list"}).content.decode()

    # Pressed on the list: back to the same filtered list, at the same row (not to the photo's page).
    response = user_client.post(confirm_url, {"from": "history", "back": "view=list&label=cat"})
    assert response["Location"] == f"{history}?label=cat&view=list#row-{done.id}"
    page = user_client.get(history, {"view": "list"}).content.decode()

    assert f'action="{confirm_url}"' not in page
    assert "You confirmed this" in page
    assert 'title="You confirmed it"' in page
    assert "✓ You confirmed it" in user_client.get(history).content.decode()  # the gallery's tile


# --- Stats -------------------------------------------------------------------------


@pytest.fixture
def history(user: User, model_version: ModelVersion) -> list[Prediction]:
    """Six succeeded predictions of lite:3 by ``user``: 3 confirmed, 1 corrected, 2 not
    reviewed. Live top-1 = 3 / 4 = 0.75, correction rate = 1 / 6."""
    predictions = [_succeeded(user, model_version) for _ in range(6)]
    for prediction in predictions[:3]:
        review_services.prediction_confirm(prediction=prediction, user=user)
    review_services.correction_set(prediction=predictions[3], user=user, label="tabby cat")
    return predictions


def test_stats_live_top1_is_confirmed_over_reviewed(user: User, user_client: Client, history: list[Prediction]) -> None:
    body = api_as(user).get("/api/v1/stats/").json()

    (row,) = body["per_model_version"]
    assert (row["predictions"], row["reviewed"], row["confirmed"], row["corrections"]) == (6, 4, 3, 1)
    assert row["live_top1"] == 0.75
    assert row["correction_rate"] == pytest.approx(1 / 6)
    card = body["active_model"]
    assert (card["live_top1"], card["reviewed"]) == (0.75, 4)
    assert (card["evaluation_top1"], card["evaluation_top1_metric"]) == (0.8, "test_photos.top1_accuracy")

    page = user_client.get("/stats/").content.decode()
    assert "Live top-1 75 %</strong> on 4 reviewed predictions (3 confirmed, 1 corrected)" in page
    assert "Right in 75 %</strong> of the 4 results you reviewed" in page
    assert "Top-1 80 % on 5 test images: too few to tell much" in page
    assert "test_photos.top1_accuracy" not in page
    assert "correction rate <strong>16.7 %</strong>" in page


def test_stats_live_top1_is_none_when_nothing_was_reviewed(
    user: User, user_client: Client, model_version: ModelVersion
) -> None:
    _succeeded(user, model_version)

    (row,) = api_as(user).get("/api/v1/stats/").json()["per_model_version"]

    assert (row["reviewed"], row["confirmed"], row["live_top1"], row["correction_rate"]) == (0, 0, None, 0.0)
    assert "Live top-1: no reviewed predictions in this window" in user_client.get("/stats/").content.decode()


def test_a_user_sees_live_top1_of_their_own_predictions_an_operator_of_everyones(
    user: User, history: list[Prediction], model_version: ModelVersion
) -> None:
    stranger = UserFactory.create()
    theirs = _succeeded(stranger, model_version)
    review_services.correction_set(prediction=theirs, user=stranger, label="Chihuahua")

    (mine,) = api_as(user).get("/api/v1/stats/").json()["per_model_version"]
    (everyone,) = api_as(OperatorFactory.create()).get("/api/v1/stats/").json()["per_model_version"]

    assert (mine["reviewed"], mine["confirmed"], mine["live_top1"]) == (4, 3, 0.75)
    assert (everyone["predictions"], everyone["reviewed"], everyone["confirmed"], everyone["corrections"]) == (
        7, 5, 3, 2,
    )  # fmt: skip
    assert everyone["live_top1"] == 0.6


def test_a_review_counts_for_the_version_whose_answer_it_reviewed(user: User, model_version: ModelVersion) -> None:
    older = ModelVersionFactory.create(
        version="2", is_active=False, status=ModelVersionStatus.AVAILABLE, metrics={}, exported_at=None
    )
    prediction = _succeeded(user, older)
    review_services.prediction_confirm(prediction=prediction, user=user)
    # Reprocessed: the active version answers it now; the owner confirmed the old answer.
    Prediction.objects.filter(id=prediction.id).update(model_version=model_version, label="tabby cat")

    (row,) = api_as(user).get("/api/v1/stats/").json()["per_model_version"]

    assert (row["version"], row["predictions"], row["reviewed"], row["live_top1"]) == ("3", 1, 0, None)
    assert Correction.objects.get().label == "tiger cat"  # the owner's label stays


def test_the_ab_comparison_gains_live_top1(
    user: User, user_client: Client, history: list[Prediction], model_version: ModelVersion
) -> None:
    candidate = ModelVersionFactory.create(
        version="4", is_active=False, status=ModelVersionStatus.CANDIDATE, metrics={}, exported_at=None
    )
    registry_services.model_version_set_traffic(model_version=candidate, traffic_percent=20)
    right, wrong = _succeeded(user, candidate), _succeeded(user, candidate)
    review_services.prediction_confirm(prediction=right, user=user)
    review_services.correction_set(prediction=wrong, user=user, label="Chihuahua")

    comparison = api_as(user).get("/api/v1/stats/").json()["comparison"]

    assert (comparison["active"]["live_top1"], comparison["candidate"]["live_top1"]) == (0.75, 0.5)
    assert comparison["candidate"]["correction_rate"] == 0.5  # still corrected / succeeded
    page = user_client.get("/stats/").content.decode()
    assert "75 % (3 of 4 reviewed)" in page
    assert "50 % (1 of 2 reviewed)" in page


# --- Export --------------------------------------------------------------------------


def _manifest(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_export_includes_confirmed_predictions_in_their_class_folder(history: list[Prediction], tmp_path: Path) -> None:
    out = io.StringIO()
    call_command("export_corrections", str(tmp_path / "set"), stdout=out)

    root = tmp_path / "set"
    assert sorted(p.name for p in root.iterdir()) == ["manifest.csv", "tabby cat", "tiger cat"]
    assert sorted(p.name for p in (root / "tiger cat").iterdir()) == sorted(f"{p.id}.jpg" for p in history[:3])
    rows = {row["prediction_id"]: row for row in _manifest((root / "manifest.csv").read_text())}
    assert {rows[str(p.id)]["review"] for p in history[:3]} == {"confirmed"}
    assert rows[str(history[3].id)]["review"] == "corrected"
    assert len(rows) == 4
    assert "Exported 4 image(s) (1 corrected, 3 confirmed) in 2 label folder(s)" in out.getvalue()


def test_export_corrections_only_leaves_the_confirmed_out(history: list[Prediction], tmp_path: Path) -> None:
    out = io.StringIO()
    call_command("export_corrections", str(tmp_path / "set"), "--corrections-only", stdout=out)

    root = tmp_path / "set"
    assert sorted(p.name for p in root.iterdir()) == ["manifest.csv", "tabby cat"]
    (row,) = _manifest((root / "manifest.csv").read_text())
    assert (row["prediction_id"], row["review"]) == (str(history[3].id), "corrected")
    assert "Exported 1 image(s) (1 corrected, 0 confirmed)" in out.getvalue()


def test_admin_zip_includes_the_confirmed_and_filters_by_review(client: Client, history: list[Prediction]) -> None:
    client.force_login(OperatorFactory.create())
    changelist = reverse("admin:predictions_correction_changelist")
    assert "3 reviews" in client.get(changelist, {"confirmed__exact": "1"}).content.decode()
    reviews = list(Correction.objects.all())

    response = client.post(changelist, {"action": "export_dataset", "_selected_action": [r.pk for r in reviews]})

    archive = zipfile.ZipFile(io.BytesIO(response.getvalue()))
    rows = _manifest(archive.read("manifest.csv").decode())
    assert sorted(row["review"] for row in rows) == ["confirmed", "confirmed", "confirmed", "corrected"]
    assert sum(name.startswith("tiger cat/") for name in archive.namelist()) == 3

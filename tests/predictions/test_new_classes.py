"""A correction picks one of the model's classes; a label the model does not have is a new
class only when its owner says so, and is shown as one in the admin, the export's manifest
and the stats."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from django.apps import apps
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from predictions.exceptions import UnknownClassError
from predictions.models import Correction, ModelVersion, Prediction
from predictions.reviews import services as review_services
from tests.conftest import api_as
from tests.factories import CorrectionFactory, OperatorFactory, SucceededPredictionFactory


@pytest.fixture
def mau(user: User, active_model: ModelVersion) -> Prediction:
    """The shipped model's answer "Egyptian Mau" for a photo its owner says is a tabby."""
    return SucceededPredictionFactory.create(
        user=user, model_version=active_model, label="Egyptian Mau", class_id="n02124075",
        top_predictions=[{"label": "Egyptian Mau", "class_id": "n02124075", "score": 0.5}],
    )  # fmt: skip


def _correct(user: User, prediction: Prediction, body: dict[str, object]) -> dict[str, object]:
    response = api_as(user).post(f"/api/v1/predictions/{prediction.id}/correction/", body, format="json")
    return {"status": response.status_code, **response.json()}


def test_a_label_that_is_none_of_the_models_classes_is_refused_naming_the_closest(user: User, mau: Prediction) -> None:
    answer = _correct(user, mau, {"label": "tabby"})

    assert answer["status"] == 400
    error = answer["error"]
    assert isinstance(error, dict)
    assert (error["code"], error["field"]) == ("unknown_class", "label")
    assert "1000 classes; the closest are: tabby cat." in error["message"]  # the one that holds the word
    assert not Correction.objects.exists()


def test_the_closest_classes_include_similar_spellings(user: User, mau: Prediction) -> None:
    with pytest.raises(UnknownClassError, match="Siamese cat"):
        review_services.correction_set(prediction=mau, user=user, label="siamse cat")


def test_a_new_class_is_stored_only_when_said_so(user: User, mau: Prediction) -> None:
    answer = _correct(user, mau, {"label": "tabby", "new_class": True})

    assert answer["status"] == 200
    assert (answer["label"], answer["class_id"], answer["new_class"]) == ("tabby", "", True)
    row = Correction.objects.get(prediction=mau)
    assert (row.label, row.class_id, row.new_class) == ("tabby", "", True)


def test_a_class_of_the_model_is_never_a_new_class(user: User, mau: Prediction) -> None:
    answer = _correct(user, mau, {"label": "TABBY CAT", "new_class": True})

    assert answer["status"] == 200
    assert (answer["label"], answer["class_id"], answer["new_class"]) == ("tabby cat", "n02123045", False)


def test_the_prediction_page_offers_every_class_of_the_model(user_client: Client, mau: Prediction) -> None:
    page = user_client.get(reverse("predictions:detail", args=[mau.id])).content.decode()

    datalist = page.split(f'<datalist id="correction-classes-{mau.id}">', 1)[1].split("</datalist>", 1)[0]
    assert datalist.count("<option ") == 1000
    assert '<option value="tabby cat">' in datalist
    assert '<option value="Siamese cat">' in datalist
    assert 'name="new_class"' in page


def test_the_tile_leads_to_the_page_with_every_class_and_the_new_class_box(
    user_client: Client, mau: Prediction
) -> None:
    card = user_client.get(reverse("predictions:card", args=[mau.id])).content.decode()
    page = user_client.get(reverse("predictions:detail", args=[mau.id])).content.decode()

    # The tile is compact (no form): its one link opens the page where the review is.
    assert 'name="new_class"' not in card
    assert f'<a href="{reverse("predictions:detail", args=[mau.id])}" title="' in card
    assert "Type to search all 1000 of the model's classes." in page
    assert 'name="new_class"' in page


def test_the_page_form_needs_the_new_class_box_for_a_label_the_model_does_not_have(
    user_client: Client, mau: Prediction
) -> None:
    url = reverse("predictions:correct", args=[mau.id])

    refused = user_client.post(url, {"label": "tabby"}, follow=True).content.decode()
    assert "is not one of the model&#x27;s 1000 classes; the closest are: tabby cat." in refused
    assert f'id="correction-{mau.id}" open>' in refused  # the form, open again, offering every class
    assert not Correction.objects.exists()

    accepted = user_client.post(url, {"label": "tabby", "new_class": "true"}, follow=True).content.decode()
    assert "You corrected this to" in accepted
    assert "(a new class)" in accepted
    assert Correction.objects.get(prediction=mau).new_class


def test_the_admin_shows_and_filters_new_classes(client: Client, mau: Prediction, user: User) -> None:
    review_services.correction_set(prediction=mau, user=user, label="tabby", new_class=True)
    other = SucceededPredictionFactory.create(user=user, model_version=mau.model_version)
    review_services.correction_set(prediction=other, user=user, label="tabby cat")
    client.force_login(OperatorFactory.create())
    changelist = reverse("admin:predictions_correction_changelist")

    everything = client.get(changelist).content.decode()
    only_new = client.get(changelist, {"new_class__exact": "1"}).content.decode()

    assert "column-new_class" in everything
    assert "By new class" in everything
    assert "tabby cat" in everything
    assert "tabby cat" not in only_new
    assert "tabby" in only_new


def test_the_manifest_says_which_labels_are_new_classes(user: User, mau: Prediction, tmp_path: Path) -> None:
    review_services.correction_set(prediction=mau, user=user, label="tabby", new_class=True)
    other = SucceededPredictionFactory.create(user=user, model_version=mau.model_version)
    review_services.correction_set(prediction=other, user=user, label="tabby cat")

    call_command("export_corrections", str(tmp_path), stdout=io.StringIO())

    rows = csv.DictReader(io.StringIO((tmp_path / "manifest.csv").read_text()))
    assert {row["label"]: row["new_class"] for row in rows} == {"tabby": "true", "tabby cat": "false"}


def test_the_stats_count_corrections_to_new_classes(user: User, user_client: Client, mau: Prediction) -> None:
    review_services.correction_set(prediction=mau, user=user, label="tabby", new_class=True)
    other = SucceededPredictionFactory.create(user=user, model_version=mau.model_version)
    review_services.correction_set(prediction=other, user=user, label="tabby cat")

    (row,) = api_as(user).get("/api/v1/stats/").json()["per_model_version"]
    assert (row["corrections"], row["new_classes"]) == (2, 1)
    assert "1 of them to a new class" in user_client.get("/stats/").content.decode()


def test_free_text_stored_before_is_marked_a_new_class_by_the_migration(user: User, mau: Prediction) -> None:
    from importlib import import_module

    migration = import_module("predictions.migrations.0013_correction_new_class")
    free_text = CorrectionFactory.create(prediction=mau, label="tabby", class_id="")
    matched = CorrectionFactory.create(
        prediction=SucceededPredictionFactory.create(user=user, model_version=mau.model_version),
        label="tabby cat",
        class_id="n02123045",
    )

    migration.mark_free_text_as_new_classes(apps, None)

    assert Correction.objects.get(pk=free_text.pk).new_class
    assert not Correction.objects.get(pk=matched.pk).new_class

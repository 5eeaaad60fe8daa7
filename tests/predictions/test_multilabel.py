"""A multi-label model served: the runner refuses one without thresholds, the worker's
service stores the labels passing their thresholds, and the API and the result card show
them. Real model (a short fine-tune on composites of real digit scans), real images."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from pytest_django import Settings
from rest_framework.test import APIClient

from ml.cache import get_classifier
from ml.export import ModelLoadError, export_read
from predictions import services
from predictions.models import ModelVersion, PredictionStatus
from predictions.registry import services as registry_services
from tests.conftest import photo_bytes
from tests.factories import PredictionFactory

if TYPE_CHECKING:
    from training.finetune import FinetuneResult


def _exported_cards(root: Path, **metadata: object) -> Path:
    """A model folder's metadata.json and labels.json (what ``export_read`` checks)."""
    root.mkdir(parents=True)
    labels = [{"index": i, "class_id": c, "label": c} for i, c in enumerate(["cat", "dog"])]
    (root / "labels.json").write_text(json.dumps(labels))
    base = {"format_version": 1, "name": "pets", "version": "1", "input_size": 96, "num_classes": 2}
    (root / "metadata.json").write_text(json.dumps({**base, **metadata}))
    return root


@pytest.mark.parametrize(
    ("thresholds", "message"),
    [
        (None, "a multi-label model needs thresholds {class_id: 0..1}"),
        ({"cat": 0.4}, "no threshold between 0 and 1 for class 'dog'"),
        ({"cat": 0.4, "dog": 1.5}, "no threshold between 0 and 1 for class 'dog'"),
    ],
)
def test_runner_refuses_a_multi_label_model_without_a_threshold_per_class(
    tmp_path: Path, thresholds: dict[str, float] | None, message: str
) -> None:
    folder = _exported_cards(tmp_path / "m", task="multi-label", thresholds=thresholds)

    with pytest.raises(ModelLoadError, match=message.replace("{", r"\{").replace("}", r"\}")):
        export_read(folder)


def test_a_single_label_model_needs_no_thresholds(tmp_path: Path) -> None:
    exported = export_read(_exported_cards(tmp_path / "m", task="image-classification"))

    assert not exported.multi_label


@pytest.fixture
def multi_label_model(db: None, multilabel_finetuned: FinetuneResult, tmp_path: Path) -> ModelVersion:
    """The fine-tuned multi-label model registered and active (a copy, as the services
    may be handed any folder)."""
    folder = tmp_path / "multi-digits" / "1"
    shutil.copytree(multilabel_finetuned.target, folder)
    version = registry_services.model_version_register(model_dir=folder)
    return registry_services.model_version_activate(model_version=version)


@pytest.fixture
def held_out_composite(
    multilabel_finetuned: FinetuneResult, multi_digits: Path, settings: Settings
) -> tuple[Path, set[str]]:
    """A held-out composite of two or three digits that the model reads right, and its digits."""
    with (multi_digits / "labels.csv").open() as handle:
        truth = {row["file"]: set(row["labels"].split(";")) for row in csv.DictReader(handle)}
    held_out = json.loads((multilabel_finetuned.target / "splits.json").read_text())["test"]
    classifier = get_classifier(multilabel_finetuned.target, engine=settings.MODEL_ENGINE)
    results = classifier.classify([multi_digits / n for n in held_out])
    name = next(
        n
        for n, r in zip(held_out, results, strict=True)
        if len(truth[n]) >= 2 and {x.class_id for x in r.labels} == truth[n]
    )
    return multi_digits / name, truth[name]


def test_the_worker_stores_every_passing_label_and_the_api_and_card_show_them(
    user: User, user_client: Client, multi_label_model: ModelVersion, held_out_composite: tuple[Path, set[str]]
) -> None:
    path, digits = held_out_composite

    def upload() -> SimpleUploadedFile:
        return SimpleUploadedFile(path.name, path.read_bytes(), content_type="image/png")

    # Top-1 only: the image's other digits still come back, as labels.
    prediction = services.prediction_create(user=user, uploaded_file=upload(), top_k=1)
    services.prediction_process(prediction_id=prediction.id)  # what the worker runs

    prediction.refresh_from_db()
    assert prediction.status == PredictionStatus.SUCCEEDED
    assert prediction.model_version == multi_label_model
    top = prediction.top_predictions[0]
    # label / confidence stay the top score, as for any model.
    assert prediction.class_id == top["class_id"]
    assert prediction.confidence == pytest.approx(top["score"], abs=1e-6)
    assert top["positive"] is True
    assert prediction.class_id in digits
    assert prediction.passing_labels is not None
    assert {entry["class_id"] for entry in prediction.passing_labels} == digits
    scores = [entry["score"] for entry in prediction.top_predictions]
    assert scores == sorted(scores, reverse=True)

    api = APIClient()
    api.force_authenticate(user)
    body = api.get(f"/api/v1/predictions/{prediction.id}/").json()
    assert {entry["class_id"] for entry in body["labels"]} == digits
    assert all(entry["positive"] for entry in body["labels"])
    assert body["predictions"][0]["positive"] is True
    assert body["label"] == prediction.label

    card = user_client.get(reverse("predictions:card", args=[prediction.id])).content.decode()
    shown = [entry["label"] for entry in prediction.passing_labels]
    assert "Labels: " + ", ".join(f'<strong class="passing-label">{label}</strong>' for label in shown) in card

    # The same bytes again reuse the stored result, labels and all.
    again = services.prediction_create(user=user, uploaded_file=upload(), top_k=1)
    assert again.cached
    assert again.passing_labels == prediction.passing_labels


def test_a_single_label_result_has_no_labels_list(user: User, active_model: ModelVersion, user_client: Client) -> None:
    upload = SimpleUploadedFile("cat.jpg", photo_bytes("chelsea"), content_type="image/jpeg")
    prediction = services.prediction_create(user=user, uploaded_file=upload, top_k=3)
    services.prediction_process(prediction_id=prediction.id)

    prediction.refresh_from_db()
    assert prediction.status == PredictionStatus.SUCCEEDED
    assert prediction.passing_labels is None
    assert all(set(entry) == {"label", "class_id", "score"} for entry in prediction.top_predictions)
    api = APIClient()
    api.force_authenticate(user)
    body = api.get(f"/api/v1/predictions/{prediction.id}/").json()
    assert body["labels"] is None
    assert "positive" not in body["predictions"][0]
    assert "Labels:" not in user_client.get(reverse("predictions:card", args=[prediction.id])).content.decode()


def test_the_card_says_none_when_no_class_passed_its_threshold(user_client: Client, user: User) -> None:
    prediction = PredictionFactory.create(
        user=user, status=PredictionStatus.SUCCEEDED, label="7", class_id="7", confidence=0.3,
        top_predictions=[{"label": "7", "class_id": "7", "score": 0.3, "positive": False},
                         {"label": "1", "class_id": "1", "score": 0.2, "positive": False}],
        completed_at=timezone.now(),
    )  # fmt: skip

    card = user_client.get(reverse("predictions:card", args=[prediction.id])).content.decode()

    assert 'Labels: <span class="muted">none</span>' in card
    page = user_client.get(reverse("predictions:detail", args=[prediction.id])).content.decode()
    assert 'Labels: <span class="muted">none</span>' in page
    assert page.count('class="bar-row"') == 2  # the top-k chart as for any model

"""Honest uncertainty: entropy and margin from the runner, "Not sure" in storage, API, CSV and pages."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from PIL import Image
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from ml.cache import get_classifier
from ml.uncertainty import (
    UncertaintyThresholds,
    multi_label_uncertainty,
    normalised_entropy,
    top2_margin,
    uncertainty_of,
)
from predictions import services
from predictions.models import ModelVersion, Prediction, PredictionStatus
from tests.conftest import CAT_CLASSES, photo_bytes


def noise_png(seed: int = 0) -> bytes:
    """Uniform RGB noise: not a photo of anything."""
    pixels = np.random.default_rng(seed).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("probabilities", "entropy", "margin"),
    [
        ([0.25, 0.25, 0.25, 0.25], 1.0, 0.0),  # uniform: as unsure as it gets
        ([1.0, 0.0, 0.0, 0.0], 0.0, 1.0),  # all on one class
        ([0.5, 0.5, 0.0, 0.0], 0.5, 0.0),  # ln 2 / ln 4
        # -(0.7 ln 0.7 + 0.2 ln 0.2 + 0.1 ln 0.1) / ln 3 = 0.80182 / 1.09861
        ([0.1, 0.7, 0.2], 0.72985, 0.5),
    ],
)
def test_entropy_and_margin_of_hand_made_probabilities(
    probabilities: list[float], entropy: float, margin: float
) -> None:
    assert normalised_entropy(np.asarray(probabilities)) == pytest.approx(entropy, abs=1e-5)
    assert top2_margin(np.asarray(probabilities)) == pytest.approx(margin, abs=1e-9)


def test_uncertain_when_entropy_is_above_or_margin_below_the_thresholds() -> None:
    thresholds = UncertaintyThresholds(entropy=0.6, margin=0.2, calibrated=True)

    assert not uncertainty_of(np.asarray([0.9, 0.05, 0.05]), thresholds).uncertain  # entropy 0.36, margin 0.85
    assert uncertainty_of(np.asarray([0.1, 0.7, 0.2]), thresholds).uncertain  # entropy 0.73 > 0.6
    # entropy ln 2 / ln 3 = 0.63 > 0.6 and margin 0 < 0.2
    assert uncertainty_of(np.asarray([0.5, 0.5, 0.0]), thresholds).uncertain
    # entropy 0.54 is fine, but margin 0.1 < 0.2: two classes nearly tied
    assert uncertainty_of(np.asarray([0.55, 0.45, 0.0]), UncertaintyThresholds(0.7, 0.2, True)).uncertain


def test_a_multi_label_result_is_uncertain_when_no_class_reaches_its_threshold() -> None:
    thresholds = np.asarray([0.5, 0.3, 0.7])

    named = multi_label_uncertainty(np.asarray([0.9, 0.1, 0.2]), thresholds)
    nothing = multi_label_uncertainty(np.asarray([0.45, 0.25, 0.6]), thresholds)

    assert not named.uncertain
    assert nothing.uncertain
    assert nothing.margin == pytest.approx(0.05)  # 0.45 and 0.25 were 0.05 from their thresholds
    # mean binary entropy over ln 2 of 0.9, 0.1, 0.2
    expected = np.mean([-(q * math.log(q) + (1 - q) * math.log(1 - q)) / math.log(2) for q in (0.9, 0.1, 0.2)])
    assert named.entropy == pytest.approx(expected)


def test_shipped_model_is_sure_of_the_cat_and_not_of_noise(model_dir: Path) -> None:
    classifier = get_classifier(model_dir)

    cat, noise = classifier.classify([photo_bytes("chelsea"), noise_png()], top_k=5)

    assert classifier.uncertainty_thresholds.calibrated  # make model calibrated it (metadata.json)
    assert cat.top.class_id in CAT_CLASSES
    assert cat.uncertainty is not None
    assert not cat.uncertainty.uncertain
    assert noise.uncertainty is not None
    assert noise.uncertainty.uncertain
    # Not the margin: tabby and tiger cat split the cat's mass (a margin of about 0.02), which
    # is why calibration set the margin threshold low and entropy does most of the flagging.
    assert noise.uncertainty.entropy > cat.uncertainty.entropy


def _upload(content: bytes, name: str) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type="image/png")


@pytest.fixture
def classified(user: User, active_model: ModelVersion) -> tuple[Prediction, Prediction]:
    """A cat photo and a noise image, classified by the shipped model through the worker's service."""
    cat = services.prediction_create(user=user, uploaded_file=_upload(photo_bytes("chelsea", "PNG"), "cat.png"))
    noise = services.prediction_create(user=user, uploaded_file=_upload(noise_png(), "noise.png"))
    services.prediction_process(prediction_id=noise.id)  # claims and classifies both in one batch
    for prediction in (cat, noise):
        prediction.refresh_from_db()
        assert prediction.status == PredictionStatus.SUCCEEDED
    return cat, noise


def test_the_worker_stores_uncertainty_and_the_cache_copies_it(
    user: User, classified: tuple[Prediction, Prediction]
) -> None:
    cat, noise = classified

    again = services.prediction_create(user=user, uploaded_file=_upload(noise_png(), "noise-again.png"))

    assert cat.uncertain is False
    assert noise.uncertain is True
    assert cat.entropy is not None
    assert noise.entropy is not None
    assert cat.margin is not None
    assert noise.margin is not None
    assert 0 <= cat.entropy < noise.entropy <= 1
    assert 0 <= cat.margin <= 1
    assert 0 <= noise.margin <= 1
    assert again.cached
    assert again.status == PredictionStatus.SUCCEEDED
    assert (again.entropy, again.margin, again.uncertain) == (noise.entropy, noise.margin, True)


def test_api_says_whether_the_model_was_sure(user: User, classified: tuple[Prediction, Prediction]) -> None:
    cat, noise = classified
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")

    sure = api.get(f"/api/v1/predictions/{cat.id}/").json()
    unsure = api.get(f"/api/v1/predictions/{noise.id}/").json()

    assert sure["uncertain"] is False
    assert unsure["uncertain"] is True
    assert sure["uncertainty"] == {"entropy": cat.entropy, "margin": cat.margin}
    assert unsure["uncertainty"]["entropy"] > sure["uncertainty"]["entropy"]
    schema = api.get("/api/v1/schema/").content.decode()
    assert "uncertain" in schema
    assert "Not sure" in schema


def test_history_csv_has_the_uncertainty_columns(
    user_client: Client, classified: tuple[Prediction, Prediction]
) -> None:
    cat, noise = classified

    exported = user_client.get(reverse("predictions:history-csv")).getvalue().decode()

    rows = {row["filename"]: row for row in csv.DictReader(io.StringIO(exported))}
    assert rows["cat.png"]["uncertain"] == "false"
    assert rows["noise.png"]["uncertain"] == "true"
    assert float(rows["noise.png"]["entropy"]) == pytest.approx(noise.entropy, abs=1e-6)
    assert float(rows["cat.png"]["margin"]) == pytest.approx(cat.margin, abs=1e-6)


def test_card_says_not_sure_with_the_candidates_instead_of_a_bold_label(
    user_client: Client, classified: tuple[Prediction, Prediction]
) -> None:
    cat, noise = classified

    unsure = user_client.get(reverse("predictions:card", args=[noise.id])).content.decode()
    sure = user_client.get(reverse("predictions:card", args=[cat.id])).content.decode()
    detail = user_client.get(reverse("predictions:detail", args=[noise.id])).content.decode()
    history = user_client.get(reverse("predictions:history"), {"view": "list"}).content.decode()

    assert "Not sure" in unsure
    assert "maybe " in unsure
    assert "maybe:" in detail
    # The candidates the tile names: the first two that show as at least 1 %.
    candidates = [entry["label"] for entry in noise.top_predictions[:2] if entry["score"] >= 0.005]
    assert all(label.split()[0].lower() in unsure.lower() for label in candidates)
    assert " 0 %" not in unsure
    assert " 0 %" not in detail.split("maybe:")[1].split("</p>")[0]
    assert '<strong class="label">' not in unsure
    assert "Not sure" not in sure
    assert '<strong class="label">' in sure
    assert "Not sure" in detail
    assert history.count(">Not sure</span>") == 1  # the noise row only
    # No "Correct" for a guess the page does not claim: it asks which candidate it is.
    assert ">Correct</button>" not in detail
    assert "If it is one of these, pick it" in detail

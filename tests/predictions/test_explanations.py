"""Grad-CAM explanations: the real heat map of the shipped and a fine-tuned model, the
request rules (owner, succeeded, top-k), the API's 202 -> 200, the page, and one
explanation worked by a real Celery worker."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from PIL import Image
from pytest_django import DjangoCaptureOnCommitCallbacks, Settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from imagerec.celery import app as celery_app
from ml import cache as model_cache
from ml import gradcam
from ml.cache import get_classifier
from predictions import services
from predictions.explanations import services as explanations
from predictions.explanations.tasks import explanation_compute
from predictions.models import Explanation, ExplanationStatus, ModelVersion, Prediction, PredictionStatus
from tests.conftest import BASE_DIR, CAT_CLASSES, PHOTOS, photo_bytes, wait_for_final
from tests.factories import PredictionFactory, UserFactory

if TYPE_CHECKING:
    from training.finetune import FinetuneResult

CHELSEA_SIZE = Image.open(PHOTOS["chelsea"].path).size  # (width, height)


@pytest.fixture(scope="session")
def explainable_model_dir(model_dir: Path) -> Path:
    """The shipped model with its Keras graph: a model directory built before exports
    carried ``model.keras`` gets it from ``make model`` (a rebuild without --force)."""
    if not (model_dir / gradcam.KERAS_FILE).exists():
        subprocess.run(
            [sys.executable, "-m", "training.build_imagenet", "--variant", "lite0", "--out",
             str(model_dir.parent.parent)],
            check=True, cwd=BASE_DIR,
        )  # fmt: skip
    assert (model_dir / gradcam.KERAS_FILE).is_file()
    return model_dir


@pytest.fixture(scope="session")
def explainer(explainable_model_dir: Path) -> gradcam.Explainer:
    return model_cache.get_explainer(explainable_model_dir)


def _crop(heatmap: np.ndarray) -> np.ndarray:
    """The centre square the model saw (``to_model_input``) of a heat map of the chelsea photo."""
    width, height = CHELSEA_SIZE
    side = round(min(width, height) * 0.875)
    left, top = round((width - side) / 2), round((height - side) / 2)
    return heatmap[top : top + side, left : left + side]


# --- The runner: a real Grad-CAM -------------------------------------------------------


def test_grad_cam_of_the_cat_is_concentrated_normalised_and_not_that_of_an_unrelated_class(
    explainer: gradcam.Explainer, model_dir: Path
) -> None:
    photo = photo_bytes("chelsea")
    top = get_classifier(model_dir).classify([photo], top_k=5)[0].predictions
    cat, unrelated = top[0], top[-1]  # tiger cat ... window screen
    assert cat.class_id in CAT_CLASSES
    assert unrelated.class_id not in CAT_CLASSES

    for_cat = explainer.explain(photo, cat.class_id)
    for_unrelated = explainer.explain(photo, unrelated.class_id)

    width, height = CHELSEA_SIZE
    assert for_cat.heatmap.shape == (height, width)
    assert for_cat.heatmap.min() == 0
    assert for_cat.heatmap.max() == pytest.approx(1.0)
    seen = np.sort(_crop(for_cat.heatmap).ravel())[::-1]
    assert seen[: len(seen) // 5].sum() / seen.sum() > 0.3  # the hottest fifth holds far more than a fifth
    seen_cat, seen_unrelated = _crop(for_cat.heatmap).ravel(), _crop(for_unrelated.heatmap).ravel()
    assert np.abs(seen_cat - seen_unrelated).mean() > 0.05
    assert np.corrcoef(seen_cat, seen_unrelated)[0, 1] < 0.9
    peak_cat = np.unravel_index(np.argmax(for_cat.heatmap), for_cat.heatmap.shape)
    peak_unrelated = np.unravel_index(np.argmax(for_unrelated.heatmap), for_unrelated.heatmap.shape)
    assert np.hypot(*np.subtract(peak_cat, peak_unrelated)) > 40  # the eye and cheek, not the nose's mesh
    assert abs(for_cat.score - cat.score) < 1e-3  # the same preprocessing and model as classification
    with Image.open(io.BytesIO(for_cat.png())) as overlay:
        assert overlay.format == "PNG"
        assert overlay.size == CHELSEA_SIZE
        assert overlay.mode == "RGB"


def test_the_margins_the_model_never_saw_carry_no_heat(explainer: gradcam.Explainer) -> None:
    result = explainer.explain(photo_bytes("chelsea"), next(iter(sorted(CAT_CLASSES))))
    width, height = CHELSEA_SIZE
    side = round(min(width, height) * 0.875)
    left = round((width - side) / 2)
    assert result.heatmap[:, : left - 1].max() == 0
    assert result.heatmap[:, left + side + 1 :].max() == 0


def test_a_large_upload_gives_an_overlay_no_larger_than_the_cap(explainer: gradcam.Explainer) -> None:
    big = Image.open(PHOTOS["chelsea"].path).convert("RGB").resize((2400, 1600))
    result = explainer.explain(big, next(iter(sorted(CAT_CLASSES))))
    assert result.overlay.size == (gradcam.MAX_OVERLAY_SIDE, round(1600 * gradcam.MAX_OVERLAY_SIDE / 2400))
    assert result.heatmap.shape == (result.overlay.height, result.overlay.width)


@pytest.mark.slow
def test_the_feature_map_layer_is_found_by_shape_in_the_shipped_and_a_finetuned_model(
    explainer: gradcam.Explainer, finetuned: FinetuneResult, digits_subset: Path
) -> None:
    import keras

    shipped = explainer.layer.output.shape
    tuned_model = keras.saving.load_model(finetuned.target / gradcam.KERAS_FILE, compile=False)
    tuned = gradcam.last_feature_map_layer(tuned_model).output.shape

    assert len(shipped) == 4
    assert shipped[1:3] == (7, 7)
    assert len(tuned) == 4
    assert tuned[1:3] == (3, 3)
    digit = sorted(digits_subset.rglob("*.png"))[0]
    tuned_explainer = model_cache.get_explainer(finetuned.target)
    result = tuned_explainer.explain(digit.read_bytes(), tuned_explainer.class_ids[0])
    with Image.open(digit) as scan:
        assert result.heatmap.shape == (scan.height, scan.width)


def test_a_model_exported_without_its_keras_graph_says_so_and_how_to_export_again(
    tmp_path: Path, model_dir: Path
) -> None:
    old_export = tmp_path / "efficientnet_lite0" / "1"
    old_export.mkdir(parents=True)
    for name in ("metadata.json", "labels.json"):
        (old_export / name).write_bytes((model_dir / name).read_bytes())

    with pytest.raises(gradcam.ExplanationUnsupportedError, match=r"without its Keras graph.*make model"):
        gradcam.Explainer(old_export)


# --- Service and API -------------------------------------------------------------------


@pytest.fixture
def classified(
    user: User, active_model: ModelVersion, django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks
) -> Prediction:
    """The chelsea photo, classified for real by the shipped model (what the worker runs)."""
    with django_capture_on_commit_callbacks(execute=False):
        prediction = services.prediction_create(
            user=user, uploaded_file=SimpleUploadedFile("chelsea.jpg", photo_bytes("chelsea")), top_k=5
        )
    services.prediction_process(prediction_id=prediction.id)
    prediction.refresh_from_db()
    assert prediction.status == PredictionStatus.SUCCEEDED
    return prediction


@pytest.fixture
def succeeded(user: User, active_model: ModelVersion) -> Prediction:
    """A succeeded prediction row with the shipped model's top-2 (for the rules, where
    the model does not run)."""
    return PredictionFactory.create(
        user=user, status=PredictionStatus.SUCCEEDED, label="tabby", class_id="n02123045", confidence=0.6,
        completed_at=timezone.now(), model_version=active_model,
        top_predictions=[{"label": "tabby", "class_id": "n02123045", "score": 0.6},
                         {"label": "tiger cat", "class_id": "n02123159", "score": 0.3}],
    )  # fmt: skip


def _api(user: User) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def _url(prediction: Prediction) -> str:
    return f"/api/v1/predictions/{prediction.id}/explanation/"


def test_api_post_answers_202_with_location_then_get_gives_the_png_once_computed(
    user: User,
    classified: Prediction,
    explainable_model_dir: Path,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    api = _api(user)
    assert api.get(_url(classified)).status_code == 404  # nothing requested yet: a read queues nothing
    with django_capture_on_commit_callbacks(execute=False) as sent:
        pending = api.post(_url(classified))  # no class_id: the top class

    assert pending.status_code == 202
    assert pending.json() == {"status": "pending", "class_id": classified.class_id}
    assert pending["Location"] == f"http://testserver{_url(classified)}?class_id={classified.class_id}"
    assert len(sent) == 1  # queued for the worker once committed
    explanation = Explanation.objects.get(prediction=classified)
    assert explanation.class_id == classified.class_id
    assert explanation.status == ExplanationStatus.PENDING

    with django_capture_on_commit_callbacks(execute=False) as sent_again:
        assert api.get(pending["Location"]).status_code == 202
        assert api.post(pending["Location"]).status_code == 202
    assert sent_again == []  # reading it, or asking again while it is computed, sends nothing more

    explanations.explanation_compute(explanation_id=explanation.id)  # what the worker runs
    ready = api.get(pending["Location"], HTTP_ACCEPT="image/png")

    assert ready.status_code == 200
    assert ready["Content-Type"] == "image/png"
    with Image.open(io.BytesIO(ready.getvalue())) as overlay:
        assert overlay.size == CHELSEA_SIZE


def test_api_refuses_a_class_outside_the_top_k_with_409(user: User, succeeded: Prediction) -> None:
    response = _api(user).post(f"{_url(succeeded)}?class_id=n02085620")  # a model class, not in the top-k

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"
    error = response.json()["error"]
    assert error["field"] == "class_id"
    assert "n02123045, n02123159" in error["message"]
    assert not Explanation.objects.exists()


def test_api_hides_another_users_prediction_with_404(succeeded: Prediction) -> None:
    api = _api(UserFactory.create())
    for response in (api.post(_url(succeeded)), api.get(_url(succeeded))):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    assert not Explanation.objects.exists()


def test_api_explains_no_failed_prediction_409(user: User) -> None:
    failed = PredictionFactory.create(user=user, status=PredictionStatus.FAILED, error="Cannot decode image")

    response = _api(user).post(_url(failed))

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"
    assert "failed" in response.json()["error"]["message"]


def test_a_failed_explanation_answers_its_reason_and_is_tried_again_later(
    user: User, succeeded: Prediction, django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks
) -> None:
    classified = succeeded
    api = _api(user)
    with django_capture_on_commit_callbacks(execute=False):
        api.post(_url(classified))
    explanation = Explanation.objects.get()
    explanations.explanation_fail(explanation_id=explanation.id, error="The stored image file is missing.")

    refused = api.get(_url(classified))
    assert api.post(_url(classified)).status_code == 409  # asked again at once: the same reason
    assert refused.status_code == 409
    assert refused.json()["error"] == {
        "code": "explanation_failed", "message": "The stored image file is missing.", "field": "class_id"
    }  # fmt: skip

    Explanation.objects.filter(pk=explanation.pk).update(finished_at=explanation.created_at.replace(year=2020))
    with django_capture_on_commit_callbacks(execute=False) as sent:
        assert api.post(_url(classified)).status_code == 202
    assert len(sent) == 1


def test_a_pending_explanation_whose_message_was_lost_is_sent_again(
    user: User,
    succeeded: Prediction,
    settings: Settings,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    classified = succeeded
    settings.RECONCILE_AFTER_SECONDS = 60
    with django_capture_on_commit_callbacks(execute=False):
        explanations.explanation_request(prediction=classified, user=user)
    Explanation.objects.update(enqueued_at=classified.created_at.replace(year=2020))  # the worker died with it

    with django_capture_on_commit_callbacks(execute=False) as sent:
        explanation = explanations.explanation_request(prediction=classified, user=user)

    assert len(sent) == 1
    assert explanation.status == ExplanationStatus.PENDING


def test_a_model_without_its_keras_graph_fails_the_explanation_with_how_to_export_again(
    user: User,
    classified: Prediction,
    tmp_path: Path,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    old_export = tmp_path / "old" / "1"
    old_export.mkdir(parents=True)
    assert classified.model_version is not None
    for name in ("metadata.json", "labels.json"):
        (old_export / name).write_bytes((Path(classified.model_version.path) / name).read_bytes())
    ModelVersion.objects.filter(pk=classified.model_version.pk).update(path=str(old_export))
    with django_capture_on_commit_callbacks(execute=False):
        explanation = explanations.explanation_request(prediction=classified, user=user)

    explanations.explanation_compute(explanation_id=explanation.id)

    explanation.refresh_from_db()
    assert explanation.status == ExplanationStatus.FAILED
    assert "cannot be explained" in explanation.error
    assert "make model" in explanation.error


def test_deleting_the_prediction_deletes_its_overlays(
    user: User,
    classified: Prediction,
    explainable_model_dir: Path,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    with django_capture_on_commit_callbacks(execute=False):
        explanation = explanations.explanation_request(prediction=classified, user=user)
    computed = explanations.explanation_compute(explanation_id=explanation.id)
    assert computed is not None
    assert computed.status == ExplanationStatus.SUCCEEDED
    path = Path(computed.image.path)
    assert path.is_file()

    with django_capture_on_commit_callbacks(execute=True):
        services.prediction_delete(prediction=classified)

    assert not path.exists()


# --- The page ----------------------------------------------------------------------------


def test_the_page_offers_each_top_class_and_shows_the_overlay_beside_the_image(
    user_client: Client,
    classified: Prediction,
    explainable_model_dir: Path,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    detail = reverse("predictions:detail", args=[classified.id])
    page = user_client.get(detail).content.decode()
    assert 'id="explain"' in page
    assert page.count('name="class_id"') == 5

    with django_capture_on_commit_callbacks(execute=False):
        asked = user_client.post(
            reverse("predictions:explain", args=[classified.id]), {"class_id": classified.class_id}
        )
    assert asked.status_code == 302
    assert asked["Location"] == f"{detail}?explain={classified.class_id}#explain"
    computing = user_client.get(asked["Location"]).content.decode()
    assert "Computing the heat map" in computing
    assert "Refresh" in computing

    explanations.explanation_compute(explanation_id=Explanation.objects.get().id)
    shown = user_client.get(asked["Location"]).content.decode()
    overlay_url = f"{reverse('predictions:explanation-image', args=[classified.id])}?class_id={classified.class_id}"
    assert f'src="{overlay_url}"' in shown
    assert f'src="{reverse("predictions:image", args=[classified.id])}"' in shown
    image = user_client.get(overlay_url)
    assert image.status_code == 200
    assert image["Content-Type"] == "image/png"


def test_the_page_says_why_a_class_cannot_be_explained(user_client: Client, succeeded: Prediction) -> None:
    response = user_client.post(
        reverse("predictions:explain", args=[succeeded.id]), {"class_id": "n09999999"}, follow=True
    )
    assert "class_id must be one of" in response.content.decode()


# --- A real worker ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_computes_the_explanation_asked_for_through_the_api(
    explainable_model_dir: Path, celery_worker: subprocess.Popen[bytes], active_model: ModelVersion, user: User
) -> None:
    api = _api(user)
    submitted = api.post(
        "/api/v1/predictions/", {"image": SimpleUploadedFile("chelsea.jpg", photo_bytes("chelsea"))}, format="multipart"
    )
    prediction = wait_for_final(submitted.json()["id"])
    assert prediction.status == PredictionStatus.SUCCEEDED, prediction.error
    second_class = prediction.top_predictions[1]["class_id"]

    response = api.post(f"{_url(prediction)}?class_id={second_class}")
    assert response.status_code == 202
    deadline = time.monotonic() + 90
    while response.status_code == 202 and time.monotonic() < deadline:
        time.sleep(0.5)
        response = api.get(response["Location"])

    assert response.status_code == 200, getattr(response, "data", response)
    assert response["Content-Type"] == "image/png"
    with Image.open(io.BytesIO(response.getvalue())) as overlay:
        assert overlay.size == CHELSEA_SIZE
    explanation = Explanation.objects.get(prediction=prediction)
    assert explanation.class_id == second_class
    assert explanation.compute_ms is not None
    assert explanation.compute_ms > 0
    assert explanation.layer  # the feature-map layer the worker found
    # Sent to the inference queue, the workers that hold the model.
    assert celery_app.amqp.router.route({}, explanation_compute.name)["queue"].name == "inference"


def test_the_pages_script_asks_in_the_background_and_hears_why_not(
    user_client: Client,
    succeeded: Prediction,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    explain = reverse("predictions:explain", args=[succeeded.id])
    overlay = reverse("predictions:explanation-image", args=[succeeded.id])

    with django_capture_on_commit_callbacks(execute=False):
        asked = user_client.post(explain, {"class_id": "n02123159"}, HTTP_X_REQUESTED_WITH="fetch")
    refused = user_client.post(explain, {"class_id": "n09999999"}, HTTP_X_REQUESTED_WITH="fetch")

    # No page back: the script then polls the overlay's address (202 until it is computed).
    assert asked.status_code == 202
    assert Explanation.objects.get().class_id == "n02123159"
    assert user_client.get(overlay, {"class_id": "n02123159"}).status_code == 202
    assert 400 <= refused.status_code < 500  # the reason as text, for the page to show
    assert "class_id must be one of" in refused.content.decode()

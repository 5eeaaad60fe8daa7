"""Ensembles and test-time augmentation on real photos through the real runner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command
from mlflow.tracking import MlflowClient
from PIL import Image, ImageOps

from ml.cache import get_explainer
from ml.ensemble import resize_batch
from ml.export import ModelLoadError
from ml.preprocessing import open_rgb, to_model_input
from ml.runner import Classifier
from ml.tta import TTA, tta_views
from predictions.models import ModelVersion
from tests.conftest import CAT_CLASSES, PHOTOS
from training import ensemble, tta
from training.build_imagenet import build
from training.finetune import FinetuneResult


@pytest.fixture(scope="module")
def lite_ensemble(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Lite0 and Lite2 (built by the same code as `make model-lite2`), weighted 1:3. Lite2 is
    built into the test's own folder: one in the project's models/ would be synced and
    registered by the tests that read that folder."""
    lite2 = build("lite2", tmp_path_factory.mktemp("lite2-models"), "1", force=False)
    out = tmp_path_factory.mktemp("ensemble") / "lite-ensemble" / "1"
    assert ensemble.main(["--members", str(model_dir), str(lite2), "--out", str(out), "--weights", "1", "3"]) == 0
    return out


def test_tta_views_are_the_serving_crop_its_corners_and_their_mirrors() -> None:
    image = open_rgb(PHOTOS["chelsea"].path)
    views = tta_views(image, 224, TTA(flip=True, crops=5))
    assert views.shape == (10, 224, 224, 3)
    assert np.array_equal(views[0], to_model_input(image, 224))  # view 0 is what serving sees
    assert np.array_equal(views[1], views[0][:, ::-1])
    assert not np.array_equal(views[2], views[0])  # a corner crop, not the centre again


def test_tta_flip_scores_the_mean_of_the_photo_and_its_mirror(model_dir: Path) -> None:
    plain = Classifier(model_dir).load()
    flipped = Classifier(model_dir, tta=TTA(flip=True)).load()
    photo = PHOTOS["chelsea"].path
    mirror = ImageOps.mirror(Image.open(photo).convert("RGB"))
    expected = plain.predict(np.stack([plain.preprocess(photo), to_model_input(mirror, plain.input_size)])).mean(axis=0)
    (result,) = flipped.classify([photo], top_k=3)
    assert result.top.class_id in CAT_CLASSES
    assert result.top.score == pytest.approx(float(expected.max()), abs=1e-5)


def test_a_version_with_tta_in_its_metadata_is_served_with_it(model_dir: Path, tmp_path: Path) -> None:
    version = tmp_path / "lite0-tta" / "1"
    version.mkdir(parents=True)
    for name in ("saved_model", "labels.json"):
        (version / name).symlink_to(model_dir / name)
    meta = json.loads((model_dir / "metadata.json").read_text())
    (version / "metadata.json").write_text(json.dumps({**meta, "tta": {"flip": True}}))
    photo = PHOTOS["chelsea"].path
    (own,) = Classifier(version).load().classify([photo])
    (flipped,) = Classifier(model_dir, tta=TTA(flip=True)).load().classify([photo])
    assert own.top == flipped.top
    (version / "metadata.json").write_text(json.dumps({**meta, "tta": {"crops": 3}}))
    with pytest.raises(ModelLoadError, match="crops"):
        Classifier(version).load()


def test_training_tta_sets_the_version_option_the_runner_serves(model_dir: Path, tmp_path: Path) -> None:
    version = tmp_path / "lite0" / "1"
    version.mkdir(parents=True)
    for name in ("saved_model", "labels.json"):
        (version / name).symlink_to(model_dir / name)
    (version / "metadata.json").write_bytes((model_dir / "metadata.json").read_bytes())
    assert tta.main(["--model", str(version), "--flip", "--crops", "5"]) == 0
    assert Classifier(version).load().tta == TTA(flip=True, crops=5)
    assert tta.main(["--model", str(version), "--off"]) == 0
    assert not Classifier(version).load().tta.active


def test_an_ensemble_needs_members_with_the_same_classes(
    model_dir: Path, finetuned: FinetuneResult, tmp_path: Path
) -> None:
    with pytest.raises(SystemExit):
        ensemble.main(["--members", str(model_dir), str(finetuned.target), "--out", str(tmp_path / "e" / "1")])
    assert not (tmp_path / "e" / "1").exists()


@pytest.mark.slow
def test_the_ensemble_serves_the_weighted_mean_of_its_members(lite_ensemble: Path, model_dir: Path) -> None:
    meta = json.loads((lite_ensemble / "metadata.json").read_text())
    members = meta["ensemble"]["members"]
    assert [m["weight"] for m in members] == [0.25, 0.75]
    assert meta["input_size"] == 260  # Lite2's side; Lite0 is given the batch resized
    served = Classifier(lite_ensemble).load()
    batch = served.preprocess(PHOTOS["chelsea"].path)[None]
    lite0 = Classifier(lite_ensemble / members[0]["dir"]).load()
    lite2 = Classifier(lite_ensemble / members[1]["dir"]).load()
    expected = 0.25 * lite0.predict(resize_batch(batch, 224)) + 0.75 * lite2.predict(batch)
    np.testing.assert_allclose(served.predict(batch), expected, atol=1e-5)
    (result,) = served.classify([PHOTOS["chelsea"].path])
    assert result.top.class_id in CAT_CLASSES
    run = MlflowClient(meta["tracking"]["tracking_uri"]).get_run(meta["tracking"]["run_id"])
    assert run.data.params["weights_normalised"] == "[0.25, 0.75]"
    assert "| `members/1` | efficientnet_lite2 v1 | 260 |" in (lite_ensemble / "MODEL_CARD.md").read_text()


@pytest.mark.slow
def test_register_classify_and_explain_accept_the_ensemble(
    db: None, lite_ensemble: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    call_command("register_model", str(lite_ensemble))
    registered = ModelVersion.objects.get(name="lite-ensemble", version="1")
    assert registered.classes[0]["class_id"] == "n01440764"
    # The registry links the MLflow run that built it.
    built = json.loads((lite_ensemble / "metadata.json").read_text())
    assert registered.metadata["tracking"]["run_id"] == built["tracking"]["run_id"]
    capsys.readouterr()
    call_command("classify", str(PHOTOS["chelsea"].path), "--model", str(lite_ensemble), "--json")
    plain = json.loads(capsys.readouterr().out)
    call_command("classify", str(PHOTOS["chelsea"].path), "--model", str(lite_ensemble), "--json", "--tta")
    augmented = json.loads(capsys.readouterr().out)
    assert plain["predictions"][0]["class_id"] in CAT_CLASSES
    assert augmented["predictions"][0]["class_id"] in CAT_CLASSES
    assert augmented["predictions"][0]["score"] != plain["predictions"][0]["score"]  # ten views, not one
    explainer = get_explainer(lite_ensemble)
    assert (explainer.name, explainer.input_size) == ("efficientnet_lite2", 260)  # its strongest member

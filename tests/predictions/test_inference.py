"""The shipped model through the one runner: real photos, every image mode, both engines."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from PIL import Image

from ml.cache import get_classifier
from ml.runner import Classifier
from tests.conftest import PHOTOS, photo_bytes
from training.test_photos import TEST_PHOTOS

if TYPE_CHECKING:
    from training.test_photos import TestPhoto


@pytest.fixture(scope="module")
def classifier(model_dir: Path) -> Classifier:
    return get_classifier(model_dir)


@pytest.mark.parametrize("photo", TEST_PHOTOS, ids=lambda p: p.name)
def test_shipped_model_recognises_real_photos(classifier: Classifier, photo: TestPhoto) -> None:
    result = classifier.classify([str(photo.path)], top_k=3)[0]

    assert not result.error
    top3 = [p.class_id for p in result.predictions]
    assert set(top3) & set(photo.expected), f"{photo.name}: got {top3}"
    assert result.predictions[0].score > 0.2
    assert result.inference_ms > 0
    assert result.preprocess_ms > 0


def test_cat_photo_is_a_cat_at_top1(classifier: Classifier) -> None:
    result = classifier.classify([photo_bytes("chelsea")], top_k=5)[0]

    assert result.top.class_id in PHOTOS["chelsea"].expected
    assert result.top.label in {"tabby cat", "tiger cat", "Egyptian Mau"}
    scores = [p.score for p in result.predictions]
    assert scores == sorted(scores, reverse=True)


def _variants() -> dict[str, bytes]:
    """The cat photo in many modes and containers; all should classify alike."""
    base = Image.open(PHOTOS["chelsea"].path).convert("RGB")

    def encode(image: Image.Image, fmt: str, **kwargs: Any) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, fmt, **kwargs)
        return buffer.getvalue()

    rgba = base.convert("RGBA")
    sixteen = Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257)
    rotated = base.rotate(-90, expand=True)  # stored sideways; EXIF orientation 8 turns it back
    exif = Image.Exif()
    exif[0x0112] = 8
    return {
        "rgb_jpeg": encode(base, "JPEG", quality=95),
        "rgba_png": encode(rgba, "PNG"),
        "grey_png": encode(base.convert("L"), "PNG"),
        "palette_png": encode(base.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        "cmyk_jpeg": encode(base.convert("CMYK"), "JPEG", quality=95),
        "sixteen_bit_png": encode(sixteen, "PNG"),
        "exif_rotated_jpeg": encode(rotated, "JPEG", quality=95, exif=exif),
        "webp": encode(base, "WEBP", quality=95),
        "small_bmp": encode(base.resize((150, 100)), "BMP"),
    }


def test_batch_of_mixed_modes_equals_one_by_one(classifier: Classifier) -> None:
    variants = _variants()
    batch = classifier.classify(list(variants.values()), top_k=5)
    for (name, content), in_batch in zip(variants.items(), batch, strict=True):
        alone = classifier.classify([content], top_k=5)[0]
        assert not in_batch.error, name
        assert [p.class_id for p in in_batch.predictions] == [p.class_id for p in alone.predictions], name
        assert np.allclose([p.score for p in in_batch.predictions], [p.score for p in alone.predictions], atol=1e-4)


@pytest.mark.parametrize("name", ["rgb_jpeg", "rgba_png", "cmyk_jpeg", "exif_rotated_jpeg", "webp", "palette_png"])
def test_every_mode_still_sees_a_cat(classifier: Classifier, name: str) -> None:
    result = classifier.classify([_variants()[name]], top_k=3)[0]

    assert {p.class_id for p in result.predictions} & set(PHOTOS["chelsea"].expected)


def test_exif_orientation_is_applied(classifier: Classifier) -> None:
    variants = _variants()
    upright = classifier.preprocess(variants["rgb_jpeg"])
    rotated = classifier.preprocess(variants["exif_rotated_jpeg"])
    # Same picture after EXIF transpose: pixel values close (JPEG noise only).
    assert np.abs(upright - rotated).mean() < 6


def test_unreadable_image_gets_an_error_and_the_batch_goes_on(classifier: Classifier) -> None:
    results = classifier.classify([b"not an image", photo_bytes("coffee")], top_k=1)

    assert "Cannot decode image" in results[0].error
    assert results[0].predictions == []
    assert results[1].top.class_id in PHOTOS["coffee"].expected


@pytest.mark.parametrize("count", [1, 3, 9, 33])
def test_any_batch_size_is_padded_to_a_bucket(classifier: Classifier, count: int) -> None:
    content = photo_bytes("rocket")
    results = classifier.classify([content] * count, top_k=1)

    assert len(results) == count
    assert {r.top.class_id for r in results} == {results[0].top.class_id}


def test_tflite_engine_agrees_with_savedmodel(model_dir: Path, classifier: Classifier) -> None:
    tflite = Classifier(model_dir, engine="tflite").load()
    for photo in TEST_PHOTOS:
        saved = classifier.classify([str(photo.path)], top_k=1)[0].top
        lite = tflite.classify([str(photo.path)], top_k=1)[0].top
        assert saved.class_id == lite.class_id, photo.name
        assert abs(saved.score - lite.score) < 1e-3


def test_missing_model_directory_is_a_clear_error(tmp_path: Path) -> None:
    from ml.export import ModelLoadError

    with pytest.raises(ModelLoadError, match="make model"):
        Classifier(tmp_path / "nowhere").load()

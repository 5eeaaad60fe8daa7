"""The training set of a learning cycle on disk: the reviewed images in a folder per class
id (as ``training.finetune`` reads them), the held-back ones apart, and the base version's
own fine-tuning folder when it was fine-tuned here."""

from __future__ import annotations

import hashlib
import re
import shutil
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from predictions.exceptions import ApplicationError
from predictions.models import Correction, ModelVersion

# A class id becomes a folder name: only what is safe as one everywhere.
_SAFE_FOLDER = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\Z")
_FORMAT_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tiff"}
_IMAGE_SUFFIXES = frozenset(_FORMAT_EXTENSIONS.values()) | {".jpeg", ".tif"}


@dataclass
class ReviewSplit:
    """Review ids per part: trained on, or held back to measure both versions on."""

    training: list[int] = field(default_factory=list)
    holdout: list[int] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)


def _hash_percent(review: Correction) -> int:
    return int(hashlib.sha256(str(review.prediction_id).encode()).hexdigest()[:8], 16) % 100


def review_split(*, reviews: Iterable[Correction], min_per_class: int, holdout_percent: int) -> ReviewSplit:
    """Keep the classes with at least ``min_per_class`` reviews (and a folder-safe id); hold
    back each review whose prediction id hashes below ``holdout_percent`` (of 100), and in a
    class where none does, the one that hashes lowest. The hash, not the order, decides: a
    review held back in one cycle is held back in the next (unless its class gained a
    lower-hashing one), so the slice both versions are measured on stays unseen."""
    by_class: dict[str, list[Correction]] = defaultdict(list)
    for review in reviews:
        if _SAFE_FOLDER.match(review.class_id):
            by_class[review.class_id].append(review)
    split = ReviewSplit()
    for class_id in sorted(by_class):
        members = sorted(by_class[class_id], key=_hash_percent)
        if len(members) < min_per_class:
            continue
        held = max(1, sum(_hash_percent(review) < holdout_percent for review in members))
        split.holdout.extend(review.pk for review in members[:held])
        split.training.extend(review.pk for review in members[held:])
        split.classes.append(class_id)
    return split


def _extension(review: Correction) -> str:
    prediction = review.prediction
    return _FORMAT_EXTENSIONS.get(prediction.image_format.upper()) or Path(prediction.image.name or "").suffix.lower()


def _copy_image(review: Correction, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with review.prediction.image.open("rb") as source, open(target, "wb") as out:
            shutil.copyfileobj(source, out)
    except OSError as error:
        raise ApplicationError(f"The image of review {review.pk} cannot be read ({error}).") from error


def dataset_write(
    *, directory: Path, training: Iterable[Correction], holdout: Iterable[Correction], base: ModelVersion
) -> tuple[list[dict[str, str]], int]:
    """Write ``directory/data/<class id>/<prediction id>.<ext>`` for each training review and
    ``directory/holdout/<prediction id>.<ext>`` for each held-back one; add the base's own
    fine-tuning images (``metadata.json`` ``dataset.path``, class folders of its classes)
    when it was fine-tuned here by an operator and the folder is still there (a version
    the loop made learnt from reviews, which are all in the set anyway). Returns the
    held-back ``{"file", "class_id"}`` list and the number of images from the base's folder."""
    if directory.exists():
        shutil.rmtree(directory)
    data = directory / "data"
    for review in training:
        _copy_image(review, data / review.class_id / f"{review.prediction_id}{_extension(review)}")
    held = []
    for review in holdout:
        path = directory / "holdout" / f"{review.prediction_id}{_extension(review)}"
        _copy_image(review, path)
        held.append({"file": str(path), "class_id": review.class_id})
    return held, _prior_copy(base=base, data=data)


def _prior_copy(*, base: ModelVersion, data: Path) -> int:
    dataset = base.metadata.get("dataset") if isinstance(base.metadata, dict) else None
    if base.metadata.get("learning") or not isinstance(dataset, dict) or not dataset.get("path"):
        return 0
    root = Path(str(dataset["path"]))
    if not root.is_dir():
        return 0
    class_ids = {entry["class_id"] for entry in base.classes}
    copied = 0
    for folder in sorted(
        p for p in root.iterdir() if p.is_dir() and p.name in class_ids and _SAFE_FOLDER.match(p.name)
    ):
        for image in sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in _IMAGE_SUFFIXES):
            (data / folder.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(image, data / folder.name / f"prior-{image.name}")
            copied += 1
    return copied

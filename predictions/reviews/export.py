"""The export of reviewed images as a labelled dataset (a folder per class and
manifest.csv), as training.finetune reads it.
"""

from __future__ import annotations

import csv
import functools
import io
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from predictions.exceptions import ConflictError
from predictions.models import (
    Correction,
    Prediction,
)

_FOLDER_UNSAFE = str.maketrans({character: "_" for character in '/\\:*?"<>|\0'})


def correction_folder_name(label: str) -> str:
    """The class folder of ``label`` in an exported dataset: the label itself, with the
    characters no file system takes (and a leading dot) replaced."""
    name = label.translate(_FOLDER_UNSAFE).strip()
    return "_" + name[1:] if name.startswith(".") else name or "_"


@dataclass
class CorrectionExport:
    """What an export wrote (or would write): one file per review (correction or
    confirmation), and the manifest."""

    files: list[tuple[str, Correction]]  # (path inside the dataset, review)
    manifest: str
    replaced: int = 0

    @property
    def confirmed(self) -> int:
        """Files of confirmed predictions (the rest are corrected ones)."""
        return sum(review.confirmed for _, review in self.files)


_FORMAT_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tiff"}


MANIFEST_HEADER = [
    "path", "label", "class_id", "predicted_label", "confidence", "model", "model_version",
    "prediction_id", "sha256", "corrected_at", "review",
]  # fmt: skip


# The manifest's "review" column: how the owner gave the label.
REVIEW_CONFIRMED = "confirmed"  # the model's own label, confirmed


REVIEW_CORRECTED = "corrected"  # the right label in place of the model's


def correction_export_plan(*, corrections: Iterable[Correction]) -> CorrectionExport:
    """The dataset layout: ``<label>/<prediction id>.<ext>`` per review, corrected or
    confirmed (a folder per class, as ``training.finetune`` reads), and ``manifest.csv``
    listing every file (``review``: corrected or confirmed; ``corrected_at``: when)."""
    files = []
    manifest = io.StringIO()
    writer = csv.writer(manifest, lineterminator="\n")
    writer.writerow(MANIFEST_HEADER)
    for correction in corrections:
        prediction = correction.prediction
        # From the decoded format, not the client's file name: what the image really is.
        extension = _FORMAT_EXTENSIONS.get(prediction.image_format.upper()) or (
            Path(prediction.image.name or "").suffix.lower() or ".img"
        )
        path = f"{correction_folder_name(correction.label)}/{prediction.id}{extension}"
        files.append((path, correction))
        version = correction.model_version
        writer.writerow([
            path, correction.label, correction.class_id, correction.predicted_label,
            "" if prediction.confidence is None else f"{prediction.confidence:.6f}",
            version.name if version else "", version.version if version else "",
            prediction.id, prediction.sha256, correction.updated_at.isoformat(),
            REVIEW_CONFIRMED if correction.confirmed else REVIEW_CORRECTED,
        ])  # fmt: skip
    return CorrectionExport(files=files, manifest=manifest.getvalue())


def correction_export_directory(
    *, corrections: Iterable[Correction], directory: Path, overwrite: bool = False
) -> CorrectionExport:
    """Copy the reviewed images into ``directory/<label>/`` and write ``manifest.csv``.

    Never overwrites silently: when a file the export would write is already there (and
    differs), nothing is written and ``ConflictError`` names it, unless ``overwrite``,
    which replaces such files and counts them in ``replaced``. Identical files (a re-run)
    are left as they are.
    """
    plan = correction_export_plan(corrections=corrections)
    manifest = plan.manifest.encode()
    # One image in memory at a time: read to compare, read again to write.
    sources: list[tuple[Path, Callable[[], bytes]]] = [
        (directory / path, functools.partial(_image_bytes, correction.prediction)) for path, correction in plan.files
    ]
    sources.append((directory / "manifest.csv", lambda: manifest))
    written = {target for target, read in sources if not target.exists() or target.read_bytes() != read()}
    clashes = [target for target, _ in sources if target in written and target.exists()]
    if clashes and not overwrite:
        shown = ", ".join(str(target.relative_to(directory)) for target in clashes[:5])
        raise ConflictError(
            f"{len(clashes)} file(s) in {directory} differ from what the export would write ({shown}"
            f"{', ...' if len(clashes) > 5 else ''}); nothing was written. Use a new directory or overwrite."
        )
    for target, read in sources:
        if target in written:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(read())
    plan.replaced = len(clashes)
    return plan


def _image_bytes(prediction: Prediction) -> bytes:
    with prediction.image.open("rb") as image:
        content: bytes = image.read()
    return content


def correction_export_zip(*, corrections: Iterable[Correction], target: IO[bytes]) -> CorrectionExport:
    """The same dataset as ``correction_export_directory``, as a zip written to ``target``
    (a binary file object)."""
    plan = correction_export_plan(corrections=corrections)
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path, correction in plan.files:
            archive.writestr(path, _image_bytes(correction.prediction))
        archive.writestr("manifest.csv", plan.manifest)
    return plan

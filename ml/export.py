"""Reading an exported model folder (``<name>/<version>/`` with ``metadata.json``,
``labels.json`` and the engines' files, as ``training.export`` writes it) without loading
an engine: what the runner, the registry and ``training/`` check before they use one."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SUPPORTED_FORMAT_VERSIONS = (1,)
# metadata.json "task" of a model with one sigmoid per class and a threshold per class
# (``training.finetune --multi-label``); anything else is a single-label softmax model.
MULTI_LABEL_TASK = "multi-label"


class ModelLoadError(RuntimeError):
    """The model directory is missing, incomplete or of an unknown format."""


@dataclass(frozen=True)
class ExportedModel:
    """An exported model directory's metadata and labels, checked as the runner reads them."""

    path: Path
    metadata: dict[str, Any]
    labels: list[dict[str, Any]]

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", self.path.parent.name))

    @property
    def version(self) -> str:
        return str(self.metadata.get("version", self.path.name))

    @property
    def multi_label(self) -> bool:
        return self.metadata.get("task") == MULTI_LABEL_TASK

    def thresholds(self) -> np.ndarray:
        """A multi-label model's per-class thresholds in ``labels.json`` order."""
        by_class = self.metadata["thresholds"]
        # float64, as training compared its float32 scores with them.
        return np.asarray([float(by_class[entry["class_id"]]) for entry in self.labels], dtype=np.float64)


def export_read(model_dir: Path | str) -> ExportedModel:
    """Read ``metadata.json`` and ``labels.json`` of an exported model without loading
    the engine; raise ``ModelLoadError`` for anything the runner would refuse (missing
    files, an unknown ``format_version``, no ``input_size``, labels without
    ``class_id`` / ``label`` or not one per class, a multi-label model without a
    threshold between 0 and 1 for every class)."""
    model_dir = Path(model_dir)
    metadata_path = model_dir / "metadata.json"
    labels_path = model_dir / "labels.json"
    if not metadata_path.is_file() or not labels_path.is_file():
        raise ModelLoadError(f"No exported model at {model_dir} (run `make model` to build it)")
    metadata = _read_json(metadata_path)
    if not isinstance(metadata, dict) or metadata.get("format_version") not in SUPPORTED_FORMAT_VERSIONS:
        found = metadata.get("format_version") if isinstance(metadata, dict) else None
        raise ModelLoadError(f"{model_dir} has format_version {found!r}; this runner reads {SUPPORTED_FORMAT_VERSIONS}")
    if not isinstance(metadata.get("input_size"), int):
        raise ModelLoadError(f"{metadata_path} has no input_size")
    labels = _read_json(labels_path)
    if not isinstance(labels, list) or not all(
        isinstance(entry, dict) and isinstance(entry.get("class_id"), str) and isinstance(entry.get("label"), str)
        for entry in labels
    ):
        raise ModelLoadError(f"{labels_path} is not a list of {{class_id, label}} entries")
    declared = metadata.get("num_classes")
    if isinstance(declared, int) and declared != len(labels):
        raise ModelLoadError(f"{labels_path} has {len(labels)} classes; metadata.json says {declared}")
    if metadata.get("task") == MULTI_LABEL_TASK:
        _check_thresholds(metadata_path, metadata.get("thresholds"), labels)
    if "uncertainty" in metadata:
        _check_uncertainty(metadata_path, metadata["uncertainty"])
    return ExportedModel(path=model_dir, metadata=metadata, labels=labels)


def _check_thresholds(metadata_path: Path, thresholds: object, labels: list[dict[str, Any]]) -> None:
    if not isinstance(thresholds, dict):
        raise ModelLoadError(f"{metadata_path}: a multi-label model needs thresholds {{class_id: 0..1}}")
    for entry in labels:
        value = thresholds.get(entry["class_id"])
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ModelLoadError(f"{metadata_path}: no threshold between 0 and 1 for class {entry['class_id']!r}")


def _check_uncertainty(metadata_path: Path, calibrated: object) -> None:
    if not isinstance(calibrated, dict) or not all(
        not isinstance(calibrated.get(key), bool)
        and isinstance(calibrated.get(key), int | float)
        and 0 <= calibrated[key] <= 1
        for key in ("entropy", "margin")
    ):
        raise ModelLoadError(f"{metadata_path}: uncertainty needs entropy and margin thresholds between 0 and 1")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{path} is unreadable: {error}") from error


def newest_model_dir(*, root: Path | str, prefer_name: str = "") -> Path | None:
    """The newest exported model under ``root`` (``<name>/<version>/metadata.json``),
    read from disk only: ``prefer_name``'s highest numeric version, else the highest of
    any name; ``None`` when there is none."""
    found = [path.parent for path in Path(root).glob("*/*/metadata.json")]
    preferred = [path for path in found if path.parent.name == prefer_name] or found
    if not preferred:
        return None
    return max(preferred, key=lambda path: (*version_key(path.name), path.parent.name))


def version_key(version: str) -> tuple[int, str]:
    """Sort key of a model version: numeric versions order as numbers ("10" after "9"),
    any other name below them. The one rule for "newest", on disk and in the registry."""
    return (int(version), "") if version.isdigit() else (-1, version)

"""A fine-tuning set on disk and its split: the image files (paths only, never the pixels),
what each one shows, a fingerprint of the whole set, the stratified train / validation /
test split and the class weights against imbalance.

Single-label: ``DIR/<class>/*``, one sub-folder per class. Multi-label: the images a labels
CSV lists (:mod:`training.multilabel`), stratified by each image's rarest label.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from training.multilabel import rarest_label, read_labels_csv
from training.samples import IMAGE_SUFFIXES


@dataclass
class ImageSet:
    """The files of a training set (paths only, never the pixels) and what each one shows."""

    root: Path
    classes: list[str]
    files: list[Path]
    # Per file, its class index; multi-label: its rarest label's (the class its split is stratified by).
    targets: NDArray[np.int64]
    # [n_files, n_classes], what the model is trained to output: one-hot, or multi-hot when multi_label.
    vectors: NDArray[np.float32]
    multi_label: bool = False
    labels_csv: Path | None = None

    def fingerprint(self) -> dict[str, Any]:
        """File count and SHA-256 over every (relative path, content hash) pair, in order,
        then the labels CSV's bytes when there is one."""
        digest = hashlib.sha256()
        total = 0
        if self.labels_csv is not None:
            content = self.labels_csv.read_bytes()
            digest.update(hashlib.sha256(content).digest())
        for path in self.files:
            content = path.read_bytes()
            total += len(content)
            digest.update(path.relative_to(self.root).as_posix().encode())
            digest.update(hashlib.sha256(content).digest())
        return {"files": len(self.files), "bytes": total, "sha256": digest.hexdigest()}


@dataclass
class Split:
    """Index arrays into ``ImageSet.files``."""

    train: NDArray[np.int64]
    val: NDArray[np.int64]
    test: NDArray[np.int64]

    def sizes(self) -> dict[str, int]:
        """``{"train": n, "val": n, "test": n}``."""
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def scan_folder(data: str | Path) -> ImageSet:
    """``data/<class>/*`` image files, sorted, with class indices."""
    root = Path(data)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise ValueError(f"{root}: need at least two class sub-folders, found {classes}")
    files: list[Path] = []
    targets: list[int] = []
    for index, name in enumerate(classes):
        members = sorted(f for f in (root / name).iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not members:
            raise ValueError(f"{root / name}: no images")
        files.extend(members)
        targets.extend([index] * len(members))
    indices = np.asarray(targets, dtype=np.int64)
    one_hot = np.eye(len(classes), dtype=np.float32)[indices]
    return ImageSet(root, classes, files, indices, one_hot)


def scan_labels_csv(data: str | Path, labels_csv: str | Path) -> ImageSet:
    """The images a multi-label CSV lists under ``data`` (:func:`training.multilabel.read_labels_csv`),
    with multi-hot targets, stratified by each image's rarest label."""
    root = Path(data)
    rows = read_labels_csv(labels_csv, root, IMAGE_SUFFIXES)
    return ImageSet(
        root,
        rows.classes,
        rows.files,
        rarest_label(rows.targets),
        rows.targets,
        multi_label=True,
        labels_csv=Path(labels_csv),
    )


def stratified_split(targets: NDArray[np.int64], val_fraction: float, test_fraction: float, seed: int) -> Split:
    """Per class: shuffle with ``seed``, then cut test, validation, train (train keeps >= 1 image)."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for index in np.unique(targets):
        members = [int(i) for i in rng.permutation(np.flatnonzero(targets == index))]
        n_test = min(round(len(members) * test_fraction), max(len(members) - 1, 0))
        n_val = min(round(len(members) * val_fraction), len(members) - n_test - 1)
        parts["test"].extend(members[:n_test])
        parts["val"].extend(members[n_test : n_test + max(n_val, 0)])
        parts["train"].extend(members[n_test + max(n_val, 0) :])
    as_array = {k: np.asarray(sorted(v), dtype=np.int64) for k, v in parts.items()}
    return Split(as_array["train"], as_array["val"], as_array["test"])


def balanced_class_weights(targets: NDArray[np.int64], num_classes: int) -> dict[int, float]:
    """``n / (k * n_c)`` per class (1.0 on a balanced set), as scikit-learn's "balanced"."""
    counts = np.bincount(targets, minlength=num_classes).astype(np.float64)
    return {c: float(len(targets) / (num_classes * counts[c])) if counts[c] else 0.0 for c in range(num_classes)}

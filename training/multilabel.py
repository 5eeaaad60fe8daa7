"""Multi-label training data and scores: the labels CSV, per-class thresholds, test metrics.

numpy only (no TensorFlow), so the rules can be checked by hand.

The labels CSV (``training.finetune --multi-label LABELS.csv``)::

    file,labels
    0000.png,3;7
    0001.png,5

A header row naming exactly the columns ``file`` and ``labels`` (any order). ``file`` is a
path relative to the data folder; ``labels`` holds one or more class ids separated by ``;``
(surrounding spaces are ignored, a label repeated counts once). The classes are the sorted
union of every label. An image's scores are independent sigmoids: it has every class whose
score reaches that class's threshold, tuned on the validation split (``tune_thresholds``).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

LABEL_SEPARATOR = ";"
CSV_COLUMNS = ("file", "labels")
# Candidate thresholds per class: 0.05, 0.10, ..., 0.95.
THRESHOLD_GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))
DEFAULT_THRESHOLD = 0.5


class LabelsCsvError(ValueError):
    """The labels CSV cannot be used; the message names the file, line and reason."""


@dataclass
class LabelRows:
    """What a labels CSV says: files (resolved, in CSV order), classes, multi-hot targets."""

    files: list[Path]
    classes: list[str]
    targets: NDArray[np.float32]  # [n_files, n_classes], 1.0 where the image has the class


def read_labels_csv(
    csv_path: str | Path, root: str | Path, image_suffixes: set[str] | frozenset[str] | None = None
) -> LabelRows:
    """Parse ``csv_path`` (see the module doc); every file must exist under ``root``.

    Raises ``LabelsCsvError`` naming the line for a missing header, an unknown or missing
    column, a row without labels, a file listed twice, a file that does not exist or
    leaves ``root``, or fewer than two classes in all.
    """
    csv_path, root = Path(csv_path), Path(root)
    if not csv_path.is_file():
        raise LabelsCsvError(f"{csv_path}: no such labels file")
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = _header(csv_path, next(reader, []))
        file_at, labels_at = header.index("file"), header.index("labels")
        files: list[Path] = []
        label_sets: list[set[str]] = []
        seen: dict[str, int] = {}
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue  # a blank line
            if len(row) != len(header):
                raise LabelsCsvError(f"{csv_path} line {line}: {len(row)} fields, the header has {len(header)}")
            name = row[file_at].strip()
            labels = {label.strip() for label in row[labels_at].split(LABEL_SEPARATOR)} - {""}
            files.append(_listed_file(f"{csv_path} line {line}", name, labels, root, image_suffixes, seen))
            seen[name] = line
            label_sets.append(labels)
    classes = sorted(set().union(*label_sets))
    if len(classes) < 2:
        raise LabelsCsvError(f"{csv_path}: need at least two classes, found {classes}")
    index = {name: i for i, name in enumerate(classes)}
    targets = np.zeros((len(files), len(classes)), dtype=np.float32)
    for row_index, labels in enumerate(label_sets):
        targets[row_index, [index[label] for label in labels]] = 1.0
    return LabelRows(files=files, classes=classes, targets=targets)


def _header(csv_path: Path, first_row: list[str]) -> list[str]:
    """The header row's column names, checked: exactly ``CSV_COLUMNS``, in any order."""
    header = [name.strip() for name in first_row]
    if not header or not any(header):
        raise LabelsCsvError(f"{csv_path}: empty; the first line must be the header {','.join(CSV_COLUMNS)}")
    unknown = [name for name in header if name not in CSV_COLUMNS]
    if unknown:
        raise LabelsCsvError(
            f"{csv_path} line 1: unknown column {unknown[0]!r}; the header must be {','.join(CSV_COLUMNS)}"
        )
    missing = [name for name in CSV_COLUMNS if name not in header]
    if missing:
        raise LabelsCsvError(f"{csv_path} line 1: no {missing[0]!r} column; the header must be file,labels")
    return header


def _listed_file(
    where: str,
    name: str,
    labels: set[str],
    root: Path,
    image_suffixes: set[str] | frozenset[str] | None,
    seen: dict[str, int],
) -> Path:
    """The image file one row names, checked (``where``: the CSV and line, for the messages):
    a name and at least one label, not listed before (``seen``: name -> line), inside
    ``root``, existing, and an image when ``image_suffixes`` are given."""
    if not name:
        raise LabelsCsvError(f"{where}: empty file name")
    if not labels:
        raise LabelsCsvError(f"{where}: no labels for {name} (give one or more, separated by {LABEL_SEPARATOR!r})")
    if name in seen:
        raise LabelsCsvError(f"{where}: {name} is listed twice (also line {seen[name]})")
    path = root / name
    if not path.resolve().is_relative_to(root.resolve()):
        raise LabelsCsvError(f"{where}: {name} is outside {root}")
    if not path.is_file():
        raise LabelsCsvError(f"{where}: {name} does not exist in {root}")
    if image_suffixes is not None and path.suffix.lower() not in image_suffixes:
        raise LabelsCsvError(f"{where}: {name} is not an image file ({path.suffix or 'none'})")
    return path


def rarest_label(targets: NDArray[np.float32]) -> NDArray[np.int64]:
    """Per image, the index of its least frequent class (ties: the lowest index): the key
    ``training.finetune`` stratifies a multi-label split by, so every class, the rare ones
    first, reaches the validation and test splits in proportion."""
    positives = np.asarray(targets) > 0.5
    counts = positives.sum(axis=0)
    # Classes the image lacks get an impossible count, so argmin picks among its own.
    keyed = np.where(positives, counts[None, :], np.iinfo(np.int64).max)
    return np.asarray(keyed.argmin(axis=1), dtype=np.int64)


def _counts(truth: NDArray[np.bool_], predicted: NDArray[np.bool_]) -> tuple[NDArray[Any], ...]:
    """True positives, false positives and false negatives per class (column)."""
    true_positive = (truth & predicted).sum(axis=0)
    false_positive = (~truth & predicted).sum(axis=0)
    false_negative = (truth & ~predicted).sum(axis=0)
    return true_positive, false_positive, false_negative


def _f1(true_positive: Any, false_positive: Any, false_negative: Any) -> NDArray[np.float64]:
    """F1 = 2 TP / (2 TP + FP + FN); 0 where the denominator is 0."""
    tp, fp, fn = (np.asarray(v, dtype=np.float64) for v in (true_positive, false_positive, false_negative))
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros_like(denominator), where=denominator > 0)


def tune_thresholds(
    targets: NDArray[Any], scores: NDArray[Any], grid: Sequence[float] = THRESHOLD_GRID
) -> NDArray[np.float64]:
    """Per class, the threshold of ``grid`` whose F1 on (``targets``, ``scores``) is highest.

    A class is predicted when its score is >= its threshold. Ties go to the threshold
    nearest 0.5, then the lower one. A class with no positive among ``targets`` (nothing
    to tune on) keeps ``DEFAULT_THRESHOLD`` (0.5).
    """
    truth = np.asarray(targets) > 0.5
    scores = np.asarray(scores, dtype=np.float64)
    candidates = np.asarray(grid, dtype=np.float64)
    # Preference among equal F1s: nearest 0.5 first, then lower.
    preference = np.lexsort((candidates, np.abs(candidates - DEFAULT_THRESHOLD)))
    thresholds = np.full(truth.shape[1], DEFAULT_THRESHOLD)
    for k in range(truth.shape[1]):
        if not truth[:, k].any():
            continue
        predicted = scores[:, k][:, None] >= candidates[None, :]  # [n, grid]
        column = truth[:, k][:, None]
        f1 = _f1(*_counts(np.broadcast_to(column, predicted.shape), predicted))
        best = f1.max()
        thresholds[k] = next(candidates[i] for i in preference if f1[i] == best)
    return thresholds


def average_precision(truth: NDArray[np.bool_], scores: NDArray[np.float64]) -> float:
    """Area under one class's precision-recall curve as scikit-learn computes it: the mean,
    over the positives ranked by score, of the precision at each one's rank (tied scores
    form one step). ``nan`` when there is no positive."""
    positives = int(truth.sum())
    if not positives:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    ranked_scores, ranked_truth = scores[order], truth[order]
    # The last index of each run of equal scores: a threshold there admits the whole run.
    ends = np.flatnonzero(np.r_[ranked_scores[1:] != ranked_scores[:-1], True])
    true_positive = np.cumsum(ranked_truth)[ends]
    precision = true_positive / (ends + 1)
    recall_gain = np.diff(np.r_[0, true_positive]) / positives
    return float(np.sum(recall_gain * precision))


@dataclass
class MultiLabelMetrics:
    """Scores of sigmoid outputs against multi-hot truth at per-class thresholds."""

    classes: list[str]
    count: int
    thresholds: list[float]
    precision: list[float]
    recall: list[float]
    f1: list[float]
    support: list[int]
    average_precision: list[float | None]  # None for a class with no positive
    micro_f1: float
    macro_f1: float
    exact_match: float  # share of images whose predicted label set is exactly the true one
    mean_average_precision: float
    micro_f1_all: float  # micro F1 of predicting every class for every image (a baseline)

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures (rounded) for metadata.json and the model card."""
        return {
            "count": self.count,
            "micro_f1": round(self.micro_f1, 5),
            "macro_f1": round(self.macro_f1, 5),
            "exact_match": round(self.exact_match, 5),
            "mean_average_precision": round(self.mean_average_precision, 5),
            "baselines": {"micro_f1_predict_nothing": 0.0, "micro_f1_predict_everything": round(self.micro_f1_all, 5)},
            "per_class": [
                {
                    "class": name,
                    "threshold": self.thresholds[i],
                    "precision": round(self.precision[i], 5),
                    "recall": round(self.recall[i], 5),
                    "f1": round(self.f1[i], 5),
                    "support": self.support[i],
                    "average_precision": _rounded(self.average_precision[i]),
                }
                for i, name in enumerate(self.classes)
            ],
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 5)


def multilabel_metrics(
    targets: NDArray[Any], scores: NDArray[Any], thresholds: Sequence[float] | NDArray[Any], classes: Sequence[str]
) -> MultiLabelMetrics:
    """Per-class precision / recall / F1 / support at ``thresholds`` (score >= threshold),
    micro F1 (counts pooled over classes), macro F1 (mean of the classes' F1), exact-match
    accuracy and mean average precision (over the classes with a positive).

    Precision of a class never predicted is 0 (scikit-learn's ``zero_division=0``).
    """
    truth = np.asarray(targets) > 0.5
    scores = np.asarray(scores, dtype=np.float64)
    limits = np.asarray(thresholds, dtype=np.float64)
    predicted = scores >= limits[None, :]
    tp, fp, fn = _counts(truth, predicted)
    precision = np.divide(tp, tp + fp, out=np.zeros(len(tp)), where=(tp + fp) > 0)
    recall = np.divide(tp, tp + fn, out=np.zeros(len(tp)), where=(tp + fn) > 0)
    f1 = _f1(tp, fp, fn)
    ap = [average_precision(truth[:, k], scores[:, k]) for k in range(truth.shape[1])]
    known = [v for v in ap if not np.isnan(v)]
    everything = np.ones_like(truth)
    return MultiLabelMetrics(
        classes=list(classes),
        count=int(truth.shape[0]),
        thresholds=[float(v) for v in limits],
        precision=[float(v) for v in precision],
        recall=[float(v) for v in recall],
        f1=[float(v) for v in f1],
        support=[int(v) for v in truth.sum(axis=0)],
        average_precision=[None if np.isnan(v) else float(v) for v in ap],
        micro_f1=float(_f1(tp.sum(), fp.sum(), fn.sum())),
        macro_f1=float(f1.mean()) if len(f1) else 0.0,
        exact_match=float((predicted == truth).all(axis=1).mean()) if len(truth) else 0.0,
        mean_average_precision=float(np.mean(known)) if known else 0.0,
        micro_f1_all=float(_f1(*(v.sum() for v in _counts(truth, everything)))),
    )

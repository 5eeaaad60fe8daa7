"""The model runner: the only module that imports TensorFlow (or the TFLite runtime).

``get_classifier()`` loads an exported model directory once per process
(``MODEL_DIR/<name>/<version>/`` as written by ``training.build_imagenet``) and
keeps it until ``release_except()`` drops it; ``classifier_for()`` is the same for a
registered ``ModelVersion``. A Celery worker consuming the inference queue loads it
when its pool process starts, and releases versions no longer in use from its
heartbeat (``predictions.worker``); the web process never loads it. TensorFlow is imported by
the engines only when a model is loaded, never when this module is imported.

The runner reads model directories from disk and never imports the services (the
services import it): ``newest_model_dir()`` finds a model without a database.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from django.conf import settings
from PIL import Image

from .engines import ENGINES, EngineLoadError, load_engine
from .engines import Engine as _Engine
from .exceptions import ModelUnavailableError
from .preprocessing import open_rgb, to_model_input

if TYPE_CHECKING:
    from .models import ModelVersion

logger = logging.getLogger(__name__)

# Batches are padded up to one of these sizes so each engine sees a handful of
# shapes, not one per request size (no retracing, no tensor reallocation).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32)
MAX_BATCH = BATCH_BUCKETS[-1]
SUPPORTED_FORMAT_VERSIONS = (1,)
# metadata.json "task" of a model with one sigmoid per class and a threshold per class
# (``training.finetune --multi-label``); anything else is a single-label softmax model.
MULTI_LABEL_TASK = "multi-label"
# "Not sure": a single-label prediction is uncertain when the normalised entropy of its
# probabilities is above the entropy threshold OR its top-2 margin is below the margin
# threshold. A model's own thresholds are in metadata.json "uncertainty" (calibrated by
# training.evaluate / training.finetune / training.build_imagenet); a model without them
# gets these defaults, the shipped EfficientNet-Lite0's calibration (training.uncertainty:
# 90 % of the correctly classified labelled photo crops kept, as many wrong ones flagged as
# possible), rounded.
DEFAULT_ENTROPY_THRESHOLD = 0.46
DEFAULT_MARGIN_THRESHOLD = 0.012


class ModelLoadError(RuntimeError):
    """The model directory is missing, incomplete or of an unknown format."""


@dataclass(frozen=True)
class LabelScore:
    label: str
    class_id: str
    score: float


@dataclass(frozen=True)
class UncertaintyThresholds:
    """When a single-label model's answer is "Not sure" (see ``uncertainty_of``)."""

    entropy: float  # flagged above this normalised entropy (0..1)
    margin: float  # flagged below this top-2 margin (0..1)
    calibrated: bool  # from the model's metadata.json, else the runner's defaults


DEFAULT_UNCERTAINTY = UncertaintyThresholds(DEFAULT_ENTROPY_THRESHOLD, DEFAULT_MARGIN_THRESHOLD, calibrated=False)


@dataclass(frozen=True)
class Uncertainty:
    """How sure the model is of one image, from its full score vector.

    Single-label: ``entropy`` is the entropy of the probabilities divided by ln C (0 = all
    mass on one class, 1 = uniform), ``margin`` the top-1 minus the top-2 probability;
    ``uncertain`` when entropy is above the model's threshold or margin below its threshold.
    Multi-label: ``entropy`` is the mean binary entropy of the per-class scores over ln 2,
    ``margin`` the smallest distance of any score from its class's threshold (how close the
    nearest yes/no came to flipping); ``uncertain`` when no class reaches its threshold (the
    model names nothing; its thresholds already are its calibrated decision rule)."""

    entropy: float
    margin: float
    uncertain: bool


def normalised_entropy(probabilities: np.ndarray) -> float:
    """Entropy of a probability vector over ln C: 0 (one class has it all) .. 1 (uniform)."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.size < 2:
        return 0.0
    p = p / p.sum()
    nonzero = p[p > 0]
    return float(np.clip(-(nonzero * np.log(nonzero)).sum() / np.log(p.size), 0.0, 1.0))


def top2_margin(probabilities: np.ndarray) -> float:
    """The highest probability minus the second highest (the top one alone: itself)."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.size < 2:
        return float(p.max()) if p.size else 0.0
    second, first = np.partition(p, -2)[-2:]
    return float(first - second)


def uncertainty_of(probabilities: np.ndarray, thresholds: UncertaintyThresholds) -> Uncertainty:
    """A single-label model's uncertainty (see ``Uncertainty``)."""
    entropy, margin = normalised_entropy(probabilities), top2_margin(probabilities)
    return Uncertainty(entropy, margin, uncertain=entropy > thresholds.entropy or margin < thresholds.margin)


def multi_label_uncertainty(scores: np.ndarray, class_thresholds: np.ndarray) -> Uncertainty:
    """A multi-label model's uncertainty (see ``Uncertainty``)."""
    q = np.clip(np.asarray(scores, dtype=np.float64), 1e-12, 1 - 1e-12)
    binary = -(q * np.log(q) + (1 - q) * np.log(1 - q)) / np.log(2)
    distance = np.abs(np.asarray(scores, dtype=np.float64) - class_thresholds)
    return Uncertainty(
        entropy=float(np.clip(binary.mean(), 0.0, 1.0)) if q.size else 0.0,
        margin=float(distance.min()) if distance.size else 0.0,
        uncertain=not bool((np.asarray(scores) >= class_thresholds).any()),
    )


def uncertainty_thresholds(metadata: dict[str, Any]) -> UncertaintyThresholds:
    """The model's calibrated thresholds (metadata.json ``uncertainty``: ``entropy``,
    ``margin``), or the defaults when it has none."""
    calibrated = metadata.get("uncertainty")
    if not isinstance(calibrated, dict):
        return DEFAULT_UNCERTAINTY
    return UncertaintyThresholds(float(calibrated["entropy"]), float(calibrated["margin"]), calibrated=True)


@dataclass
class ImageResult:
    """The classification of one image, or the reason it could not be classified.

    ``predictions`` is the top-k by score either way. From a multi-label model
    (``multi_label``) the scores are independent per class and ``labels`` holds every class
    whose score reaches its threshold, highest score first (possibly none, possibly some
    beyond the top-k); a single-label model leaves ``labels`` empty. ``uncertainty`` is
    computed from the full score vector (``None`` only for an image that failed)."""

    predictions: list[LabelScore] = field(default_factory=list)
    preprocess_ms: float = 0.0
    inference_ms: float = 0.0
    error: str = ""
    multi_label: bool = False
    labels: list[LabelScore] = field(default_factory=list)
    uncertainty: Uncertainty | None = None

    @property
    def top(self) -> LabelScore:
        return self.predictions[0]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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


class Classifier:
    """An exported classifier: decode -> preprocess -> predict -> top-k (and, for a
    multi-label model, the classes whose score reaches their threshold)."""

    def __init__(self, model_dir: Path, *, engine: str = "savedmodel", threads: int = 0) -> None:
        if engine not in ENGINES:
            raise ModelLoadError(f"Unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
        self.model_dir = Path(model_dir)
        self.engine_name = engine
        self.threads = threads
        self.metadata: dict[str, Any] = {}
        self.labels: list[dict[str, Any]] = []
        # Multi-label models only: a class is present when its score reaches its threshold.
        self.thresholds: np.ndarray | None = None
        self.uncertainty_thresholds = DEFAULT_UNCERTAINTY
        self.load_seconds = 0.0
        self._engine: _Engine | None = None

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", self.model_dir.parent.name))

    @property
    def version(self) -> str:
        return str(self.metadata.get("version", self.model_dir.name))

    @property
    def input_size(self) -> int:
        return int(self.metadata["input_size"])

    @property
    def multi_label(self) -> bool:
        return self.thresholds is not None

    def load(self) -> Classifier:
        """Read metadata and labels, refuse unknown formats, load the engine."""
        started = time.perf_counter()
        exported = export_read(self.model_dir)
        self.metadata = exported.metadata
        self.labels = exported.labels
        self.thresholds = exported.thresholds() if exported.multi_label else None
        self.uncertainty_thresholds = uncertainty_thresholds(self.metadata)
        try:
            self._engine = load_engine(self.engine_name, self.model_dir, self.threads)
        except EngineLoadError as error:
            raise ModelLoadError(str(error)) from error
        self.load_seconds = time.perf_counter() - started
        logger.info("Loaded %s v%s (%s) in %.2fs", self.name, self.version, self.engine_name, self.load_seconds)
        return self

    def warmup(self) -> None:
        """Run each batch bucket once so the first real request pays no tracing cost."""
        for size in (1, 8):
            self.predict(np.zeros((size, self.input_size, self.input_size, 3), np.float32))

    def preprocess(self, source: bytes | str | Path) -> np.ndarray:
        return to_model_input(open_rgb(source), self.input_size)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Scores for a float32 [N, S, S, 3] batch, padded to a bucket size: probabilities
        summing to 1 (single-label), or one independent 0..1 score per class (multi-label)."""
        if self._engine is None:
            raise ModelLoadError("Classifier.load() was not called")
        count = batch.shape[0]
        bucket = next(size for size in BATCH_BUCKETS if size >= count)
        if bucket > count:
            padding = np.zeros((bucket - count, *batch.shape[1:]), dtype=np.float32)
            batch = np.concatenate([batch, padding])
        return self._engine.run(np.ascontiguousarray(batch, dtype=np.float32))[:count]

    def postprocess(self, probabilities: np.ndarray, top_k: int) -> list[LabelScore]:
        """The ``top_k`` classes by score, highest first."""
        order = np.argsort(probabilities)[::-1][:top_k]
        return [self._label_score(probabilities, int(index)) for index in order]

    def passing(self, scores: np.ndarray) -> list[LabelScore]:
        """A multi-label model's classes whose score reaches their threshold, highest
        score first; empty for a single-label model."""
        if self.thresholds is None:
            return []
        passed = np.flatnonzero(scores >= self.thresholds)
        return [self._label_score(scores, int(index)) for index in passed[np.argsort(-scores[passed], kind="stable")]]

    def uncertainty(self, scores: np.ndarray) -> Uncertainty:
        """How sure the model is of one image's full score vector (see ``Uncertainty``)."""
        if self.thresholds is not None:
            return multi_label_uncertainty(scores, self.thresholds)
        return uncertainty_of(scores, self.uncertainty_thresholds)

    def _label_score(self, scores: np.ndarray, index: int) -> LabelScore:
        entry = self.labels[index]
        return LabelScore(label=entry["label"], class_id=entry["class_id"], score=float(scores[index]))

    def classify(self, sources: Sequence[bytes | str | Path], *, top_k: int = 5) -> list[ImageResult]:
        """Classify images (bytes or paths); an unreadable one gets an ``error``, the rest go on."""
        results: list[ImageResult] = [ImageResult() for _ in sources]
        for start in range(0, len(sources), MAX_BATCH):
            chunk = range(start, min(start + MAX_BATCH, len(sources)))
            arrays: list[np.ndarray] = []
            ready: list[int] = []
            for index in chunk:
                began = time.perf_counter()
                try:
                    arrays.append(self.preprocess(sources[index]))
                    ready.append(index)
                except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
                    results[index].error = f"Cannot decode image: {error}"
                results[index].preprocess_ms = (time.perf_counter() - began) * 1000
            if not arrays:
                continue
            began = time.perf_counter()
            probabilities = self.predict(np.stack(arrays))
            per_image_ms = (time.perf_counter() - began) * 1000 / len(arrays)
            for row, index in enumerate(ready):
                results[index].predictions = self.postprocess(probabilities[row], top_k)
                results[index].inference_ms = per_image_ms
                results[index].uncertainty = self.uncertainty(probabilities[row])
                if self.multi_label:
                    results[index].multi_label = True
                    results[index].labels = self.passing(probabilities[row])
        return results


# Loaded classifiers, least recently used first. A worker keeps only the versions in use:
# its heartbeat calls ``release_except()`` with the active version, the A/B candidate and
# any version a waiting prediction was given, so a model switched away from is dropped
# within one heartbeat. A batch already holding a released classifier finishes with it
# (the reference keeps it alive); its memory is freed when that batch lets go.
# MAX_LOADED is only a safety net (active + candidate + the one just switched from, until
# the next heartbeat): past it the least recently used is dropped at once.
MAX_LOADED = 3
_cache: OrderedDict[tuple[str, str, int], Classifier] = OrderedDict()
_cache_lock = threading.Lock()


def get_classifier(model_dir: Path | str, *, engine: str = "savedmodel", threads: int = 0) -> Classifier:
    """The loaded, warmed-up classifier for ``model_dir``, loaded once per process and
    kept until ``release_except()`` drops it; past ``MAX_LOADED`` the least recently used
    is released."""
    key = (_dir_key(model_dir), engine, threads)
    with _cache_lock:
        classifier = _cache.get(key)
        if classifier is None:
            classifier = Classifier(Path(model_dir), engine=engine, threads=threads).load()
            classifier.warmup()
            _cache[key] = classifier
        _cache.move_to_end(key)
        while len(_cache) > MAX_LOADED:
            (released_dir, _, _), released = _cache.popitem(last=False)
            logger.info(
                "Released %s v%s from memory (%s): over %d loaded", released.name, released.version, released_dir,
                MAX_LOADED,
            )  # fmt: skip
        return classifier


def release_except(keep_dirs: Iterable[Path | str]) -> list[Classifier]:
    """Drop every loaded classifier whose directory is not in ``keep_dirs`` (the versions
    still in use) so its memory can be freed; returns the ones released. A batch holding
    one finishes with it: only this cache lets go."""
    keep = {_dir_key(model_dir) for model_dir in keep_dirs}
    released: list[Classifier] = []
    with _cache_lock:
        for key in [key for key in _cache if key[0] not in keep]:
            classifier = _cache.pop(key)
            released.append(classifier)
            logger.info("Released %s v%s from memory (%s): not in use", classifier.name, classifier.version, key[0])
    return released


def loaded_model_dirs() -> list[str]:
    """Directories of the classifiers loaded in this process, least recently used first."""
    with _cache_lock:
        return [model_dir for model_dir, _, _ in _cache]


def loaded_classifiers() -> list[Classifier]:
    """The classifiers loaded in this process, least recently used first."""
    with _cache_lock:
        return list(_cache.values())


def _dir_key(model_dir: Path | str) -> str:
    return str(Path(model_dir).resolve())


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{path} is unreadable: {error}") from error


def classifier_for(*, model_version: ModelVersion) -> Classifier:
    """The loaded classifier of a registered ``model_version`` in this process (loaded
    and warmed up once, then cached), with the configured engine and threads.

    Raises ``ModelUnavailableError`` when its files are missing or unreadable (a deploy
    that has not copied them yet): the caller retries later.
    """
    try:
        return get_classifier(Path(model_version.path), engine=settings.MODEL_ENGINE, threads=settings.MODEL_THREADS)
    except ModelLoadError as error:
        raise ModelUnavailableError(str(error)) from error


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

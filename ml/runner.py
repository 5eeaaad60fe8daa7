"""The model runner: decode -> preprocess -> predict -> top-k, for one exported model.

``Classifier`` wraps an exported model directory (``<name>/<version>/`` as written by
``training.export``) and an engine (``ml.engines``: the SavedModel's ``serve``
signature, TFLite or ONNX Runtime). TensorFlow is imported by the engines only when a
model is loaded, never when this module is imported. Processes keep loaded models in
``ml.cache`` (one entry per version); the Celery worker is the only Django process that
loads one, and ``training/`` uses the same class.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .decoding import ImageTooCostlyError
from .engines import ENGINES, EngineLoadError, load_engine
from .engines import Engine as _Engine
from .ensemble import EnsembleEngine, is_ensemble
from .export import ModelLoadError, export_read
from .preprocessing import CROP_FRACTION, open_rgb, thumbnail_of, to_model_input
from .tta import TTA, tta_from_metadata, tta_views
from .uncertainty import (
    DEFAULT_UNCERTAINTY,
    Uncertainty,
    multi_label_uncertainty,
    uncertainty_of,
    uncertainty_thresholds,
)

logger = logging.getLogger(__name__)

# Batches are padded up to one of these sizes so each engine sees a handful of
# shapes, not one per request size (no retracing, no tensor reallocation).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32)
MAX_BATCH = BATCH_BUCKETS[-1]


@dataclass(frozen=True)
class LabelScore:
    label: str
    class_id: str
    score: float


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
    too_costly: bool = False  # refused by the decode budget: ``error`` is meant for people
    multi_label: bool = False
    labels: list[LabelScore] = field(default_factory=list)
    uncertainty: Uncertainty | None = None
    thumbnail: bytes = b""  # a small JPEG, when ``classify`` was asked for one (``thumbnail_size``)

    @property
    def top(self) -> LabelScore:
        return self.predictions[0]

    def as_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if key != "thumbnail"}


REDUCING_GAP = 3  # a large image is reduced early to this many times the side the model resamples from


class Classifier:
    """An exported classifier: decode -> preprocess -> predict -> top-k (and, for a
    multi-label model, the classes whose score reaches their threshold)."""

    def __init__(
        self, model_dir: Path, *, engine: str = "savedmodel", threads: int = 0, tta: TTA | None = None
    ) -> None:
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
        # Test-time augmentation: this run's (``tta``), else the version's own (metadata.json).
        self._tta_override = tta
        self.tta = tta or TTA()
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
            self.tta = self._tta_override or tta_from_metadata(self.metadata)
            if is_ensemble(self.metadata):
                self._engine = EnsembleEngine(self.model_dir, self.metadata, self.engine_name, self.threads)
            else:
                self._engine = load_engine(self.engine_name, self.model_dir, self.threads)
        except (EngineLoadError, ValueError) as error:
            raise ModelLoadError(str(error)) from error
        self.load_seconds = time.perf_counter() - started
        logger.info("Loaded %s v%s (%s) in %.2fs", self.name, self.version, self.engine_name, self.load_seconds)
        return self

    def warmup(self) -> None:
        """Run each batch bucket once so the first real request pays no tracing cost."""
        for size in (1, 8):
            self.predict(np.zeros((size, self.input_size, self.input_size, 3), np.float32))

    def preprocess(self, source: bytes | str | Path, *, max_decode_bytes: int | None = None) -> np.ndarray:
        """The model's input for one image: decoded within ``max_decode_bytes``, reduced early
        to three times the crop the model resamples from (``reduce_early``), then cropped
        and resized (``to_model_input``)."""
        return to_model_input(self._decoded(source, max_decode_bytes), self.input_size)

    def _decoded(self, source: bytes | str | Path, max_decode_bytes: int | None) -> Image.Image:
        """Decoded within ``max_decode_bytes``, upright, RGB, reduced early to three times the
        crop the model resamples from (``reduce_early``)."""
        min_side = round(REDUCING_GAP * self.input_size / CROP_FRACTION)
        return open_rgb(source, max_decode_bytes=max_decode_bytes, min_side=min_side)

    def _views(self, image: Image.Image) -> np.ndarray:
        """The ``[V, S, S, 3]`` views of one decoded image (one view without TTA)."""
        if not self.tta.active:
            return to_model_input(image, self.input_size)[None]
        return tta_views(image, self.input_size, self.tta)

    def preprocess_views(self, source: bytes | str | Path, *, max_decode_bytes: int | None = None) -> np.ndarray:
        """``preprocess`` with test-time augmentation: the ``[V, S, S, 3]`` views of one
        image (``ml.tta``; one view, the serving crop, without TTA)."""
        return self._views(self._decoded(source, max_decode_bytes))

    def predict_views(self, views: np.ndarray, count: int) -> np.ndarray:
        """Scores of ``count`` images from their stacked views ``[count * V, S, S, 3]``: the
        mean over each image's views, in model batches of at most ``MAX_BATCH``."""
        scores = np.concatenate(
            [self.predict(views[start : start + MAX_BATCH]) for start in range(0, len(views), MAX_BATCH)]
        )
        return np.asarray(scores.reshape(count, -1, scores.shape[-1]).mean(axis=1), dtype=np.float32)

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

    def classify(
        self,
        sources: Sequence[bytes | str | Path],
        *,
        top_k: int = 5,
        max_decode_bytes: int | None = None,
        thumbnail_size: int = 0,
    ) -> list[ImageResult]:
        """Classify images (bytes or paths); an unreadable one gets an ``error``, the rest go on.
        ``max_decode_bytes``: the decode budget of one image (``ml.decoding``); one over it
        is decoded reduced (JPEG) or gets an ``error`` without being decoded. With
        ``thumbnail_size`` each result also carries a JPEG thumbnail (``thumbnail_of``) made
        from the pixels decoded for the model: the image is not decoded a second time."""
        results: list[ImageResult] = [ImageResult() for _ in sources]
        for start in range(0, len(sources), MAX_BATCH):
            chunk = range(start, min(start + MAX_BATCH, len(sources)))
            arrays: list[np.ndarray] = []
            ready: list[int] = []
            for index in chunk:
                began = time.perf_counter()
                try:
                    image = self._decoded(sources[index], max_decode_bytes)
                    arrays.append(self._views(image))
                    ready.append(index)
                except ImageTooCostlyError as error:
                    results[index].error, results[index].too_costly = str(error), True
                except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
                    results[index].error = f"Cannot decode image: {error}"
                else:
                    results[index].thumbnail = _thumbnail(image, thumbnail_size)
                results[index].preprocess_ms = (time.perf_counter() - began) * 1000
            if not arrays:
                continue
            began = time.perf_counter()
            probabilities = self.predict_views(np.concatenate(arrays), len(arrays))
            per_image_ms = (time.perf_counter() - began) * 1000 / len(arrays)
            for row, index in enumerate(ready):
                results[index].predictions = self.postprocess(probabilities[row], top_k)
                results[index].inference_ms = per_image_ms
                results[index].uncertainty = self.uncertainty(probabilities[row])
                if self.multi_label:
                    results[index].multi_label = True
                    results[index].labels = self.passing(probabilities[row])
        return results


def _thumbnail(image: Image.Image, size: int) -> bytes:
    """``thumbnail_of`` when asked (``size``); none rather than a failed classification."""
    if not size:
        return b""
    try:
        return thumbnail_of(image, size)
    except (OSError, ValueError) as error:
        logger.warning("No thumbnail: %s", error)
        return b""

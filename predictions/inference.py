"""The model runner: the only module that imports TensorFlow (or the TFLite runtime).

``get_classifier()`` loads an exported model directory once per process
(``MODEL_DIR/<name>/<version>/`` as written by ``training.build_imagenet``) and
keeps it. Each Celery worker process loads it lazily on its first task or at
``worker_ready``; the web process never loads it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .engines import ENGINES, EngineLoadError, load_engine
from .engines import Engine as _Engine
from .preprocessing import open_rgb, to_model_input

logger = logging.getLogger(__name__)

# Batches are padded up to one of these sizes so each engine sees a handful of
# shapes, not one per request size (no retracing, no tensor reallocation).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32)
MAX_BATCH = BATCH_BUCKETS[-1]
SUPPORTED_FORMAT_VERSIONS = (1,)


class ModelLoadError(RuntimeError):
    """The model directory is missing, incomplete or of an unknown format."""


@dataclass(frozen=True)
class LabelScore:
    label: str
    class_id: str
    score: float


@dataclass
class ImageResult:
    """The classification of one image, or the reason it could not be classified."""

    predictions: list[LabelScore] = field(default_factory=list)
    preprocess_ms: float = 0.0
    inference_ms: float = 0.0
    error: str = ""

    @property
    def top(self) -> LabelScore:
        return self.predictions[0]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Classifier:
    """An exported ImageNet-style classifier: decode -> preprocess -> predict -> top-k."""

    def __init__(self, model_dir: Path, *, engine: str = "savedmodel", threads: int = 0) -> None:
        if engine not in ENGINES:
            raise ModelLoadError(f"Unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
        self.model_dir = Path(model_dir)
        self.engine_name = engine
        self.threads = threads
        self.metadata: dict[str, Any] = {}
        self.labels: list[dict[str, Any]] = []
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

    def load(self) -> Classifier:
        """Read metadata and labels, refuse unknown formats, load the engine."""
        started = time.perf_counter()
        metadata_path = self.model_dir / "metadata.json"
        labels_path = self.model_dir / "labels.json"
        if not metadata_path.exists() or not labels_path.exists():
            raise ModelLoadError(f"No exported model at {self.model_dir} (run `make model` to build it)")
        self.metadata = json.loads(metadata_path.read_text())
        if self.metadata.get("format_version") not in SUPPORTED_FORMAT_VERSIONS:
            raise ModelLoadError(
                f"{self.model_dir} has format_version {self.metadata.get('format_version')!r}; "
                f"this runner reads {SUPPORTED_FORMAT_VERSIONS}"
            )
        self.labels = json.loads(labels_path.read_text())
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
        """Probabilities for a float32 [N, S, S, 3] batch, padded to a bucket size."""
        if self._engine is None:
            raise ModelLoadError("Classifier.load() was not called")
        count = batch.shape[0]
        bucket = next(size for size in BATCH_BUCKETS if size >= count)
        if bucket > count:
            padding = np.zeros((bucket - count, *batch.shape[1:]), dtype=np.float32)
            batch = np.concatenate([batch, padding])
        return self._engine.run(np.ascontiguousarray(batch, dtype=np.float32))[:count]

    def postprocess(self, probabilities: np.ndarray, top_k: int) -> list[LabelScore]:
        order = np.argsort(probabilities)[::-1][:top_k]
        return [
            LabelScore(
                label=self.labels[index]["label"],
                class_id=self.labels[index]["class_id"],
                score=float(probabilities[index]),
            )
            for index in order
        ]

    def classify(self, sources: list[bytes | str | Path], *, top_k: int = 5) -> list[ImageResult]:
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
                except (OSError, ValueError, SyntaxError) as error:
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
        return results


_cache: dict[tuple[str, str, int], Classifier] = {}
_cache_lock = threading.Lock()


def get_classifier(model_dir: Path | str, *, engine: str = "savedmodel", threads: int = 0) -> Classifier:
    """The loaded, warmed-up classifier for ``model_dir``, loaded once per process."""
    key = (str(Path(model_dir).resolve()), engine, threads)
    with _cache_lock:
        classifier = _cache.get(key)
        if classifier is None:
            classifier = Classifier(Path(model_dir), engine=engine, threads=threads).load()
            classifier.warmup()
            _cache[key] = classifier
        return classifier

"""The one cache of loaded models in a process, keyed by model version (its directory).

An entry holds whatever a version needs once loaded: its ``Classifier`` (per engine and
thread count) for classifying, and its Keras graph (``Explainer``) for Grad-CAM, loaded
only when an explanation is asked for. A worker's heartbeat calls ``release_except()``
with the versions still in use (the active one, the A/B candidate, those given to a
waiting prediction or explanation), so a version switched away from is dropped within
one heartbeat, serving graph and Keras graph together. A batch already holding a
released model finishes with it (its reference keeps it alive).

``MAX_LOADED`` is only a safety net (active + candidate + the one just switched from,
until the next heartbeat): past it the least recently used version is dropped at once.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .ensemble import explained_dir
from .gradcam import Explainer
from .runner import Classifier

logger = logging.getLogger(__name__)

MAX_LOADED = 3


@dataclass
class LoadedVersion:
    """What this process holds of one model version."""

    model_dir: str
    classifiers: dict[tuple[str, int], Classifier] = field(default_factory=dict)
    explainer: Explainer | None = None

    @property
    def label(self) -> str:
        held = self.explainer or next(iter(self.classifiers.values()), None)
        return f"{held.name} v{held.version}" if held is not None else self.model_dir


class ModelCache:
    """Loaded versions, least recently used first; thread-safe (the heartbeat thread
    releases while a task classifies)."""

    def __init__(self, max_loaded: int = MAX_LOADED) -> None:
        self.max_loaded = max_loaded
        self._versions: OrderedDict[str, LoadedVersion] = OrderedDict()
        self._lock = threading.Lock()

    def _entry(self, model_dir: Path | str) -> LoadedVersion:
        key = dir_key(model_dir)
        entry = self._versions.get(key)
        if entry is None:
            entry = self._versions[key] = LoadedVersion(model_dir=key)
        self._versions.move_to_end(key)
        return entry

    def _trim(self) -> None:
        while len(self._versions) > self.max_loaded:
            _, released = self._versions.popitem(last=False)
            logger.info("Released %s from memory: over %d loaded", released.label, self.max_loaded)

    def classifier(self, model_dir: Path | str, *, engine: str = "savedmodel", threads: int = 0) -> Classifier:
        """The loaded, warmed-up classifier of ``model_dir``, loaded once per process.
        Raises ``ModelLoadError`` for a missing or unreadable model directory."""
        with self._lock:
            entry = self._entry(model_dir)
            classifier = entry.classifiers.get((engine, threads))
            if classifier is None:
                classifier = Classifier(Path(model_dir), engine=engine, threads=threads).load()
                classifier.warmup()
                entry.classifiers[(engine, threads)] = classifier
            self._trim()
            return classifier

    def explainer(self, model_dir: Path | str) -> Explainer:
        """The Grad-CAM ``Explainer`` of ``model_dir``, loaded once per process. Raises
        ``ExplanationUnsupportedError`` for an export without ``model.keras`` and
        ``ModelLoadError`` for a missing or unreadable model directory."""
        with self._lock:
            entry = self._entry(model_dir)
            if entry.explainer is None:
                # An ensemble is explained through its strongest member (ml.ensemble).
                entry.explainer = Explainer(explained_dir(model_dir))
            self._trim()
            return entry.explainer

    def release_except(self, keep_dirs: Iterable[Path | str]) -> list[LoadedVersion]:
        """Drop every loaded version whose directory is not in ``keep_dirs`` (the versions
        still in use), classifiers and explainer together; returns the ones released."""
        keep = {dir_key(model_dir) for model_dir in keep_dirs}
        with self._lock:
            released = [self._versions.pop(key) for key in list(self._versions) if key not in keep]
        for entry in released:
            logger.info("Released %s from memory (%s): not in use", entry.label, entry.model_dir)
        return released

    def loaded(self) -> list[LoadedVersion]:
        """The loaded versions, least recently used first."""
        with self._lock:
            return list(self._versions.values())

    def loaded_classifiers(self) -> list[Classifier]:
        """One classifier per loaded version that has one, least recently used first."""
        return [next(iter(entry.classifiers.values())) for entry in self.loaded() if entry.classifiers]


def dir_key(model_dir: Path | str) -> str:
    return str(Path(model_dir).resolve())


# The process's cache: the only module-level state of the runner (one per process; a
# Celery pool child fills it after the fork, the web process never does).
models = ModelCache()


def get_classifier(model_dir: Path | str, *, engine: str = "savedmodel", threads: int = 0) -> Classifier:
    """``models.classifier()``: the process's loaded classifier of ``model_dir``."""
    return models.classifier(model_dir, engine=engine, threads=threads)


def get_explainer(model_dir: Path | str) -> Explainer:
    """``models.explainer()``: the process's loaded Grad-CAM explainer of ``model_dir``."""
    return models.explainer(model_dir)


def release_except(keep_dirs: Iterable[Path | str]) -> list[LoadedVersion]:
    """``models.release_except()``: drop every version not in ``keep_dirs``."""
    return models.release_except(keep_dirs)


def loaded_model_dirs() -> list[str]:
    """Directories of the versions loaded in this process, least recently used first."""
    return [entry.model_dir for entry in models.loaded()]


def loaded_classifiers() -> list[Classifier]:
    """One classifier per loaded version, least recently used first."""
    return models.loaded_classifiers()

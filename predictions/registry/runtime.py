"""Registered versions in this process's memory: the model of a ``ModelVersion`` loaded
through the runner's one cache (``ml.cache``), and released once no longer in use.
Only the inference worker calls these (the web process never loads a model)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from ml.cache import get_classifier, get_explainer, loaded_classifiers, loaded_model_dirs, release_except
from ml.export import ModelLoadError
from ml.gradcam import Explainer
from ml.runner import Classifier

from ..exceptions import ModelUnavailableError
from . import distribution, selectors
from .models import ModelVersion


def classifier_for(*, model_version: ModelVersion) -> Classifier:
    """The loaded classifier of a registered ``model_version`` in this process (loaded
    and warmed up once, then cached), with the configured engine and threads.

    Raises ``ModelUnavailableError`` when its files are missing or unreadable (a deploy
    that has not copied them yet), ``ModelIntegrityError`` when fetched files do not match
    their published checksums, ``StorageUnavailableError`` when the model store does not
    answer: the caller retries later. With ``MODEL_DISTRIBUTION`` the files are fetched on
    first use (``distribution.model_version_local_dir``).
    """
    model_dir = _local_dir(model_version)
    try:
        return get_classifier(model_dir, engine=settings.MODEL_ENGINE, threads=settings.MODEL_THREADS)
    except ModelLoadError as error:
        raise ModelUnavailableError(str(error)) from error


def explainer_for(*, model_version: ModelVersion) -> Explainer:
    """The loaded Grad-CAM explainer of ``model_version`` (same cache entry as its
    classifier). Raises ``ExplanationUnsupportedError`` for an export without
    ``model.keras``, ``ModelLoadError`` for missing files."""
    return get_explainer(_local_dir(model_version))


def _local_dir(model_version: ModelVersion) -> Path:
    loaded = [Path(model_dir) for model_dir in loaded_model_dirs()]
    return distribution.model_version_local_dir(model_version=model_version, in_use=loaded)


def model_version_release_unused() -> list[str]:
    """Release from this process's memory every loaded model that is no longer in use
    (``selectors.model_version_in_use``: not the active version, not the A/B candidate,
    given to no waiting prediction). Returns ``name:version`` of each model still
    loaded, as the runner read it, in use first (the active one first). A batch already
    running with a released model finishes with it. The worker's heartbeat calls this."""
    in_use = [
        str(distribution.model_version_dir(model_version).resolve())
        for model_version in selectors.model_version_in_use()
    ]
    release_except(in_use)
    rank = {model_dir: index for index, model_dir in enumerate(in_use)}
    loaded = {str(classifier.model_dir.resolve()): classifier for classifier in loaded_classifiers()}
    in_order = sorted(loaded, key=lambda model_dir: rank.get(model_dir, len(rank)))
    return [f"{loaded[model_dir].name}:{loaded[model_dir].version}" for model_dir in in_order]

"""Model versions distributed through the media bucket (``MODEL_DISTRIBUTION``, on with
``MEDIA_STORAGE=s3``), so that no host needs the model files beforehand.

Publishing (``model_version_publish``, called by ``register_model`` and ``sync_models``):
every file of the exported folder goes to ``models/<name>/<version>/<path>`` with a
manifest of SHA-256 checksums (ml/manifest.py); the manifest's own SHA-256 is recorded
on the registry row (``metadata["distribution"]``), the anchor a worker trusts.

Fetching (``model_version_local_dir``, the worker, on first use of a version): the
manifest is read and checked against the row, each file downloaded into a temporary
folder under ``MODEL_CACHE_DIR`` and checked against the manifest, then the folder is
renamed into place: a version is either complete and verified or absent. A mismatch
raises ``ModelIntegrityError`` and leaves nothing behind (the prediction is retried, then
failed with a message; never classified by wrong files). The cache keeps at most
``MODEL_CACHE_MAX_VERSIONS`` versions, evicting the least recently used that is not in use.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from ml.manifest import (
    MANIFEST_FILE,
    ManifestMismatchError,
    manifest_build,
    manifest_bytes,
    manifest_sha256,
    manifest_verify,
)

from ..exceptions import InvalidModelError, ModelIntegrityError, ModelUnavailableError
from ..storage import media_store
from .models import ModelVersion

logger = logging.getLogger(__name__)

PREFIX = "models"
VERIFIED_MARK = ".verified"  # written last into a fetched folder; its mtime is the last use
# A folder with weights, not only the model card the web image keeps (Dockerfile).
# An ensemble's weights are its members' (ml.ensemble: members/<i>/).
_SERVABLE = ("saved_model", "model.keras", "model.tflite", "model.onnx", "members")


def _key(model_version: ModelVersion, relative: str) -> str:
    return f"{PREFIX}/{model_version.name}/{model_version.version}/{relative}"


def published_sha256(model_version: ModelVersion) -> str:
    """The SHA-256 of the version's published manifest, as recorded; empty if unpublished."""
    distribution = (model_version.metadata or {}).get("distribution") or {}
    return str(distribution.get("manifest_sha256", ""))


def model_version_publish(*, model_version: ModelVersion, model_dir: Path) -> str:
    """Upload the files of ``model_dir`` and their manifest to the bucket and record the
    manifest's SHA-256 on ``model_version``; returns it. Publishing the same files again
    uploads nothing. A folder without weights (a model card only) is not published:
    ``InvalidModelError``. Raises ``StorageUnavailableError`` when the store is down."""
    model_dir = Path(model_dir)
    if not any((model_dir / name).exists() for name in _SERVABLE):
        raise InvalidModelError(f"{model_version} has no model files in {model_dir} to publish.")
    manifest = manifest_build(model_dir, name=model_version.name, version=model_version.version)
    digest = manifest_sha256(manifest)
    manifest_key = _key(model_version, MANIFEST_FILE)
    with media_store():
        if not _stored_manifest_is(manifest_key, digest):
            for relative in manifest["files"]:
                _put(_key(model_version, relative), (model_dir / relative).read_bytes())
            _put(manifest_key, manifest_bytes(manifest))  # last: a manifest names only stored files
            logger.info("Published %s: %d files to %s/", model_version, len(manifest["files"]), _key(model_version, ""))
    metadata = dict(model_version.metadata or {})
    metadata["distribution"] = {"manifest_sha256": digest, "files": len(manifest["files"])}
    ModelVersion.objects.filter(pk=model_version.pk).update(metadata=metadata)
    model_version.metadata = metadata
    return digest


def _stored_manifest_is(key: str, digest: str) -> bool:
    try:
        with default_storage.open(key, "rb") as stored:
            return manifest_sha256(json.loads(stored.read())) == digest
    except (FileNotFoundError, ValueError):
        return False


def _put(key: str, content: bytes) -> None:
    # Replaced on purpose: a local media folder would otherwise keep the old file and pick a new name.
    default_storage.delete(key)
    stored = default_storage.save(key, ContentFile(content))
    if stored != key:
        raise ModelUnavailableError(f"The store kept {key} as {stored}.")


def model_version_is_published(*, model_version: ModelVersion) -> bool:
    """Whether the version's recorded manifest is in the bucket (activation checks this
    instead of a local folder when models are distributed)."""
    digest = published_sha256(model_version)
    if not digest:
        return False
    with media_store():
        return _stored_manifest_is(_key(model_version, MANIFEST_FILE), digest)


def cache_path(model_version: ModelVersion) -> Path:
    """Where this host keeps the version once fetched (no I/O)."""
    digest = published_sha256(model_version) or "unpublished"
    return Path(settings.MODEL_CACHE_DIR) / model_version.name / f"{model_version.version}-{digest[:16]}"


def model_version_dir(model_version: ModelVersion) -> Path:
    """The folder the runner loads the version from on this host, without fetching it."""
    return cache_path(model_version) if settings.MODEL_DISTRIBUTION else Path(model_version.path)


def model_version_local_dir(*, model_version: ModelVersion, in_use: Iterable[Path] = ()) -> Path:
    """The folder the runner loads ``model_version`` from on this host: its registered
    path, or with ``MODEL_DISTRIBUTION`` the verified local copy, fetched on first use.

    Raises ``ModelUnavailableError`` for a version never published, ``ModelIntegrityError``
    for files that do not match their checksums, ``StorageUnavailableError`` when the
    store does not answer (each retried by the worker's task)."""
    if not settings.MODEL_DISTRIBUTION:
        return Path(model_version.path)
    target = cache_path(model_version)
    if (target / VERIFIED_MARK).exists():
        (target / VERIFIED_MARK).touch()
        return target
    expected = published_sha256(model_version)
    if not expected:
        raise ModelUnavailableError(f"{model_version} has not been published to the model store.")
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / f".{target.name}.lock"):
        if not (target / VERIFIED_MARK).exists():  # another process may have fetched it meanwhile
            _fetch(model_version, target, expected)
    cache_evict(keep=[target, *in_use])
    return target


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fetch(model_version: ModelVersion, target: Path, expected: str) -> None:
    began = time.perf_counter()
    staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=target.parent))
    try:
        with media_store():
            manifest = _read_manifest(model_version, expected)
            for relative in manifest["files"]:
                destination = staging / relative
                if not destination.resolve().is_relative_to(staging.resolve()):
                    raise ModelIntegrityError(f"{model_version}: the manifest names a path outside the model folder.")
                destination.parent.mkdir(parents=True, exist_ok=True)
                with (
                    default_storage.open(_key(model_version, relative), "rb") as stored,
                    open(destination, "wb") as out,
                ):
                    shutil.copyfileobj(stored, out, 1 << 20)
        try:
            manifest_verify(staging, manifest)
        except ManifestMismatchError as error:
            logger.error("Refusing %s: %s", model_version, error)
            raise ModelIntegrityError(f"{model_version} refused: {error}") from error
        (staging / MANIFEST_FILE).write_bytes(manifest_bytes(manifest))
        (staging / VERIFIED_MARK).touch()
        os.rename(staging, target)
    except FileNotFoundError as error:
        raise ModelIntegrityError(f"{model_version} refused: a published file is missing ({error})") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("Fetched %s into %s in %.0f ms", model_version, target, (time.perf_counter() - began) * 1000)


def _read_manifest(model_version: ModelVersion, expected: str) -> dict[str, Any]:
    with default_storage.open(_key(model_version, MANIFEST_FILE), "rb") as stored:
        content = stored.read()
    try:
        manifest: dict[str, Any] = json.loads(content)
    except ValueError as error:
        raise ModelIntegrityError(f"{model_version} refused: its manifest is not JSON") from error
    if manifest_sha256(manifest) != expected:
        raise ModelIntegrityError(f"{model_version} refused: its manifest is not the one registered")
    return manifest


def cache_evict(*, keep: Iterable[Path]) -> list[Path]:
    """Remove fetched versions beyond ``MODEL_CACHE_MAX_VERSIONS``, least recently used
    first, never one in ``keep`` (in use or loaded); returns the folders removed."""
    root = Path(settings.MODEL_CACHE_DIR)
    kept = {path.resolve() for path in keep}
    fetched = sorted(root.glob(f"*/*/{VERIFIED_MARK}"), key=lambda mark: mark.stat().st_mtime)
    surplus = len(fetched) - settings.MODEL_CACHE_MAX_VERSIONS
    removed = []
    for mark in fetched:
        if surplus <= 0:
            break
        folder = mark.parent
        if folder.resolve() in kept:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        logger.info("Evicted %s from the model cache", folder)
        removed.append(folder)
        surplus -= 1
    return removed

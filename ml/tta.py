"""Test-time augmentation: classify several views of one image and average their scores.

A per-version option (``metadata.json`` ``"tta": {"flip": true, "crops": 5}``) or one
run's (``manage.py classify --tta``). The views of one image:

- ``crops`` 1: the serving centre crop (``ml.preprocessing.to_model_input``); 5: that crop
  and the same-sized crops at the four corners of the image (the "five-crop" of the
  ImageNet evaluations);
- ``flip``: each of those mirrored left-right as well (twice the views).

The cost is linear in the views (5 crops x flip = 10 model calls per image); what it buys
is measured on real photos in docs/model/tools.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from .preprocessing import CROP_FRACTION

CROP_CHOICES = (1, 5)


@dataclass(frozen=True)
class TTA:
    """Which views of an image are classified and averaged."""

    flip: bool = False
    crops: int = 1

    @property
    def views(self) -> int:
        return self.crops * (2 if self.flip else 1)

    @property
    def active(self) -> bool:
        return self.views > 1

    def record(self) -> dict[str, Any]:
        return {"flip": self.flip, "crops": self.crops}


DEFAULT_TTA = TTA(flip=True, crops=5)  # ``classify --tta`` without a version's own setting


def tta_from_metadata(metadata: dict[str, Any]) -> TTA:
    """A version's own TTA setting (none: one view). Raises ``ValueError`` for a bad one."""
    setting = metadata.get("tta")
    if setting is None:
        return TTA()
    if not isinstance(setting, dict) or setting.get("crops", 1) not in CROP_CHOICES:
        raise ValueError(f"tta must be {{'flip': bool, 'crops': one of {CROP_CHOICES}}}, not {setting!r}")
    return TTA(flip=bool(setting.get("flip", False)), crops=int(setting.get("crops", 1)))


def tta_for_run(model_dir: Path | str) -> TTA:
    """The TTA of one ``classify --tta`` run: the version's own setting when it has an
    active one, else ``DEFAULT_TTA``."""
    from .export import export_read

    own = tta_from_metadata(export_read(model_dir).metadata)
    return own if own.active else DEFAULT_TTA


def tta_views(image: Image.Image, input_size: int, tta: TTA) -> NDArray[np.float32]:
    """The views of ``image`` as float32 ``[V, S, S, 3]`` RGB 0..255 (view 0: the serving crop)."""
    width, height = image.size
    side = min(width, height) * CROP_FRACTION
    corners = [((width - side) / 2, (height - side) / 2)]
    if tta.crops == 5:
        corners += [(0, 0), (width - side, 0), (0, height - side), (width - side, height - side)]
    views = []
    for left, top in corners:
        box = (left, top, left + side, top + side)
        crop = np.asarray(image.resize((input_size, input_size), Image.Resampling.BICUBIC, box=box), np.float32)
        views.append(crop)
        if tta.flip:
            views.append(crop[:, ::-1])
    return np.stack(views)

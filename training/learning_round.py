"""One training round of the continuous learning loop, in a process of its own:

    python -m training.learning_round SPEC.json RESULT.json

``SPEC.json`` (written by ``predictions.learning``) names the active version's folder
(``base``), the dataset of reviewed images (``data``: a folder per class id), where to
export the candidate (``out``/``name``/``version``), the fine-tune's knobs (``config``:
fields of :class:`training.finetune_config.FinetuneConfig`), each class id's label and the
held-back reviewed images (``holdout``: ``{"file", "class_id"}``). The round fine-tunes
(:func:`training.finetune.finetune`) from the active version's own weights and output head
(a warm start, :mod:`training.warm_start`, at low learning rates; from the ImageNet
weights only when the active version has no ``model.keras``), gives the candidate the
active version's labels, then classifies every held-back image with both versions and
writes ``RESULT.json``: the candidate's folder, what it started from
(``initialised_from``) and, per version, how many of the held-back images it got right.

A process of its own so that the Celery worker that runs the cycle never imports
TensorFlow (a prefork pool must never fork a process with it loaded), and so a crash or a
time-out of training takes nothing else down. Django-free, like the rest of ``training/``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from training.export import KERAS_FILE, LABELS_FILE, load_metadata, metadata_set, write_json
from training.finetune import FinetuneConfig, finetune

WARM_LEARNING_RATE = 1e-3  # the head's phase when warm-started (a new head's is 1e-2)
WARM_FINETUNE_LEARNING_RATE = 5e-5  # the top blocks' phase when warm-started (a new head's is 2e-4)


def holdout_score(model: Path, holdout: list[dict[str, str]]) -> dict[str, Any]:
    """How many of ``holdout``'s images ``model`` puts its reviewed class first, and per image what it said."""
    from ml.cache import get_classifier

    results = get_classifier(model).classify([Path(item["file"]) for item in holdout], top_k=1)
    said = [result.top.class_id if result.predictions else "" for result in results]
    right = sum(answer == item["class_id"] for answer, item in zip(said, holdout, strict=True))
    return {"count": len(holdout), "right": right, "top1": right / len(holdout) if holdout else None, "said": said}


def learning_round(spec: dict[str, Any]) -> dict[str, Any]:
    """Fine-tune, relabel and measure both versions on the held-back slice (see the module doc)."""
    # Warm start (training.warm_start): the active version's own weights and head. Without
    # its model.keras, finetune falls back to the ImageNet weights and records why.
    config = replace(FinetuneConfig(**spec.get("config", {})), warm_start=True)
    if (Path(spec["base"]) / KERAS_FILE).is_file():
        # Only a gentle nudge from there: low learning rates, the epochs the spec asks for (a few).
        config = replace(
            config,
            learning_rate=min(config.learning_rate, WARM_LEARNING_RATE),
            finetune_learning_rate=min(config.finetune_learning_rate, WARM_FINETUNE_LEARNING_RATE),
        )
    result = finetune(
        spec["base"], spec["data"], spec["out"], spec["name"], spec["version"],
        config=config, workdir=spec.get("workdir"), force=bool(spec.get("force", False)),
    )  # fmt: skip
    labels_path = result.target / LABELS_FILE
    names: dict[str, str] = spec.get("labels", {})
    labels = json.loads(labels_path.read_text(encoding="utf-8"))
    for entry in labels:  # the folders are class ids; users read the active version's labels
        entry["label"] = names.get(entry["class_id"], entry["label"])
    write_json(labels_path, labels)
    holdout = list(spec["holdout"])
    scores = {"active": holdout_score(Path(spec["base"]), holdout), "candidate": holdout_score(result.target, holdout)}
    metadata_set(
        result.target,
        "learning",
        {
            "cycle": spec.get("cycle"),
            "holdout": {arm: {k: v for k, v in s.items() if k != "said"} for arm, s in scores.items()},
        },
    )
    start = load_metadata(result.target).get("initialised_from", {})
    return {"target": str(result.target), "seconds": round(result.seconds, 1), "initialised_from": start, **scores}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print(__doc__.split("\n\n")[0], file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    write_json(Path(args[1]), learning_round(spec))
    return 0


if __name__ == "__main__":
    sys.exit(main())

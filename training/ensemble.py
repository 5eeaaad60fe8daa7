"""Build an ensemble version from exported models with the same classes.

    python -m training.ensemble --members models/efficientnet_lite0/1 models/efficientnet_lite2/1 \
        --out models/lite-ensemble/1 [--val photo-crops | --val DIR | --weights 1 2] [--tta-flip] [--tta-crops 5]

The folder it writes is a served version like any other (``register_model``,
``manage.py classify --model``, A/B, explanations): ``metadata.json`` with an ``ensemble``
record, ``labels.json``, ``MODEL_CARD.md`` and every member's export copied under
``members/<i>/`` (``ml.ensemble`` serves it: the weighted mean of the members'
probabilities). Members must list the same class ids in the same order.

Weights: ``--weights`` as given; else each member's top-1 on the validation half of
``--val`` (``training.tools_measure``: ``photo-crops`` for ImageNet models, or a data
folder and the first member's ``splits.json``); else each member's best validation accuracy
recorded by ``training.finetune``. With ``--val`` the build also measures, on the held-out
half, every member, the plain and the weighted mean and test-time augmentation: top-1 and
model time per image, written into ``metadata.json`` (``measured``), the card and MLflow.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ml.ensemble import ENSEMBLE_KEY, MEMBERS_DIR
from ml.export import ExportedModel, ModelLoadError, export_read
from ml.manifest import MANIFEST_FILE
from ml.runner import Classifier
from ml.tta import TTA
from training.evaluation_report import EVALUATION_DIR
from training.export import FORMAT_VERSION, LABELS_FILE, METADATA_FILE, MODEL_CARD_FILE, staging_dir, write_json
from training.finetune_card import cpu_model
from training.tools_measure import Labelled, labelled_sets, measure, probabilities, table, top1
from training.tracking import card_section, tracked_run

_NOT_COPIED = (EVALUATION_DIR, MANIFEST_FILE, ".verified")


def members_read(paths: Sequence[Path]) -> list[ExportedModel]:
    """The members' exports, checked: two or more, single-label, the same classes in the same order."""
    if len(paths) < 2:
        raise ValueError("an ensemble needs at least two members")
    members = [export_read(path) for path in paths]
    classes = [[entry["class_id"] for entry in member.labels] for member in members]
    for member, ids in zip(members[1:], classes[1:], strict=True):
        if ids != classes[0]:
            raise ValueError(f"{member.path} does not have the classes of {members[0].path} in the same order")
    if any(member.multi_label or ENSEMBLE_KEY in member.metadata for member in members):
        raise ValueError("members must be single-label models (not multi-label, not ensembles)")
    return members


def recorded_validation(member: ExportedModel) -> float:
    """A fine-tuned member's best validation accuracy (``training.finetune`` history)."""
    history = (member.metadata.get("training") or {}).get("history") or {}
    values = history.get("val_accuracy") or []
    if not values:
        raise ValueError(f"{member.path} records no validation accuracy: pass --val or --weights")
    return float(max(values))


def build(
    member_dirs: Sequence[Path],
    out: Path,
    *,
    name: str,
    version: str,
    weights: Sequence[float] | None = None,
    val: str | None = None,
    tta: TTA | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Write the ensemble folder ``out`` (see the module doc); returns its metadata."""
    started = time.monotonic()
    members = members_read([Path(p) for p in member_dirs])
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists (use --force to replace it)")
    validation: list[Labelled] = []
    held_out: list[Labelled] = []
    if val is not None:
        validation, held_out = labelled_sets(val, members[0].path)
    params = {"members": [str(m.path) for m in members], "val": val, "weights": list(weights or [])}
    with tracked_run("ensemble", run_name=f"{name}-{version}", params=params) as tracking:
        if weights is not None:
            if len(weights) != len(members) or min(weights) <= 0:
                raise ValueError("--weights needs one positive number per member")
            figures, source = [float(w) for w in weights], "given (--weights)"
        elif validation:
            figures = [measure(m.path, validation).top1 for m in members]
            source = f"each member's top-1 on the validation half of {val} ({len(validation)} images)"
        else:
            figures = [recorded_validation(m) for m in members]
            source = "each member's best validation accuracy (training.finetune)"
        total = sum(figures)
        with staging_dir(out, force=force) as tmp:
            records: list[dict[str, Any]] = []
            for index, (member, figure) in enumerate(zip(members, figures, strict=True)):
                shutil.copytree(
                    member.path, tmp / MEMBERS_DIR / str(index), ignore=shutil.ignore_patterns(*_NOT_COPIED)
                )
                records.append(
                    {
                        "dir": f"{MEMBERS_DIR}/{index}",
                        "name": member.name,
                        "version": member.version,
                        "input_size": int(member.metadata["input_size"]),
                        "validation_figure": round(figure, 5),
                        "weight": round(figure / total, 5),
                    }
                )
            first = members[0]
            write_json(tmp / LABELS_FILE, first.labels)
            meta: dict[str, Any] = {
                "format_version": FORMAT_VERSION,
                "name": name,
                "version": version,
                "architecture": "ensemble: " + " + ".join(f"{m.name} v{m.version}" for m in members),
                "task": first.metadata.get("task", "image-classification"),
                "input_size": max(r["input_size"] for r in records),
                "num_classes": len(first.labels),
                ENSEMBLE_KEY: {
                    "members": records,
                    "combine": "weighted mean of probabilities",
                    "weights_from": source,
                    "explained_by": "the strongest member (highest weight)",
                },
                "parent_model": {"name": first.name, "version": first.version},
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "cpu": cpu_model(),
                "tracking": tracking.record(),
            }
            if "uncertainty" in first.metadata:
                meta["uncertainty"] = first.metadata["uncertainty"]
            if tta is not None and tta.active:
                meta["tta"] = tta.record()
            write_json(tmp / METADATA_FILE, meta)
            if held_out:
                meta["measured"] = measured(tmp, members, held_out, val or "")
                write_json(tmp / METADATA_FILE, meta)
                tracking.log_metrics({f"{row['key']}_top1": row["top1"] for row in meta["measured"]["rows"]})
                tracking.log_metrics(
                    {f"{row['key']}_ms": row["inference_ms_per_image"] for row in meta["measured"]["rows"]}
                )
            meta["build_seconds"] = round(time.monotonic() - started, 1)
            write_json(tmp / METADATA_FILE, meta)
            (tmp / MODEL_CARD_FILE).write_text(model_card(meta), encoding="utf-8")
        tracking.log_params({"weights_normalised": [r["weight"] for r in records]})
        tracking.log_artifacts(out / METADATA_FILE, out / MODEL_CARD_FILE)
    return meta


def measured(folder: Path, members: Sequence[ExportedModel], held_out: Sequence[Labelled], val: str) -> dict[str, Any]:
    """Held-out top-1 and model time per image: each member, the plain mean (computed from
    the members' own probabilities), the weighted ensemble as served, and TTA on the first
    member and on the ensemble."""
    rows: list[dict[str, Any]] = []
    member_scores = []
    for index, member in enumerate(members):
        figure = measure(member.path, held_out).record()
        rows.append({**figure, "key": f"member{index}", "label": f"{member.name} v{member.version}"})
        member_scores.append(probabilities(Classifier(member.path).load(), held_out))
    plain = np.mean(member_scores, axis=0)
    reference = Classifier(members[0].path).load()
    rows.append(
        {
            **rows[-1],
            "key": "plain_mean",
            "label": "plain mean of the members",
            "top1": round(top1(reference, held_out, plain), 4),
            "inference_ms_per_image": sum(r["inference_ms_per_image"] for r in rows),
        }
    )
    ensemble = measure(folder, held_out, tta=TTA()).record()
    rows.append({**ensemble, "key": "ensemble", "label": "weighted ensemble (served)"})
    for key, label, target, tta in (
        ("tta_flip", f"{members[0].name} + TTA flip", members[0].path, TTA(flip=True)),
        ("tta_flip_5crop", f"{members[0].name} + TTA flip x 5 crops", members[0].path, TTA(flip=True, crops=5)),
        ("ensemble_tta_flip", "weighted ensemble + TTA flip", folder, TTA(flip=True)),
    ):
        rows.append({**measure(target, held_out, tta=tta).record(), "key": key, "label": label})
    return {"data": f"held-out half of {val}", "count": len(held_out), "cpu": cpu_model(), "rows": rows}


def model_card(meta: dict[str, Any]) -> str:
    """``MODEL_CARD.md`` of an ensemble."""
    record = meta[ENSEMBLE_KEY]
    members = "\n".join(
        f"| `{m['dir']}` | {m['name']} v{m['version']} | {m['input_size']} "
        f"| {m['validation_figure']:.4f} | {m['weight']:.3f} |"
        for m in record["members"]
    )
    card = f"""# {meta["name"]} v{meta["version"]}: an ensemble of {len(record["members"])} models

The weighted mean of its members' probabilities (`ml.ensemble`); weights from {record["weights_from"]},
normalised to sum 1. Preprocessed once at {meta["input_size"]} px (the largest member's side); a smaller
member gets that batch resized to its own side. Grad-CAM explains it through its strongest member.
Test-time augmentation: {meta.get("tta") or "off"}.

| folder | member | input | validation figure | weight |
|---|---|---|---|---|
{members}
"""
    measured_record = meta.get("measured")
    if measured_record:
        rows = measured_record["rows"]
        card += f"""
## Measured: top-1 and latency

On the {measured_record["data"]} ({measured_record["count"]} images, never used for the weights), model time
per image in batches of 16 with every TTA view, on {measured_record["cpu"]} (a shared machine: other jobs
were running):

{table(rows, rows[0])}
"""
    return card + "\n" + card_section(meta.get("tracking"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", nargs="+", type=Path, required=True, help="exported model folders")
    parser.add_argument("--out", type=Path, required=True, help="the ensemble's folder, e.g. models/ensemble/1")
    parser.add_argument("--name", help="default: the folder's parent name")
    parser.add_argument("--version", help="default: the folder's name")
    parser.add_argument("--weights", nargs="+", type=float, help="one per member (default: validation figures)")
    parser.add_argument("--val", help="photo-crops, or a labelled folder DIR/<class>/*: weights and measurement")
    parser.add_argument("--tta-flip", action="store_true", help="serve it with flipped views too")
    parser.add_argument("--tta-crops", type=int, choices=(1, 5), default=1, help="serve it with 5 crops")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    try:
        meta = build(
            args.members,
            args.out,
            name=args.name or args.out.resolve().parent.name,
            version=args.version or args.out.name,
            weights=args.weights,
            val=args.val,
            tta=TTA(flip=args.tta_flip, crops=args.tta_crops),
            force=args.force,
        )
    except (ValueError, ModelLoadError, FileExistsError) as error:
        parser.exit(2, f"training.ensemble: error: {error}\n")
    print(
        f"{args.out}: "
        + ", ".join(f"{m['name']} v{m['version']} x {m['weight']}" for m in meta[ENSEMBLE_KEY]["members"])
    )
    if meta.get("measured"):
        rows = meta["measured"]["rows"]
        print(table(rows, rows[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

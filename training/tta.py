"""Set (and measure) a version's test-time augmentation before it is registered.

    python -m training.tta --model models/efficientnet_lite0/1 --flip [--crops 5] [--measure photo-crops|DIR]
    python -m training.tta --model models/efficientnet_lite0/1 --off

Writes ``"tta": {"flip": ..., "crops": ...}`` into the version's ``metadata.json`` (read by
the runner, ``ml.tta``: every worker serving the version then averages those views).
With ``--measure`` it first scores the version without and with that setting on the
held-out half of a labelled set (``training.tools_measure``) and writes the table (top-1,
model time per image) into the model card and an MLflow run (experiment ``tta``).
Register the version again afterwards so the registry's copy of the metadata follows.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ml.export import ModelLoadError, export_read
from ml.tta import CROP_CHOICES, TTA
from training.export import card_section_write, metadata_set
from training.tools_measure import labelled_sets, measure, table
from training.tracking import tracked_run

CARD_START = "<!-- tta: written by training.tta -->"
CARD_END = "<!-- /tta -->"


def tta_set(model: Path, tta: TTA, *, data: str | None = None) -> list[dict[str, object]]:
    """Record ``tta`` in ``model``'s metadata; with ``data``, measure it first (see the module doc)."""
    exported = export_read(model)
    rows: list[dict[str, object]] = []
    if data is not None:
        _, held_out = labelled_sets(data, model)
        params = {"model": str(model), "data": data, "tta": tta.record()}
        with tracked_run("tta", run_name=f"{exported.name}-{exported.version}", params=params) as run:
            plain = {**measure(model, held_out, tta=TTA()).record(), "label": "without TTA"}
            augmented = {**measure(model, held_out, tta=tta).record(), "label": f"TTA {tta.record()}"}
            rows = [plain, augmented]
            run.log_metrics({"top1_plain": plain["top1"], "top1_tta": augmented["top1"]})
            run.log_metrics(
                {"ms_plain": plain["inference_ms_per_image"], "ms_tta": augmented["inference_ms_per_image"]}
            )
        section = (
            f"{CARD_START}\n## Test-time augmentation\n\nServed with {tta.record()} (`metadata.json` `tta`). "
            f"On the held-out half of {data} ({len(held_out)} images), model time per image in batches of 16 with "
            f"every view, on {plain['cpu']} (a shared machine):\n\n{table(rows, plain)}\n{CARD_END}\n"
        )
        card_section_write(model, CARD_START, CARD_END, section)
    metadata_set(model, "tta", tta.record())
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="an exported version folder")
    parser.add_argument("--flip", action="store_true", help="add the mirrored views")
    parser.add_argument("--crops", type=int, choices=CROP_CHOICES, default=1, help="5: the centre and four corners")
    parser.add_argument("--off", action="store_true", help="serve one view again")
    parser.add_argument("--measure", metavar="photo-crops|DIR", help="measure top-1 and time first (the card)")
    args = parser.parse_args(argv)
    tta = TTA() if args.off else TTA(flip=args.flip, crops=args.crops)
    try:
        rows = tta_set(args.model, tta, data=args.measure)
    except (ModelLoadError, ValueError) as error:
        parser.exit(2, f"training.tta: error: {error}\n")
    print(f"{args.model}: tta {tta.record()}")
    if rows:
        print(table(rows, rows[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

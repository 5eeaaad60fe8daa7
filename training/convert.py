"""Convert an exported model's SavedModel to the other engines' formats, next to it.

    python -m training.convert --model models/efficientnet_lite0/1 --formats tflite-fp16,tflite-int8,onnx
    python -m training.convert --model models/digits/1 --formats tflite-fp16,tflite-int8 \
        --calibration-data var/datasets/digits [--calibration-count 200]

Writes into the model directory (each file atomically: a temp file renamed into place):

- ``model_fp16.tflite``: float16 weights (post-training quantisation), float32 compute.
- ``model_int8.tflite``: full-integer post-training quantisation; float32 input and output,
  so the runner feeds it unchanged. Calibrated on real images preprocessed exactly as
  served (the model's input size, ``ml.preprocessing``):

  - a fine-tuned model (one with ``splits.json``, from ``training.finetune``): files of its
    **train** split only, taken round-robin over the classes, from ``--calibration-data``
    (default: the folder recorded in ``splits.json``, when it still exists). The held-out
    test files never calibrate the model they then measure.
  - otherwise (the ImageNet model): crops of scikit-image's photographs that are *not* among
    the photos the agreement figures are measured on.
- ``model.onnx``: the ``serve`` signature converted by tf2onnx (opset 17) with a dynamic
  batch dimension, for ONNX Runtime.

The SavedModel stays the reference; ``agreement()`` compares any engine's probabilities
with it, and ``make bench`` reports the figures. Needs ``requirements-convert.txt``
(tf2onnx, onnx) on top of ``requirements.txt``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ml.engines import ONNX_FILE, SAVED_MODEL_DIR, TFLITE_FP16_FILE, TFLITE_INT8_FILE
from training.export import SPLITS_FILE
from training.photoset import photoset
from training.samples import photo_batch

if TYPE_CHECKING:
    import tensorflow as tf

FORMATS = {"tflite-fp16": TFLITE_FP16_FILE, "tflite-int8": TFLITE_INT8_FILE, "onnx": ONNX_FILE}
ONNX_OPSET = 17
PHOTOSET_DIR = Path("var/photoset")
# photoset() is deterministic: its first AGREEMENT_PHOTOS crops measure agreement, the next
# CALIBRATION_PHOTOS (built in their own directory, so a shorter set in PHOTOSET_DIR that
# someone else is reading is never rebuilt under them) calibrate int8.
CALIBRATION_DIR = Path("var/photoset-calibration")
AGREEMENT_PHOTOS = 600
CALIBRATION_PHOTOS = 200
CALIBRATION_SEED = 0


@dataclass(frozen=True)
class Agreement:
    """How closely one engine's probabilities follow the reference's on the same images."""

    images: int
    top1_agreement: float  # fraction of images with the same top-1 class
    mean_abs_diff: float  # mean |p - p_ref| over every image and class
    max_abs_diff: float

    def as_dict(self) -> dict[str, float | int]:
        return {
            "images": self.images,
            "top1_agreement": round(self.top1_agreement, 5),
            "mean_abs_prob_diff": float(f"{self.mean_abs_diff:.3g}"),
            "max_abs_prob_diff": float(f"{self.max_abs_diff:.3g}"),
        }


def agreement(reference: ArrayLike, candidate: ArrayLike) -> Agreement:
    """Top-1 agreement and probability differences of ``candidate`` vs ``reference`` ([N, C] each)."""
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if reference.shape != candidate.shape or reference.ndim != 2 or not len(reference):
        raise ValueError(f"Need two non-empty [N, C] arrays of one shape, got {reference.shape} and {candidate.shape}")
    difference = np.abs(reference - candidate)
    same = reference.argmax(axis=1) == candidate.argmax(axis=1)
    return Agreement(
        images=len(reference),
        top1_agreement=float(same.mean()),
        mean_abs_diff=float(difference.mean()),
        max_abs_diff=float(difference.max()),
    )


def agreement_photos(photoset_dir: Path = PHOTOSET_DIR, count: int = AGREEMENT_PHOTOS) -> list[Path]:
    """The real photos agreement is measured on (built once into ``photoset_dir``)."""
    return photoset(count, photoset_dir)


def calibration_photos(calibration_dir: Path = CALIBRATION_DIR, count: int = CALIBRATION_PHOTOS) -> list[Path]:
    """Real photos for int8 calibration, none of them among ``agreement_photos()``."""
    return photoset(AGREEMENT_PHOTOS + count, calibration_dir)[AGREEMENT_PHOTOS:]


def calibration_files(model_dir: Path, data: Path, count: int = CALIBRATION_PHOTOS) -> list[Path]:
    """Up to ``count`` files of the model's train split under ``data``, spread evenly over classes.

    Each class's train files are shuffled (fixed seed), then taken one class at a time in
    turn, so 200 images of a 10-class set are 20 per class and a rare class is not drowned
    out. Raises ``ValueError`` when ``model_dir`` has no ``splits.json`` or ``data`` is not
    the folder it describes.
    """
    splits_path = Path(model_dir) / SPLITS_FILE
    if not splits_path.is_file():
        raise ValueError(
            f"{model_dir} has no {SPLITS_FILE} (only models from training.finetune have one), so its train "
            "split is unknown; calibration data would risk being the data the model is tested on. "
            "Leave out --calibration-data to calibrate on the built-in photos."
        )
    splits = json.loads(splits_path.read_text(encoding="utf-8"))
    train = list(splits["train"])
    held_out = set(splits.get("val", [])) | set(splits.get("test", []))
    if not train or held_out & set(train):
        raise ValueError(f"{splits_path}: the train split is empty or shares files with val/test")
    root = Path(data)
    missing = [name for name in train if not (root / name).is_file()]
    if missing:
        raise ValueError(
            f"{root} does not match {splits_path}: {len(missing)} of its {len(train)} train files are missing "
            f"(first: {missing[0]}); pass the folder the model was fine-tuned on ({splits.get('root', '?')})"
        )
    by_class: dict[str, list[str]] = {}
    for name in sorted(train):
        by_class.setdefault(name.split("/", 1)[0], []).append(name)
    rng = np.random.default_rng(CALIBRATION_SEED)
    queues = [[str(name) for name in rng.permutation(names)] for _, names in sorted(by_class.items())]
    picked = [
        queue[turn] for turn in range(max(len(queue) for queue in queues)) for queue in queues if turn < len(queue)
    ]
    return [root / name for name in picked[:count]]


def _int8_calibration(
    model_dir: Path, input_size: int, data: Path | None, count: int, photos_dir: Path
) -> NDArray[np.float32]:
    """The int8 representative batch: the model's own train split when known, else real photos."""
    splits_path = model_dir / SPLITS_FILE
    if data is None and splits_path.is_file():
        recorded = Path(json.loads(splits_path.read_text(encoding="utf-8")).get("root", ""))
        if recorded.parts and recorded.is_dir():
            data = recorded
        else:
            print(
                f"tflite-int8: warning: {model_dir} is fine-tuned but its data ({recorded}) is gone; calibrating on "
                "generic photos, which can cost accuracy. Pass --calibration-data DIR (the fine-tuning folder)."
            )
    if data is None:
        paths = calibration_photos(photos_dir, count)
        print(f"tflite-int8: calibrating on {len(paths)} photo crops ({photos_dir})")
    else:
        paths = calibration_files(model_dir, data, count)
        classes = len({path.parent.name for path in paths})
        print(f"tflite-int8: calibrating on {len(paths)} train-split images of {data} ({classes} classes)")
    return photo_batch(paths, input_size)


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Let ``write`` fill a temp file next to ``path``, then rename it into place."""
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        write(tmp)
        tmp.chmod(0o644)  # mkstemp makes it 0600; the worker may run as another user
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _tflite_converter(model_dir: Path) -> tuple[ModuleType, Any]:
    """TensorFlow and a TFLite converter for the SavedModel (``tf.lite`` has no published types)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(model_dir / SAVED_MODEL_DIR))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return tf, converter


def convert_tflite_fp16(model_dir: Path, out: Path) -> None:
    """float16 weights; LiteRT dequantises them at load and computes in float32 on CPUs without fp16."""
    tf, converter = _tflite_converter(model_dir)
    converter.target_spec.supported_types = [tf.float16]
    out.write_bytes(converter.convert())


def convert_tflite_int8(model_dir: Path, out: Path, calibration: NDArray[np.float32]) -> None:
    """Full-integer quantisation (int8 weights and activations), float32 input/output."""
    tf, converter = _tflite_converter(model_dir)

    def representative_dataset() -> Iterator[list[NDArray[np.float32]]]:
        for image in calibration:
            yield [image[None]]

    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    out.write_bytes(converter.convert())


def convert_onnx(model_dir: Path, out: Path, input_size: int) -> None:
    """tf2onnx from the ``serve`` signature, wrapped so the batch dimension stays dynamic."""
    import tensorflow as tf
    import tf2onnx

    module = tf.saved_model.load(str(model_dir / SAVED_MODEL_DIR))  # keep it: it owns the variables
    serve = module.signatures["serve"]
    (input_name,) = serve.structured_input_signature[1].keys()
    spec = tf.TensorSpec([None, input_size, input_size, 3], tf.float32, name="image")

    # tf.function is not covered by types-tensorflow (it resolves to Incomplete).
    @tf.function(input_signature=[spec])  # type: ignore[untyped-decorator]
    def probabilities(image: tf.Tensor) -> dict[str, tf.Tensor]:
        (output,) = serve(**{input_name: image}).values()
        return {"probabilities": output}

    tf2onnx.convert.from_function(probabilities, input_signature=[spec], opset=ONNX_OPSET, output_path=str(out))


def convert(
    model_dir: Path,
    formats: list[str],
    *,
    calibration_dir: Path = CALIBRATION_DIR,
    calibration_count: int = CALIBRATION_PHOTOS,
    calibration_data: Path | None = None,
) -> dict[str, Path]:
    """Write each of ``formats`` next to the SavedModel in ``model_dir``; returns the paths.

    ``calibration_data`` (``DIR/<class>/*``, the folder a fine-tuned model was trained on)
    calibrates int8 on that model's train split; ``calibration_dir`` holds the photo crops
    used otherwise. ``calibration_count`` images either way.
    """
    model_dir = Path(model_dir)
    if not (model_dir / SAVED_MODEL_DIR).is_dir():
        raise FileNotFoundError(f"No SavedModel in {model_dir} (run `make model` first)")
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"Unknown format(s) {', '.join(sorted(unknown))}; choose from {', '.join(FORMATS)}")
    input_size = int(json.loads((model_dir / "metadata.json").read_text())["input_size"])
    written = {}
    for fmt in formats:
        path = model_dir / FORMATS[fmt]
        started = time.perf_counter()
        if fmt == "tflite-fp16":
            _write_atomically(path, lambda tmp: convert_tflite_fp16(model_dir, tmp))
        elif fmt == "tflite-int8":
            calibration = _int8_calibration(model_dir, input_size, calibration_data, calibration_count, calibration_dir)
            _write_atomically(path, functools.partial(convert_tflite_int8, model_dir, calibration=calibration))
        else:
            _write_atomically(path, lambda tmp: convert_onnx(model_dir, tmp, input_size))
        print(f"{fmt}: {path} ({path.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - started:.1f} s)")
        written[fmt] = path
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models/efficientnet_lite0/1"))
    parser.add_argument("--formats", default=",".join(FORMATS), help=f"comma-separated, from {', '.join(FORMATS)}")
    parser.add_argument(
        "--calibration-data",
        type=Path,
        help="DIR/<class>/* a fine-tuned model was trained on: int8 is calibrated on its train split (splits.json)",
    )
    parser.add_argument("--calibration-count", type=int, default=CALIBRATION_PHOTOS, help="int8 calibration images")
    parser.add_argument(
        "--calibration-dir", type=Path, default=CALIBRATION_DIR, help="photo crops calibrating int8 otherwise"
    )
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    formats = [fmt.strip() for fmt in args.formats.split(",") if fmt.strip()]
    try:
        convert(
            args.model,
            formats,
            calibration_dir=args.calibration_dir,
            calibration_count=args.calibration_count,
            calibration_data=args.calibration_data,
        )
    except (ValueError, FileNotFoundError) as error:
        parser.exit(2, f"training.convert: error: {error}\n")


if __name__ == "__main__":
    main()

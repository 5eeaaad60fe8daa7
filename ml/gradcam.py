"""Grad-CAM: where in the image the model looked for a class.

The served ``saved_model/`` answers only its ``serve`` signature (image in,
probabilities out), which gives no access to the feature maps inside, so Grad-CAM runs
on the Keras graph that every export also saves as ``model.keras``
(``training.export.export_saved_model``). Like ``ml.runner`` this module imports
TensorFlow / Keras only when a model is loaded, never at import time; processes keep
loaded explainers in ``ml.cache``, beside the version's classifier.

For one image and one class: preprocess exactly as serving does
(``ml.preprocessing``), find the last layer with a 4-D (feature map) output by
walking the model (no layer name is assumed, so fine-tuned models of any input size
work), take the gradient of the class's pre-softmax score with respect to that feature
map, weight each channel by its mean gradient, keep the positive part (Selvaraju et al.,
2017). The coarse map (7 x 7 for a 224 px input) is placed back over the centre crop the
model saw and drawn over the image with a jet colour map.
"""

from __future__ import annotations

import io
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from .export import ModelLoadError, export_read
from .preprocessing import CROP_FRACTION, open_rgb, to_model_input

logger = logging.getLogger(__name__)

KERAS_FILE = "model.keras"  # written by training.export next to saved_model/
# The overlay is for looking at, not for measuring: a 24-megapixel upload gives a
# picture of at most this many pixels on its longer side.
MAX_OVERLAY_SIDE = 1024
OVERLAY_ALPHA = 0.45  # share of the colour map in the blend over the crop the model saw
OUTSIDE_CROP_BRIGHTNESS = 0.35  # the margins the model never saw are darkened


class ExplanationUnsupportedError(ModelLoadError):
    """The model directory has no Keras graph to explain (exported before ``model.keras``)."""


@dataclass
class GradCam:
    """One class's Grad-CAM of one image.

    ``heatmap``: float32 in [0, 1] (min-max normalised over the centre crop the model saw,
    0 outside it), the size of ``overlay`` (the image, scaled down to fit ``MAX_OVERLAY_SIDE``). ``overlay``: the heat
    map blended over the image, RGB. ``score``: the model's probability for the class."""

    heatmap: NDArray[np.float32]
    overlay: Image.Image
    class_index: int
    score: float
    layer_name: str
    compute_ms: float

    def png(self) -> bytes:
        buffer = io.BytesIO()
        # Level 1: a third of the default's time for ~5 % more bytes (measured on the photos).
        self.overlay.save(buffer, "PNG", compress_level=1)
        return buffer.getvalue()


def last_feature_map_layer(model: Any) -> Any:
    """The last layer (in the model's own order) whose output is a 4-D feature map
    ``[N, H, W, C]`` with H, W > 1, other than the input: the layer Grad-CAM explains.

    Found by shape, not by name, so any convolutional classifier the project exports
    (the shipped model, a fine-tune at another input size) is explained the same way."""
    for layer in reversed(model.layers):
        if type(layer).__name__ == "InputLayer":
            continue
        output = layer.output
        shape = getattr(output, "shape", None)
        if shape is not None and len(shape) == 4 and (shape[1] or 2) > 1 and (shape[2] or 2) > 1:
            return layer
    raise ExplanationUnsupportedError(f"{model.name} has no layer with a 4-D feature map output to explain")


def _score_tensor(model: Any) -> Any:
    """The tensor whose class entry is explained: the pre-activation scores (logits) when
    the model ends in a softmax or sigmoid Activation layer (their gradients do not
    vanish where the probability saturates), else the model's output."""
    import keras

    output = model.outputs[0]
    last = next((layer for layer in reversed(model.layers) if layer.output is output), None)
    if isinstance(last, keras.layers.Activation) and getattr(last.activation, "__name__", "") in (
        "softmax",
        "sigmoid",
    ):
        return last.input
    return output


class Explainer:
    """A loaded Keras model of one exported model directory, ready to explain images."""

    def __init__(self, model_dir: Path | str) -> None:
        self.model_dir = Path(model_dir)
        exported = export_read(self.model_dir)
        self.name = exported.name
        self.version = exported.version
        self.input_size = int(exported.metadata["input_size"])
        self.class_ids = [entry["class_id"] for entry in exported.labels]
        keras_path = self.model_dir / KERAS_FILE
        if not keras_path.is_file():
            raise ExplanationUnsupportedError(
                f"Model {self.name} v{self.version} was exported without its Keras graph ({KERAS_FILE}), "
                "so it cannot be explained. Export it again: `make model` (python -m training.build_imagenet "
                "adds it to the shipped model), or run training.finetune again for a fine-tuned model."
            )
        started = time.perf_counter()
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import keras
        import tensorflow as tf

        self._tf = tf
        model = keras.saving.load_model(str(keras_path), compile=False)
        self.layer = last_feature_map_layer(model)
        self._grad_model = keras.Model(model.inputs, [self.layer.output, _score_tensor(model), model.outputs[0]])
        spec = [
            tf.TensorSpec([1, self.input_size, self.input_size, 3], tf.float32),
            tf.TensorSpec([], tf.int32),
        ]
        self._cam = tf.function(self._cam_graph, input_signature=spec)
        self.load_seconds = time.perf_counter() - started
        logger.info(
            "Loaded %s v%s for Grad-CAM (layer %s) in %.2fs", self.name, self.version, self.layer.name,
            self.load_seconds,
        )  # fmt: skip

    def _cam_graph(self, batch: Any, class_index: Any) -> tuple[Any, Any]:
        tf = self._tf
        with tf.GradientTape() as tape:
            features, scores, probabilities = self._grad_model(batch, training=False)
            score = scores[0, class_index]
        gradients = tape.gradient(score, features)
        channel_weights = tf.reduce_mean(gradients, axis=(1, 2))  # [1, C]
        cam = tf.nn.relu(tf.einsum("bhwc,bc->bhw", features, channel_weights))[0]
        return cam, probabilities[0, class_index]

    def class_index(self, class_id: str) -> int:
        try:
            return self.class_ids.index(class_id)
        except ValueError as error:
            raise ValueError(f"Model {self.name} v{self.version} has no class {class_id!r}") from error

    def explain(
        self, source: bytes | str | Path | Image.Image, class_id: str, *, max_decode_bytes: int | None = None
    ) -> GradCam:
        """Grad-CAM of ``class_id`` for the image, with the serving preprocessing (and its
        decode budget, ``ml.decoding``: ``ImageTooCostlyError`` over it)."""
        index = self.class_index(class_id)
        started = time.perf_counter()
        image = open_rgb(source, max_decode_bytes=max_decode_bytes)
        batch = to_model_input(image, self.input_size)[None]
        cam, probability = self._cam(self._tf.constant(batch), self._tf.constant(index, self._tf.int32))
        heatmap, overlay = render(image, np.asarray(cam.numpy(), dtype=np.float32))
        return GradCam(
            heatmap=heatmap,
            overlay=overlay,
            class_index=index,
            score=float(probability.numpy()),
            layer_name=self.layer.name,
            compute_ms=(time.perf_counter() - started) * 1000,
        )


def jet(values: NDArray[np.float32]) -> NDArray[np.uint8]:
    """The jet colour map (blue, cyan, yellow, red) of values in [0, 1], as RGB uint8."""
    scaled = 4.0 * np.clip(values, 0.0, 1.0)[..., None]
    centres = np.array([3.0, 2.0, 1.0], dtype=np.float32)  # red, green, blue peaks
    colours: NDArray[np.uint8] = (np.clip(1.5 - np.abs(scaled - centres), 0.0, 1.0) * 255).astype(np.uint8)
    return colours


def render(image: Image.Image, cam: NDArray[np.float32]) -> tuple[NDArray[np.float32], Image.Image]:
    """Place the coarse ``cam`` over the centre crop the model saw (as in
    ``to_model_input``), normalised to [0, 1], and blend it over the image (scaled to fit
    ``MAX_OVERLAY_SIDE``); returns (heat map, overlay), both of the overlay's size."""
    scale = min(1.0, MAX_OVERLAY_SIDE / max(image.size))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    shown = image.resize(size, Image.Resampling.LANCZOS) if size != image.size else image
    side = min(size) * CROP_FRACTION
    left, top = round((size[0] - side) / 2), round((size[1] - side) / 2)
    crop = max(1, round(side))
    upsampled = np.asarray(
        Image.fromarray(np.maximum(cam, 0).astype(np.float32)).resize((crop, crop), Image.Resampling.BILINEAR)
    )
    # Min-max normalised after upsampling (as the Grad-CAM authors' code does): the
    # coolest pixel the model saw is 0 and the hottest exactly 1, so the colours show
    # where the evidence is rather than a warm wash; a flat map (no positive evidence
    # anywhere) stays 0, all blue.
    low, high = float(upsampled.min()), float(upsampled.max())
    normalised = (upsampled - low) / (high - low) if high > low else np.zeros_like(upsampled)
    heatmap = np.zeros((size[1], size[0]), dtype=np.float32)
    heatmap[top : top + crop, left : left + crop] = np.clip(normalised, 0.0, 1.0)[: size[1] - top, : size[0] - left]

    pixels = np.asarray(shown, dtype=np.float32)
    blended = pixels * OUTSIDE_CROP_BRIGHTNESS
    window = (slice(top, top + crop), slice(left, left + crop))
    blended[window] = (1 - OVERLAY_ALPHA) * pixels[window] + OVERLAY_ALPHA * jet(heatmap[window]).astype(np.float32)
    return heatmap, Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8))

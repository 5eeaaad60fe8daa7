"""The ``tf.data`` pipelines of fine-tuning: images streamed from disk (only file names are
held, memory is bounded by the batch), preprocessed as serving does for validation and
test, and for training randomly cropped, flipped, colour-jittered and erased."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ml.preprocessing import CROP_FRACTION, open_rgb, to_model_input
from training.finetune_config import FinetuneConfig


def _load_for_eval(path: bytes, input_size: np.int64) -> NDArray[np.float32]:
    """Exactly what the runner feeds the model: decode, centre 0.875 square, bicubic resize."""
    return to_model_input(open_rgb(path.decode()), int(input_size))


def _load_for_training(path: bytes, size: np.int64) -> NDArray[np.float32]:
    """The image's whole centre square at ``size`` px, for random crops of it."""
    image = open_rgb(path.decode())
    width, height = image.size
    side = min(width, height)
    box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
    pixels = image.resize((int(size), int(size)), resample=3, box=box)  # 3 = bicubic
    return np.asarray(pixels, dtype=np.float32)


def image_dataset(
    files: Sequence[Path], targets: NDArray[np.float32], input_size: int, config: FinetuneConfig, training: bool
) -> Any:
    """A ``tf.data`` pipeline of (image batch, target batch), decoded from disk as it goes;
    ``targets`` are one float vector per file (one-hot or multi-hot)."""
    import tensorflow as tf

    paths = tf.constant([str(f) for f in files])
    dataset = tf.data.Dataset.from_tensor_slices((paths, tf.constant(targets, dtype=tf.float32)))
    if training:
        # Only file names are shuffled, so the whole set can be shuffled without its pixels.
        dataset = dataset.shuffle(len(files), seed=config.seed, reshuffle_each_iteration=True)
        source_size = round(input_size / CROP_FRACTION)

        def load(path: Any, target: Any) -> tuple[Any, Any]:
            image = tf.numpy_function(_load_for_training, [path, source_size], tf.float32, stateful=False)
            image.set_shape((source_size, source_size, 3))
            return augment(image, input_size, config), target
    else:

        def load(path: Any, target: Any) -> tuple[Any, Any]:
            image = tf.numpy_function(_load_for_eval, [path, input_size], tf.float32, stateful=False)
            image.set_shape((input_size, input_size, 3))
            return image, target

    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training)
    return dataset.batch(config.batch_size).prefetch(1)


def augment(image: Any, input_size: int, config: FinetuneConfig) -> Any:
    """Random square crop, flips, colour jitter and random erasing of one float 0..255 image."""
    import tensorflow as tf

    source_size = image.shape[0]
    side = tf.cast(tf.random.uniform([], config.crop_min, 1.0) * source_size, tf.int32)
    image = tf.image.random_crop(image, tf.stack([side, side, 3]))
    image = tf.image.resize(image, (input_size, input_size), method="bicubic")
    if config.flip in ("horizontal", "both"):
        image = tf.image.random_flip_left_right(image)
    if config.flip in ("vertical", "both"):
        image = tf.image.random_flip_up_down(image)
    jitter = config.color_jitter
    if jitter > 0:
        x = tf.clip_by_value(image / 255.0, 0.0, 1.0)
        x = tf.image.random_brightness(x, 0.3 * jitter)
        x = tf.image.random_contrast(x, 1 - 0.5 * jitter, 1 + 0.5 * jitter)
        x = tf.image.random_saturation(x, 1 - 0.5 * jitter, 1 + 0.5 * jitter)
        x = tf.image.random_hue(x, 0.1 * jitter)
        image = x * 255.0
    if config.erasing > 0:
        image = _random_erase(image, input_size, config.erasing)
    return tf.clip_by_value(image, 0.0, 255.0)


def _random_erase(image: Any, size: int, probability: float) -> Any:
    """With ``probability``, replace a rectangle (2-25 % of the area, aspect 1/3..3) by noise."""
    import tensorflow as tf

    area = tf.random.uniform([], 0.02, 0.25) * size * size
    aspect = tf.exp(tf.random.uniform([], np.log(1 / 3), np.log(3.0)))
    height = tf.clip_by_value(tf.cast(tf.sqrt(area * aspect), tf.int32), 1, size)
    width = tf.clip_by_value(tf.cast(tf.sqrt(area / aspect), tf.int32), 1, size)
    top = tf.random.uniform([], 0, size - height + 1, dtype=tf.int32)
    left = tf.random.uniform([], 0, size - width + 1, dtype=tf.int32)
    rows = tf.range(size)[:, None]
    cols = tf.range(size)[None, :]
    inside = (rows >= top) & (rows < top + height) & (cols >= left) & (cols < left + width)
    inside = inside & (tf.random.uniform([]) < probability)
    noise = tf.random.uniform(tf.shape(image), 0.0, 255.0)
    return tf.where(inside[:, :, None], noise, image)

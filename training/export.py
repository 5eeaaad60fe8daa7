"""Write a Keras classifier in the served model-directory layout (the contract with serving).

``models/<name>/<version>/``::

    saved_model/    Keras 3 ``model.export`` output; signature ``serve``:
                    float32 [N, S, S, 3] RGB 0..255 -> probabilities [N, C]
    model.keras     the same model as a native Keras file: the graph with its layers,
                    which Grad-CAM needs (ml.gradcam); serving never reads it
    model.tflite    the same SavedModel converted to fp32 TFLite
    labels.json     [{"index": i, "class_id": ..., "label": ...}, ...]
    metadata.json   at least name, version, input_size (int), format_version
    MODEL_CARD.md   human-readable description
    splits.json     a fine-tuned model's train / val / test files (training.finetune)

Everything is written into a temporary sibling directory which is renamed into place at
the end, so a half-written model is never visible under its final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

# Defined once, in ml/ (the side that reads them), and re-exported here with the rest of the layout.
from ml.engines import SAVED_MODEL_DIR as SAVED_MODEL_DIR
from ml.engines import TFLITE_FILE as TFLITE_FILE
from ml.export import MULTI_LABEL_TASK as MULTI_LABEL_TASK
from ml.gradcam import KERAS_FILE as KERAS_FILE

if TYPE_CHECKING:
    import keras

FORMAT_VERSION = 1
LABELS_FILE = "labels.json"
METADATA_FILE = "metadata.json"
MODEL_CARD_FILE = "MODEL_CARD.md"
SPLITS_FILE = "splits.json"
# metadata.json "task": one softmax over the classes, or one sigmoid per class.
SINGLE_LABEL_TASK = "image-classification"


def model_dir(out: str | Path, name: str, version: str | int) -> Path:
    """``<out>/<name>/<version>``."""
    return Path(out) / name / str(version)


def is_complete(path: str | Path) -> bool:
    """Whether ``path`` holds a finished model directory."""
    path = Path(path)
    return all((path / f).exists() for f in (SAVED_MODEL_DIR, TFLITE_FILE, LABELS_FILE, METADATA_FILE))


@contextlib.contextmanager
def staging_dir(target: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield an empty temp dir next to ``target``; on success move it to ``target`` atomically.

    With ``force`` an existing ``target`` is replaced (moved aside, then deleted). On error
    the temp dir is removed and ``target`` is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it 0700; the finished model must be readable by the server
    try:
        yield tmp
        old: Path | None = None
        if target.exists():
            if not force:
                raise FileExistsError(f"{target} appeared while building")
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.rename(target, old / "model")
        os.rename(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def export_saved_model(model: keras.Model, path: Path) -> None:
    """Keras 3 ``model.export`` (signature ``serve``) into ``path``, and the same model
    as ``model.keras`` beside it (``save_keras``): every export path goes through here,
    so every exported model can be explained."""
    model.export(str(path), format="tf_saved_model", verbose=False)
    save_keras(model, path.parent / KERAS_FILE)


def save_keras(model: keras.Model, path: Path) -> None:
    """Save ``model`` as a native Keras file (graph + weights, no optimizer state),
    written beside ``path`` first and renamed into place, so a reader never sees half a file.

    A SavedModel from ``model.export`` cannot be loaded back as a Keras model in Keras 3
    and its ``serve`` signature hides the layers; Grad-CAM needs them."""
    import keras

    # A new uncompiled Model over the same layers: the .keras file of a just-trained model
    # would otherwise carry its optimizer's slots (twice the trainable weights).
    uncompiled = keras.Model(model.inputs, model.outputs, name=model.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        uncompiled.save(tmp / KERAS_FILE)
        os.replace(tmp / KERAS_FILE, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def convert_tflite(saved_model: Path, path: Path) -> None:
    """Convert a SavedModel to an fp32 ``.tflite`` file."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.optimizations = []
    path.write_bytes(converter.convert())


def write_json(path: Path, data: Any) -> None:
    """Write pretty UTF-8 JSON with a trailing newline."""
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def load_labels(model: str | Path) -> list[dict[str, Any]]:
    """The model's ``labels.json``."""
    return list(json.loads((Path(model) / LABELS_FILE).read_text(encoding="utf-8")))


def load_metadata(model: str | Path) -> dict[str, Any]:
    """The model's ``metadata.json``."""
    return dict(json.loads((Path(model) / METADATA_FILE).read_text(encoding="utf-8")))


def metadata_set(model: Path, key: str, value: Any) -> None:
    """Set one key of the model's ``metadata.json``, written to a temp file and renamed into
    place: a worker loading the model never reads a half-written file."""
    metadata = json.loads((model / METADATA_FILE).read_text(encoding="utf-8"))
    metadata[key] = value
    tmp = model / (METADATA_FILE + ".tmp")
    write_json(tmp, metadata)
    os.replace(tmp, model / METADATA_FILE)


def card_section_write(model: Path, start: str, end: str, section: str) -> None:
    """Put ``section`` (which begins with the marker ``start`` and ends with ``end``) at the
    end of the model's ``MODEL_CARD.md``, replacing the one an earlier run wrote."""
    card_path = model / MODEL_CARD_FILE
    card = card_path.read_text(encoding="utf-8") if card_path.is_file() else ""
    if start in card:
        card = card[: card.index(start)].rstrip() + "\n" + card[card.index(end) + len(end) :].lstrip()
    card_path.write_text(card.rstrip() + "\n\n" + section, encoding="utf-8")


def dir_size(path: Path) -> int:
    """Total size in bytes of the files under ``path`` (or of the file ``path``)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def saved_model_probabilities(saved_model: str | Path, batch: NDArray[np.float32]) -> NDArray[np.float32]:
    """Run the ``serve`` signature of a SavedModel on a float32 batch ``[N, S, S, 3]``."""
    import tensorflow as tf

    fn = tf.saved_model.load(str(saved_model)).signatures["serve"]
    return signature_probabilities(fn, batch)


def signature_probabilities(fn: Any, batch: NDArray[np.float32]) -> NDArray[np.float32]:
    """Call a loaded ``serve`` signature and return its single output as numpy."""
    import tensorflow as tf

    (input_name,) = fn.structured_input_signature[1].keys()
    outputs = fn(**{input_name: tf.constant(np.asarray(batch, dtype=np.float32))})
    (output,) = outputs.values()
    return np.asarray(output.numpy())


def tflite_probabilities(tflite_path: str | Path, batch: NDArray[np.float32]) -> NDArray[np.float32]:
    """Run a ``.tflite`` classifier image by image with the LiteRT interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tflite_path))
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    results = []
    for image in np.asarray(batch, dtype=np.float32):
        interpreter.set_tensor(inp["index"], image[None])
        interpreter.invoke()
        results.append(interpreter.get_tensor(out["index"])[0].copy())
    return np.stack(results)

"""The inference engines behind the runner: one small class per runtime, same ``run(batch)``.

Every engine takes a float32 ``[N, S, S, 3]`` RGB 0..255 batch and returns the model's
probabilities ``[N, C]``. ``Classifier`` (``ml.runner``) pads batches to a
few bucket sizes before calling ``run``, so each engine sees a handful of shapes.

- ``savedmodel``: the reference artifact (``saved_model/``, Keras ``model.export``), the
  ``serve`` signature through TensorFlow. The default.
- ``tflite``: ``model.tflite`` (fp32) through LiteRT with XNNPACK.
- ``tflite-fp16``: ``model_fp16.tflite`` (float16 weights), from ``make convert``.
- ``onnx``: ``model.onnx`` through ONNX Runtime, converted from the SavedModel by
  ``python -m training.convert`` (``make convert``).

Which engines are offered is decided by measurement (``make bench``): an engine is listed
in ``ENGINES`` only when its top-1 agrees with the SavedModel on >= 99.5 % of real photos.
``tflite-int8`` is built and measured (``CANDIDATE_ENGINES``) but not offered: about 80 %.

Imports of TensorFlow / LiteRT / ONNX Runtime happen inside the constructors, so importing
this module is cheap and the web process never loads a runtime.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    import tensorflow as tf

logger = logging.getLogger(__name__)

# Files written next to the model by ``training.convert``; the first two by ``training.build_imagenet``.
SAVED_MODEL_DIR = "saved_model"
TFLITE_FILE = "model.tflite"
TFLITE_FP16_FILE = "model_fp16.tflite"
TFLITE_INT8_FILE = "model_int8.tflite"
ONNX_FILE = "model.onnx"

# Offered as MODEL_ENGINE values: the reference plus every engine measured at >= 99.5 %
# top-1 agreement with it on the photoset (see README "Benchmarks" and ``make bench``).
ENGINES = ("savedmodel", "tflite", "tflite-fp16", "onnx")
# Measured by ``make bench``; int8 is not offered (~80 % top-1 agreement on 600 photos).
CANDIDATE_ENGINES = (*ENGINES, "tflite-int8")
MIN_TOP1_AGREEMENT = 0.995

# A batch in: float32 [N, S, S, 3] RGB 0..255; probabilities out: float32 [N, C].
Batch = NDArray[np.float32]
Probabilities = NDArray[np.float32]

_CONVERT_HINT = "run `make convert` (python -m training.convert --model {model_dir}) to build it"


class EngineLoadError(RuntimeError):
    """The engine's artifact is missing or cannot be loaded."""


class Engine(Protocol):
    def run(self, batch: Batch) -> Probabilities: ...


class SavedModelEngine:
    """The ``serve`` signature of the exported SavedModel, the reference engine.

    Measured on the project's 2-core machine (``make bench``): TensorFlow's default thread
    pools (``threads=0``: intra = inter = cores) are as fast as any explicit setting
    overall (``threads=1`` wins ~10 % at batch 1 but is ~1.5x slower from batch 8), and
    XLA (``jit_compile``) is about 10x *slower* on CPU for this network (XLA emits its own
    convolution kernels instead of oneDNN's), so ``xla`` is off and exists so the benchmark can show it. The batch
    dimension of ``serve`` is dynamic and ``Classifier`` pads to buckets, so there is
    no retracing; a per-bucket ``tf.function`` wrapper measured no faster.
    """

    def __init__(self, model_dir: Path, threads: int = 0, *, xla: bool = False) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep C++ start-up chatter out of logs
        import tensorflow as tf

        path = Path(model_dir) / SAVED_MODEL_DIR
        if not path.is_dir():
            raise EngineLoadError(f"{path} is missing: rebuild the model with `make model`")
        if threads:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(1)
            except RuntimeError:  # already initialised in this process
                logger.debug("TensorFlow threading already configured")
        self._tf = tf
        self._module = tf.saved_model.load(str(path))
        self._serve = self._module.signatures["serve"]
        _, kwargs = self._serve.structured_input_signature
        self._input_name = next(iter(kwargs))
        self.xla = xla
        # One compiled function per batch bucket: XLA needs static shapes.
        self._compiled: dict[tuple[int, ...], Callable[[tf.Tensor], tf.Tensor]] = {}

    def _call(self, batch: tf.Tensor) -> tf.Tensor:
        output: tf.Tensor = next(iter(self._serve(**{self._input_name: batch}).values()))
        return output

    def run(self, batch: Batch) -> Probabilities:
        tensor = self._tf.constant(batch)
        if not self.xla:
            return self._call(tensor).numpy()
        function = self._compiled.get(batch.shape)
        if function is None:
            spec = self._tf.TensorSpec(batch.shape, self._tf.float32)
            function = self._tf.function(self._call, jit_compile=True, input_signature=[spec])
            self._compiled[batch.shape] = function
        return function(tensor).numpy()


class TFLiteEngine:
    """A ``.tflite`` file through LiteRT; XNNPACK is LiteRT's default CPU delegate."""

    def __init__(self, model_dir: Path, threads: int = 0, *, filename: str = TFLITE_FILE) -> None:
        from ai_edge_litert.interpreter import Interpreter

        path = Path(model_dir) / filename
        if not path.exists():
            if filename == TFLITE_FILE:
                raise EngineLoadError(f"{path} is missing: rebuild the model with `make model`")
            raise EngineLoadError(f"{path} is missing: " + _CONVERT_HINT.format(model_dir=model_dir))
        self._interpreter = Interpreter(model_path=str(path), num_threads=threads or None)
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._batch_size = 0

    def run(self, batch: Batch) -> Probabilities:
        if batch.shape[0] != self._batch_size:
            self._interpreter.resize_tensor_input(self._input, list(batch.shape))
            self._interpreter.allocate_tensors()
            self._batch_size = batch.shape[0]
        self._interpreter.set_tensor(self._input, batch)
        self._interpreter.invoke()
        probabilities: Probabilities = self._interpreter.get_tensor(self._output).copy()
        return probabilities


class OnnxEngine:
    """``model.onnx`` (converted from the SavedModel by tf2onnx) through ONNX Runtime on CPU."""

    def __init__(self, model_dir: Path, threads: int = 0) -> None:
        path = Path(model_dir) / ONNX_FILE
        if not path.exists():
            raise EngineLoadError(f"{path} is missing: " + _CONVERT_HINT.format(model_dir=model_dir))
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = threads  # 0 = one per physical core
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def run(self, batch: Batch) -> Probabilities:
        probabilities: Probabilities = self._session.run(None, {self._input: batch})[0]
        return probabilities


def load_engine(name: str, model_dir: Path | str, threads: int = 0, *, xla: bool = False) -> Engine:
    """The engine called ``name`` (one of ``CANDIDATE_ENGINES``) for the model in ``model_dir``.

    ``threads`` = 0 lets the runtime choose. ``xla`` applies to ``savedmodel`` only.
    Raises ``EngineLoadError`` when the engine's file is missing, with the command that builds it.
    """
    model_dir = Path(model_dir)
    if name == "savedmodel":
        return SavedModelEngine(model_dir, threads, xla=xla)
    if name == "tflite":
        return TFLiteEngine(model_dir, threads)
    if name == "tflite-fp16":
        return TFLiteEngine(model_dir, threads, filename=TFLITE_FP16_FILE)
    if name == "tflite-int8":
        return TFLiteEngine(model_dir, threads, filename=TFLITE_INT8_FILE)
    if name == "onnx":
        return OnnxEngine(model_dir, threads)
    raise EngineLoadError(f"Unknown engine {name!r}; choose one of {', '.join(CANDIDATE_ENGINES)}")

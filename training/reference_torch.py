"""Independent PyTorch reference forward pass of EfficientNet-Lite (optional dependency).

A plain functional re-implementation of ``efficientnet_lite_pytorch``'s ``EfficientNet.forward``
in eval mode, reading the state dict with ``torch.load(..., weights_only=True)`` (so it also
cross-checks :mod:`training.legacy_torch`). It shares no code with the Keras builder: block
layout comes from the original block strings, kernel sizes and channels from the tensors,
and padding is ``Conv2dStaticSamePadding``'s, computed for the construction image size.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

BLOCK_STRINGS = (
    "r1_k3_s11_e1_i32_o16",
    "r2_k3_s22_e6_i16_o24",
    "r2_k5_s22_e6_i24_o40",
    "r3_k3_s22_e6_i40_o80",
    "r3_k5_s11_e6_i80_o112",
    "r4_k5_s22_e6_i112_o192",
    "r1_k3_s11_e6_i192_o320",
)
DEPTH = {"lite0": 1.0, "lite1": 1.1, "lite2": 1.2, "lite3": 1.4, "lite4": 1.8}
IMAGE_SIZE = {"lite0": 224, "lite1": 240, "lite2": 260, "lite3": 280, "lite4": 300}
EPS = 1e-3


def torch_available() -> bool:
    """Whether ``torch`` can be imported."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def load_state_dict_torch(path: str | Path) -> dict[str, Any]:
    """``torch.load`` the checkpoint safely (``weights_only=True``) on the CPU."""
    import torch

    return dict(torch.load(str(path), map_location="cpu", weights_only=True))


def _block_option(part: str) -> tuple[str, str]:
    """One option of a block string: ``"k3"`` -> ``("k", "3")``."""
    match = re.match(r"([a-z]+)(.*)", part)
    if match is None:
        raise ValueError(f"malformed block option {part!r}")
    return match[1], match[2]


def _strides(variant: str) -> list[int]:
    strides: list[int] = []
    last = len(BLOCK_STRINGS) - 1
    for group, text in enumerate(BLOCK_STRINGS):
        opts = dict(_block_option(part) for part in text.split("_"))
        repeats = int(opts["r"])
        if group not in (0, last):
            repeats = math.ceil(DEPTH[variant] * repeats)
        strides += [int(opts["s"][0])] + [1] * (repeats - 1)
    return strides


class ReferenceEfficientNetLite:
    """Eval-mode EfficientNet-Lite forward pass in torch from an ``efficientnet_pytorch`` state dict."""

    def __init__(self, state: dict[str, Any], variant: str = "lite0") -> None:
        import torch

        self.torch = torch
        self.variant = variant
        self.image_size = IMAGE_SIZE[variant]
        self.state = {k: v.float() for k, v in state.items() if not k.endswith("num_batches_tracked")}
        self.strides = _strides(variant)
        n_blocks = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("_blocks."))
        if n_blocks != len(self.strides):
            raise ValueError(f"{variant}: {n_blocks} blocks in weights, {len(self.strides)} expected")

    def _pad(self, x: Any, kernel: int, stride: int, size: int) -> Any:
        out = math.ceil(size / stride)
        pad = max((out - 1) * stride + kernel - size, 0)
        if pad:
            x = self.torch.nn.functional.pad(x, [pad // 2, pad - pad // 2, pad // 2, pad - pad // 2])
        return x

    def _conv(self, x: Any, key: str, stride: int, size: int, groups: int = 1) -> Any:
        weight = self.state[key]
        x = self._pad(x, weight.shape[-1], stride, size)
        return self.torch.nn.functional.conv2d(x, weight, None, stride, 0, 1, groups)

    def _bn(self, x: Any, prefix: str) -> Any:
        s = self.state
        return self.torch.nn.functional.batch_norm(
            x,
            s[prefix + "running_mean"],
            s[prefix + "running_var"],
            s[prefix + "weight"],
            s[prefix + "bias"],
            False,
            0.0,
            EPS,
        )

    def logits(self, images_nhwc_0_255: NDArray[np.float32]) -> NDArray[np.float32]:
        """Logits for float RGB images ``[N, S, S, 3]`` in [0, 255] (normalised here, as in Keras)."""
        torch = self.torch
        f = torch.nn.functional
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(images_nhwc_0_255, dtype=np.float32)).permute(0, 3, 1, 2)
            if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
                raise ValueError(f"expected {self.image_size}px input, got {tuple(x.shape)}")
            x = (x - 127.0) / 128.0
            size = self.image_size
            x = f.relu6(self._bn(self._conv(x, "_conv_stem.weight", 2, size), "_bn0."))
            size = math.ceil(size / 2)
            for i, stride in enumerate(self.strides):
                p = f"_blocks.{i}."
                inputs = x
                if p + "_expand_conv.weight" in self.state:
                    x = f.relu6(self._bn(self._conv(x, p + "_expand_conv.weight", 1, size), p + "_bn0."))
                x = self._conv(x, p + "_depthwise_conv.weight", stride, size, groups=x.shape[1])
                x = f.relu6(self._bn(x, p + "_bn1."))
                size = math.ceil(size / stride)
                x = self._bn(self._conv(x, p + "_project_conv.weight", 1, size), p + "_bn2.")
                if stride == 1 and inputs.shape[1] == x.shape[1]:
                    x = x + inputs
            x = f.relu6(self._bn(self._conv(x, "_conv_head.weight", 1, size), "_bn1."))
            x = x.mean(dim=(2, 3))
            x = f.linear(x, self.state["_fc.weight"], self.state["_fc.bias"])
        logits: NDArray[np.float32] = x.numpy()
        return logits

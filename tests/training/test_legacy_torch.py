"""The numpy reader of PyTorch's legacy pickle format."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from training.build_imagenet import weights_source
from training.legacy_torch import LEGACY_MAGIC_NUMBER, LegacyFormatError, load_legacy, load_state_dict


@pytest.mark.parametrize("variant", ["lite0", "lite2"])
def test_reader_reproduces_torch_load_exactly(variant: str) -> None:
    torch = pytest.importorskip("torch")
    path = weights_source(variant).path
    ours = load_state_dict(path)
    theirs = torch.load(str(path), map_location="cpu", weights_only=True)
    assert list(ours) == list(theirs)
    for key, tensor in theirs.items():
        expected = tensor.numpy()
        assert ours[key].dtype == expected.dtype, key
        assert ours[key].shape == expected.shape, key
        np.testing.assert_array_equal(ours[key], expected, err_msg=key)


def test_reader_handles_views_strides_offsets_and_dtypes(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    base = torch.arange(60, dtype=torch.float32).reshape(3, 4, 5)
    obj = {
        "transposed": base.transpose(0, 2),  # non-contiguous strides
        "offset_view": base[1, 1:3],  # storage offset, shared storage
        "whole": base,
        "int64": torch.tensor([[1, -2], [3, 4]], dtype=torch.int64),
        "float64": torch.linspace(0, 1, 7, dtype=torch.float64),
        "uint8": torch.arange(10, dtype=torch.uint8),
        "scalar": torch.tensor(7, dtype=torch.int64),
        "empty": torch.zeros(0, 3),
    }
    path = tmp_path / "legacy.pth"
    torch.save(obj, str(path), _use_new_zipfile_serialization=False)
    loaded = load_legacy(path)
    assert list(loaded) == list(obj)
    for key, tensor in obj.items():
        expected = tensor.contiguous().numpy()
        assert loaded[key].dtype == expected.dtype, key
        np.testing.assert_array_equal(loaded[key], expected, err_msg=key)


def test_rejects_zip_format(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "zip.pth"
    torch.save({"w": torch.ones(2)}, str(path))
    with pytest.raises(LegacyFormatError):
        load_legacy(path)


def test_rejects_foreign_file(tmp_path: Path) -> None:
    path = tmp_path / "not.pth"
    path.write_bytes(b"PK\x03\x04 definitely not a pickle")
    with pytest.raises(LegacyFormatError):
        load_legacy(path)


class Evil:
    """Any global other than the torch stand-ins must be refused."""


def test_refuses_arbitrary_globals(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    path.write_bytes(
        pickle.dumps(LEGACY_MAGIC_NUMBER, protocol=2)
        + pickle.dumps(1001, protocol=2)
        + pickle.dumps({"little_endian": True}, protocol=2)
        + pickle.dumps({"x": Evil()}, protocol=2)
    )
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        load_legacy(path)

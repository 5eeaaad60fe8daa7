"""Read PyTorch's legacy (pre-1.6, non-zip) ``torch.save`` format with numpy only.

Layout of such a file, all written by :mod:`pickle` unless noted::

    magic number (int)  protocol version (int)  sys_info (dict)
    main pickle: the saved object; tensors refer to storages through
        persistent ids ('storage', storage_type, key, location, size[, view_metadata])
    pickle: list of storage keys, in the order their data follows
    for each key: int64 element count (little endian, raw) + raw element bytes

Tensors are rebuilt by ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``;
here they become numpy arrays viewed with ``as_strided`` over the storage buffer and
copied into contiguous memory.
"""

from __future__ import annotations

import collections
import pickle
import struct
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
SUPPORTED_PROTOCOL = 1001

#: torch storage class name -> numpy dtype (little endian).
STORAGE_DTYPES: dict[str, np.dtype[Any]] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class LegacyFormatError(ValueError):
    """The file is not a legacy PyTorch pickle this reader understands."""


class _StorageType:
    """Stand-in for ``torch.FloatStorage`` & co.: only carries the numpy dtype."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dtype = STORAGE_DTYPES[name]


class _Storage:
    """A storage whose bytes are filled in after the main pickle has been read."""

    def __init__(self, key: str, dtype: np.dtype[Any], size: int) -> None:
        self.key = key
        self.dtype = dtype
        self.size = size
        self.data: NDArray[Any] | None = None


class _TensorPlaceholder:
    """A tensor whose storage data is not known yet when unpickled."""

    def __init__(
        self,
        storage: _Storage,
        storage_offset: int,
        size: tuple[int, ...],
        stride: tuple[int, ...],
    ) -> None:
        self.storage = storage
        self.storage_offset = storage_offset
        self.size = tuple(size)
        self.stride = tuple(stride)

    def materialise(self) -> NDArray[Any]:
        """Return a contiguous copy of the tensor's elements."""
        data = self.storage.data
        if data is None:
            raise LegacyFormatError(f"storage {self.storage.key} has no data")
        if not self.size:
            return np.array(data[self.storage_offset], dtype=data.dtype)
        itemsize = data.dtype.itemsize
        last = self.storage_offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True))
        if any(n == 0 for n in self.size):
            return np.zeros(self.size, dtype=data.dtype)
        if last >= data.size or self.storage_offset < 0:
            raise LegacyFormatError(f"tensor view exceeds storage {self.storage.key}")
        view = np.lib.stride_tricks.as_strided(
            data[self.storage_offset :],
            shape=self.size,
            strides=tuple(s * itemsize for s in self.stride),
            writeable=False,
        )
        return np.ascontiguousarray(view)


def _rebuild_tensor_v2(
    storage: _Storage,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> _TensorPlaceholder:
    return _TensorPlaceholder(storage, storage_offset, size, stride)


def _rebuild_tensor(
    storage: _Storage, storage_offset: int, size: tuple[int, ...], stride: tuple[int, ...]
) -> _TensorPlaceholder:
    return _TensorPlaceholder(storage, storage_offset, size, stride)


def _rebuild_parameter(data: _TensorPlaceholder, requires_grad: bool, backward_hooks: Any) -> _TensorPlaceholder:
    return data


class _LegacyUnpickler(pickle.Unpickler):
    """Unpickler that maps torch globals to local stand-ins and nothing else."""

    def __init__(self, file: IO[bytes], storages: dict[str, _Storage]) -> None:
        super().__init__(file, encoding="utf-8")
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch._utils" and name == "_rebuild_tensor":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")

    def persistent_load(self, pid: Any) -> _Storage:
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        storage_type, key, _location, size = pid[1], str(pid[2]), pid[3], int(pid[4])
        view_metadata = pid[5] if len(pid) > 5 else None
        if view_metadata is not None:
            raise LegacyFormatError("storage views are not supported")
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unexpected storage type {storage_type!r}")
        storage = self._storages.get(key)
        if storage is None:
            storage = _Storage(key, storage_type.dtype, size)
            self._storages[key] = storage
        return storage


def _replace_placeholders(obj: Any) -> Any:
    if isinstance(obj, _TensorPlaceholder):
        return obj.materialise()
    if isinstance(obj, dict):
        return type(obj)((k, _replace_placeholders(v)) for k, v in obj.items())
    if isinstance(obj, list):
        return [_replace_placeholders(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_replace_placeholders(v) for v in obj)
    return obj


def _restricted_load(handle: IO[bytes]) -> Any:
    return _LegacyUnpickler(handle, {}).load()


def load_legacy(path: str | Path) -> Any:
    """Load any object saved in the legacy format, tensors becoming numpy arrays."""
    with open(path, "rb") as handle:
        try:
            magic = _restricted_load(handle)
        except (pickle.UnpicklingError, EOFError, ValueError, IndexError) as exc:
            raise LegacyFormatError(f"{path}: not a legacy torch file ({exc})") from exc
        if magic != LEGACY_MAGIC_NUMBER:
            raise LegacyFormatError(f"{path}: not a legacy torch file (magic {magic!r})")
        protocol = _restricted_load(handle)
        if protocol != SUPPORTED_PROTOCOL:
            raise LegacyFormatError(f"{path}: unsupported protocol version {protocol!r}")
        sys_info = _restricted_load(handle)
        if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
            raise LegacyFormatError(f"{path}: big-endian files are not supported")

        storages: dict[str, _Storage] = {}
        result = _LegacyUnpickler(handle, storages).load()
        keys = _restricted_load(handle)
        for key in keys:
            storage = storages.get(str(key))
            if storage is None:
                raise LegacyFormatError(f"{path}: data for unknown storage {key!r}")
            (count,) = struct.unpack("<q", handle.read(8))
            nbytes = count * storage.dtype.itemsize
            raw = handle.read(nbytes)
            if len(raw) != nbytes:
                raise LegacyFormatError(f"{path}: truncated storage {key!r}")
            storage.data = np.frombuffer(raw, dtype=storage.dtype)
    return _replace_placeholders(result)


def load_state_dict(path: str | Path) -> dict[str, NDArray[Any]]:
    """Load a legacy ``torch.save(model.state_dict())`` file as ``{name: float array}``."""
    obj = load_legacy(path)
    if not isinstance(obj, dict):
        raise LegacyFormatError(f"{path}: expected a state dict, got {type(obj).__name__}")
    state: dict[str, NDArray[Any]] = {}
    for name, value in obj.items():
        if not isinstance(value, np.ndarray):
            raise LegacyFormatError(f"{path}: entry {name!r} is not a tensor")
        state[str(name)] = value
    return state

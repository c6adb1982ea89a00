"""Read PyTorch's legacy (pre-zip) state-dict files without torch and without trusting them.

The format is a sequence of pickles (magic number, protocol, system info, the object, the
storage keys) followed by each storage's raw bytes. Only the few globals a state dict needs
are allowed; anything else (e.g. `os.system`) is refused before it can run.
"""

from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclass(frozen=True)
class _StorageType:
    name: str


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: type


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *_ignored) -> _TensorRef:
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the names a tensor state dict is made of."""

    def find_class(self, module: str, name: str) -> Any:
        """Allow OrderedDict, the tensor rebuild function and storage types; refuse the rest."""
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from a weights file")

    def persistent_load(self, saved_id: Any) -> _StorageRef:
        """Storages are referenced by id and stored after the pickles."""
        if not (isinstance(saved_id, tuple) and saved_id and saved_id[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {saved_id!r}")
        storage_type, key = saved_id[1], str(saved_id[2])
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unexpected storage type {storage_type!r}")
        return _StorageRef(key, STORAGE_DTYPES[storage_type.name])


def _load_pickle(stream: BinaryIO) -> Any:
    return RestrictedUnpickler(stream).load()


def load_legacy_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Tensor name -> numpy array from a legacy `.pth` state dict, without torch."""
    with open(path, "rb") as stream:
        if _load_pickle(stream) != MAGIC_NUMBER:
            raise ValueError(f"{path} is not a legacy PyTorch file (bad magic number)")
        _load_pickle(stream)  # protocol version
        _load_pickle(stream)  # system info (endianness, type sizes)
        state = _load_pickle(stream)
        keys = _load_pickle(stream)
        if not isinstance(state, dict):
            raise ValueError(f"{path} does not hold a state dict")
        file_size = os.fstat(stream.fileno()).st_size
        raw: dict[str, bytes] = {}
        for key in keys:
            size = int.from_bytes(stream.read(8), "little") * _itemsize_of(state, str(key))
            if size > file_size - stream.tell():  # never allocate what the file cannot hold
                raise ValueError(f"{path} is cut short: storage {key} needs {size} bytes")
            raw[str(key)] = stream.read(size)
    arrays = {}
    for name, ref in state.items():
        if not isinstance(ref, _TensorRef):
            raise ValueError(f"{path}: entry {name!r} is not a tensor")
        if ref.storage.key not in raw:
            raise ValueError(
                f"{path}: tensor {name!r} uses storage {ref.storage.key}, not in the file"
            )
        dtype = np.dtype(ref.storage.dtype)
        flat = np.frombuffer(raw[ref.storage.key], dtype=dtype)
        _check_bounds(path, name, ref, len(flat))
        strides = tuple(s * dtype.itemsize for s in ref.stride)
        # as_strided trusts its arguments: only bounds checked above keep it inside `flat`.
        view = np.lib.stride_tricks.as_strided(flat[ref.offset :], ref.shape, strides)
        arrays[name] = np.array(view)  # own the memory, contiguous
    return arrays


def _check_bounds(path: str | Path, name: str, ref: _TensorRef, storage_size: int) -> None:
    """Refuse a tensor whose shape, strides and offset reach outside its storage: the last
    element it addresses, offset + sum((shape - 1) * stride), must be in the storage."""
    numbers = (ref.offset, *ref.shape, *ref.stride)
    if not all(isinstance(n, int) and n >= 0 for n in numbers) or len(ref.shape) != len(ref.stride):
        raise ValueError(
            f"{path}: tensor {name!r} has an invalid layout (offset {ref.offset}, shape "
            f"{ref.shape}, stride {ref.stride}); the file is damaged or crafted"
        )
    if 0 in ref.shape:
        return  # no element addressed
    last = ref.offset + sum(
        (size - 1) * step for size, step in zip(ref.shape, ref.stride, strict=True)
    )
    if last >= storage_size:
        raise ValueError(
            f"{path}: tensor {name!r} (offset {ref.offset}, shape {ref.shape}, stride "
            f"{ref.stride}) reaches element {last} of a storage of {storage_size}; the file "
            "is damaged or crafted"
        )


def _itemsize_of(state: dict, key: str) -> int:
    for ref in state.values():
        if isinstance(ref, _TensorRef) and ref.storage.key == key:
            return np.dtype(ref.storage.dtype).itemsize
    raise ValueError(f"storage {key} is not used by any tensor")

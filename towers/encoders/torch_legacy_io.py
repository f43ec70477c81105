"""Read a PyTorch checkpoint saved in the legacy (pre-1.6, non-zip) format into numpy, without torch.

Layout: pickled magic number, protocol version and system info; the pickled
state dict, whose tensors point at storages by key (persistent ids); the list
of storage keys; then each storage as an int64 element count followed by its
raw little-endian data.

Every pickle in the file is read by a restricted unpickler from the first
byte: only plain data, the tensor-rebuild function and the storage types are
allowed, so a crafted checkpoint cannot run code; sizes and strides are
checked against the storage before any view is taken.
"""

import collections
import os
import pickle
import struct

import numpy as np

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_MAGIC = 0x1950A86A20F9469CFC6C


class _Storage:
    def __init__(self, dtype):
        self.dtype, self.data = dtype, None


class _TensorRef:
    def __init__(self, storage: _Storage, offset: int, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def array(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise pickle.UnpicklingError("a tensor points at a storage the checkpoint does not hold")
        if self.offset < 0 or any(s < 0 for s in self.size) or any(s < 0 for s in self.stride) or len(self.size) != len(self.stride):
            raise pickle.UnpicklingError(f"invalid tensor layout: offset {self.offset}, size {self.size}, stride {self.stride}")
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride)) if all(self.size) else self.offset - 1
        if last >= len(data):
            raise pickle.UnpicklingError(f"tensor of size {self.size} reads past its storage of {len(data)} elements")
        itemsize = data.itemsize
        view = np.lib.stride_tricks.as_strided(
            self.storage.data[self.offset :], shape=self.size, strides=[s * itemsize for s in self.stride]
        )
        return np.array(view)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    return _TensorRef(storage, storage_offset, size, stride)


class _PlainUnpickler(pickle.Unpickler):
    """Plain data only (numbers, strings, lists, dicts): any class or persistent reference is refused."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in checkpoint")

    def persistent_load(self, saved_id):
        raise pickle.UnpicklingError("unexpected persistent id in checkpoint header")


class _Unpickler(pickle.Unpickler):
    def __init__(self, f):
        super().__init__(f)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in checkpoint")

    def persistent_load(self, saved_id):
        if not isinstance(saved_id, tuple) or len(saved_id) < 5:
            raise pickle.UnpicklingError(f"unexpected persistent id {saved_id!r}")
        kind, dtype, key, _location, _numel, *_ = saved_id
        if kind != "storage" or dtype not in _STORAGE_DTYPES.values():
            raise pickle.UnpicklingError(f"unexpected persistent id {kind!r}")
        return self.storages.setdefault(key, _Storage(dtype))


def load(path: str) -> dict[str, np.ndarray]:
    """name -> numpy array for every tensor of a legacy-format state dict."""
    with open(path, "rb") as f:
        try:
            magic = _PlainUnpickler(f).load()
        except Exception as error:
            raise ValueError(f"{path} is not a legacy-format PyTorch checkpoint ({error})") from None
        if magic != _MAGIC:
            raise ValueError(f"{path} is not a legacy-format PyTorch checkpoint")
        _PlainUnpickler(f).load()  # protocol version
        _PlainUnpickler(f).load()  # system info
        unpickler = _Unpickler(f)
        state = unpickler.load()
        if not isinstance(state, dict) or not all(isinstance(ref, _TensorRef) for ref in state.values()):
            raise pickle.UnpicklingError(f"{path}: the checkpoint is not a state dict of tensors")
        keys = _PlainUnpickler(f).load()
        if not isinstance(keys, list):
            raise pickle.UnpicklingError(f"{path}: invalid storage key list")
        for key in keys:
            if key not in unpickler.storages:
                raise pickle.UnpicklingError(f"{path}: storage {key!r} is not referenced by any tensor")
            storage = unpickler.storages[key]
            (count,) = struct.unpack("<q", f.read(8))
            itemsize = np.dtype(storage.dtype).itemsize
            left = os.fstat(f.fileno()).st_size - f.tell()
            raw = f.read(count * itemsize) if 0 <= count * itemsize <= left else b""
            if len(raw) != count * itemsize:
                raise pickle.UnpicklingError(f"{path}: storage {key!r} declares {count} elements, the file holds {len(raw) // itemsize}")
            storage.data = np.frombuffer(raw, dtype=storage.dtype)
    return {name: ref.array() for name, ref in state.items()}

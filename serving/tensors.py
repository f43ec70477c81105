"""numpy <-> TensorProto for the gRPC API, on the fast paths (tf.make_ndarray / make_tensor_proto cost
more than a small model call); anything unusual falls back to TensorFlow's converters."""

from __future__ import annotations

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

_NUMPY = {
    types_pb2.DT_FLOAT: np.float32,
    types_pb2.DT_DOUBLE: np.float64,
    types_pb2.DT_INT32: np.int32,
    types_pb2.DT_INT64: np.int64,
    types_pb2.DT_BOOL: np.bool_,
}
_DTYPE = {np.dtype(v): k for k, v in _NUMPY.items()}


def _shape(proto) -> tuple[int, ...]:
    return tuple(d.size for d in proto.tensor_shape.dim)


def to_array(proto: tensor_pb2.TensorProto, max_elements: int | None = None) -> np.ndarray:
    """TensorProto -> numpy (strings: an object array of bytes). Raises ValueError/TypeError on a malformed proto,
    or before allocating anything when its declared shape holds more than `max_elements` values."""
    shape = _shape(proto)
    if any(d < 0 for d in shape) or proto.tensor_shape.unknown_rank:
        raise ValueError("a request tensor needs a fully known shape")
    size = 1
    for d in shape:  # Python ints: a product of huge declared dimensions cannot overflow
        size *= d
    if max_elements is not None and size > max_elements:
        raise TensorTooLarge(f"its shape {list(shape)} declares {size:,} values, over the limit of {max_elements:,}")
    if proto.dtype == types_pb2.DT_STRING:
        values = list(proto.string_val)
        if len(values) == size:
            return np.array(values, dtype=object).reshape(shape)
        if len(values) == 1:  # TensorFlow's broadcast of a single value
            return np.full(shape, values[0], dtype=object)
        raise ValueError(f"{len(values)} strings for shape {list(shape)}")
    dtype = _NUMPY.get(proto.dtype)
    if dtype is not None and proto.tensor_content:
        content = proto.tensor_content
        if len(content) != size * np.dtype(dtype).itemsize:
            raise ValueError(f"tensor_content of {len(content)} bytes does not fit shape {list(shape)} of {np.dtype(dtype).name}")
        return np.frombuffer(content, dtype=dtype).reshape(shape).copy()
    import tensorflow as tf

    return tf.make_ndarray(proto)


class TensorTooLarge(ValueError):
    """A request tensor declares more values than the server's limit."""


def to_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    """numpy -> TensorProto (object/bytes arrays: DT_STRING)."""
    array = np.asarray(array)
    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in array.shape])
    if array.dtype == object or array.dtype.kind == "S":
        values = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in array.reshape(-1)]
        return tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=shape, string_val=values)
    dtype = _DTYPE.get(array.dtype)
    if dtype is not None:
        return tensor_pb2.TensorProto(dtype=dtype, tensor_shape=shape, tensor_content=np.ascontiguousarray(array).tobytes())
    import tensorflow as tf

    return tf.make_tensor_proto(array)

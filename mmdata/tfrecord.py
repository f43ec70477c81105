"""Reads gzip TFRecord files of tf.train.Example without importing TensorFlow.

Importing TensorFlow costs seconds; commands that only read a few records
(`mmtower recommend`, which looks a user up and asks a running server) should
not pay it. The framing is TFRecord's (length, masked CRC of the length,
data, masked CRC of the data); the Example message is parsed by protobuf's
own runtime from a descriptor that declares tf.train.Example's fields
(tensorflow/core/example/{example,feature}.proto) in a private descriptor
pool, so the parsed messages read like tf.train.Example
(`features.feature[name].WhichOneof("kind")`, `.bytes_list.value`, ...) and
never collide with TensorFlow's own classes.
"""

from __future__ import annotations

import functools
import gzip
import struct
from collections.abc import Iterator

_HEADER = struct.Struct("<QI")  # length, masked crc32c of the length
_FOOTER = 4  # masked crc32c of the data


@functools.cache
def example_class():
    """A protobuf message class with tf.train.Example's wire format."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="mmtower/tf_example.proto", package="mmtower.tf_example", syntax="proto3")

    def message(name: str):
        return proto.message_type.add(name=name)

    def add_field(m, name, number, kind, label=F.LABEL_OPTIONAL, type_name=None, oneof=None):
        f = m.field.add(name=name, number=number, type=kind, label=label)
        if type_name:
            f.type_name = f".mmtower.tf_example.{type_name}"
        if oneof is not None:
            f.oneof_index = oneof

    for name, kind in (("BytesList", F.TYPE_BYTES), ("FloatList", F.TYPE_FLOAT), ("Int64List", F.TYPE_INT64)):
        add_field(message(name), "value", 1, kind, F.LABEL_REPEATED)
    feature = message("Feature")
    feature.oneof_decl.add(name="kind")
    for number, (name, type_name) in enumerate((("bytes_list", "BytesList"), ("float_list", "FloatList"), ("int64_list", "Int64List")), 1):
        add_field(feature, name, number, F.TYPE_MESSAGE, type_name=type_name, oneof=0)
    features = message("Features")
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    add_field(entry, "key", 1, F.TYPE_STRING)
    add_field(entry, "value", 2, F.TYPE_MESSAGE, type_name="Feature")
    add_field(features, "feature", 1, F.TYPE_MESSAGE, F.LABEL_REPEATED, type_name="Features.FeatureEntry")
    add_field(message("Example"), "features", 1, F.TYPE_MESSAGE, type_name="Features")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("mmtower.tf_example.Example"))


def iter_records(path: str) -> Iterator[bytes]:
    """The records of a gzip TFRecord file; ValueError naming the file when it ends inside a record."""
    with gzip.open(path, "rb") as f:
        while True:
            header = f.read(_HEADER.size)
            if not header:
                return
            if len(header) < _HEADER.size:
                raise ValueError(f"{path}: truncated TFRecord header")
            (length, _) = _HEADER.unpack(header)
            data = f.read(length)
            if len(data) < length or len(f.read(_FOOTER)) < _FOOTER:
                raise ValueError(f"{path}: truncated TFRecord ({len(data)} of {length} bytes)")
            yield data


def read_examples(path: str) -> Iterator:
    """The tf.train.Example-like messages of a gzip TFRecord file."""
    example = example_class()
    for data in iter_records(path):
        yield example.FromString(data)

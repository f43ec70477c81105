"""mmdata.tfrecord reads what TensorFlow writes, the same as tf.train.Example, without importing TensorFlow."""

from __future__ import annotations

import gzip

import pytest
import tensorflow as tf

from mmdata import tfrecord

pytestmark = pytest.mark.unit


def _examples() -> list[tf.train.Example]:
    def feature(**kind):
        return tf.train.Feature(**kind)

    return [
        tf.train.Example(
            features=tf.train.Features(
                feature={
                    "user_id": feature(bytes_list=tf.train.BytesList(value=[b"u1"])),
                    "history": feature(bytes_list=tf.train.BytesList(value=[b"a", b"\xff\x00", b""])),
                    "age": feature(float_list=tf.train.FloatList(value=[31.5, -2.0])),
                    "timestamp": feature(int64_list=tf.train.Int64List(value=[893286638, -1, 2**62])),
                    "empty": feature(int64_list=tf.train.Int64List(value=[])),
                }
            )
        ),
        tf.train.Example(),  # no features at all
    ]


def test_records_read_back_as_tensorflow_parses_them(tmp_path):
    path = str(tmp_path / "rows.tfrecord.gz")
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for example in _examples():
            writer.write(example.SerializeToString())
    ours = list(tfrecord.read_examples(path))
    assert len(ours) == 2
    for theirs, mine in zip(_examples(), ours):
        assert mine.SerializeToString(deterministic=True) == theirs.SerializeToString(deterministic=True)
    first = ours[0].features.feature
    assert first["timestamp"].WhichOneof("kind") == "int64_list" and list(first["timestamp"].int64_list.value) == [893286638, -1, 2**62]
    assert list(first["history"].bytes_list.value) == [b"a", b"\xff\x00", b""]
    assert list(first["age"].float_list.value) == [31.5, -2.0]


def test_a_truncated_file_names_itself(tmp_path):
    path = str(tmp_path / "rows.tfrecord.gz")
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        writer.write(_examples()[0].SerializeToString())
    with gzip.open(path) as f:
        data = f.read()
    with gzip.open(path, "wb") as f:
        f.write(data[:-10])
    with pytest.raises(ValueError, match="rows.tfrecord.gz: truncated TFRecord"):
        list(tfrecord.read_examples(path))

"""Trainer helpers that read artifacts: item embeddings and their alignment with the item vocabulary."""
import os

import numpy as np
import pytest
import tensorflow as tf

from components import trainer
from components.content_embedder.executor import to_example
from towers import features as F

pytestmark = pytest.mark.unit


def test_item_embeddings_round_trip_and_align(tmp_path):
    os.makedirs(tmp_path / "Split-items")
    with tf.io.TFRecordWriter(str(tmp_path / "Split-items" / "part.gz"), options="GZIP") as writer:
        writer.write(to_example("a", {"text": np.array([1.0, 2.0, 3.0])}))
        writer.write(to_example("b", {"audio": np.array([5.0, 6.0])}))  # text could not be encoded
    content = trainer.read_item_embeddings(str(tmp_path))
    assert sorted(content) == ["audio", "text"]  # no item has an image: the modality is absent
    assert sorted(content["text"]) == ["a"] and trainer.content_dims(content) == {"text": 3, "audio": 2}
    features = trainer.content_features(["b", "a", ""], content)
    np.testing.assert_array_equal(features[F.TEXT_EMBEDDING], [[0, 0, 0], [1, 2, 3], [0, 0, 0]])  # missing -> zeros
    np.testing.assert_array_equal(features[F.AUDIO_EMBEDDING], [[5, 6], [0, 0], [0, 0]])

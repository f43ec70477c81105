"""Trainer helpers that read artifacts: item embeddings and their alignment with the item vocabulary."""
import os

import numpy as np
import pytest
import tensorflow as tf

from components import trainer
from components.content_embedder.executor import to_example

pytestmark = pytest.mark.unit


def test_item_embeddings_round_trip_and_align(tmp_path):
    os.makedirs(tmp_path / "Split-items")
    with tf.io.TFRecordWriter(str(tmp_path / "Split-items" / "part.gz"), options="GZIP") as writer:
        writer.write(to_example("a", {"text": np.array([1.0, 2.0, 3.0])}))
        writer.write(to_example("b", {}))  # text could not be encoded
    embeddings = trainer.read_item_embeddings(str(tmp_path))
    assert sorted(embeddings) == ["a"]
    rows = trainer.embedding_rows(["b", "a", ""], embeddings, dim=3)
    np.testing.assert_array_equal(rows, [[0, 0, 0], [1, 2, 3], [0, 0, 0]])  # missing -> zeros = no text

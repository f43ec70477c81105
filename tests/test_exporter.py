"""Pieces of the serving module that need no trained model: exclusions, growable tables, the ScaNN index."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from towers import exporter, scann_index


def test_is_excluded_matches_each_row_against_its_own_pairs():
    positions = tf.constant([[5, 1, 7], [1, 2, 3], [9, 9, 0]], tf.int64)
    exclude = tf.constant([[0, 7], [2, 0], [0, 5], [1, 9], [2, 9]], tf.int64)  # unsorted (row, position) pairs
    got = exporter._is_excluded(positions, exclude, tf.constant(10, tf.int64)).numpy()
    assert got.tolist() == [[True, False, True], [False, False, False], [True, True, True]]
    nothing = exporter._is_excluded(positions, tf.zeros([0, 2], tf.int64), tf.constant(10, tf.int64)).numpy()
    assert not nothing.any()


def test_growable_variables_take_more_rows_after_save_and_load(tmp_path):
    module = tf.Module()
    module.table = exporter._growable(np.zeros([3, 2], np.float32), "table")
    module.grow = tf.function(
        lambda rows: module.table.assign(tf.concat([module.table, rows], 0)), input_signature=[tf.TensorSpec([None, 2], tf.float32)]
    )
    tf.saved_model.save(module, str(tmp_path / "v1"))
    loaded = tf.saved_model.load(str(tmp_path / "v1"))
    loaded.grow(tf.ones([2, 2]))
    tf.saved_model.save(loaded, str(tmp_path / "v2"))
    grown = tf.saved_model.load(str(tmp_path / "v2"))
    assert grown.table.numpy().shape == (5, 2)


class _Indexed(tf.Module):
    def __init__(self, embeddings):
        super().__init__()
        self.index = scann_index.ScannIndex(scann_index.build_searcher(embeddings, 10))

    @tf.function(input_signature=[tf.TensorSpec([None, 16], tf.float32)])
    def search(self, queries):
        return self.index.search(queries, 10)


def test_scann_index_finds_the_exact_neighbours_and_can_be_rebuilt_in_a_loaded_model(tmp_path):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(60, 16))  # clustered, as learned item embeddings are
    embeddings = (centers[rng.integers(60, size=3000)] + 0.3 * rng.normal(size=(3000, 16))).astype(np.float32)
    queries = centers[rng.integers(60, size=50)] + 0.3 * rng.normal(size=(50, 16))
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    exact = np.argsort(-(queries @ embeddings.T), axis=1)[:, :10]
    module = _Indexed(embeddings)
    tf.saved_model.save(module, str(tmp_path / "v1"), options=scann_index.SAVE_OPTIONS)
    loaded = tf.saved_model.load(str(tmp_path / "v1"))
    found = loaded.search(tf.constant(queries))[0].numpy()
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, found)])
    assert recall >= 0.9, recall
    more = np.concatenate([embeddings, queries * 10])  # each query's best match is now its own scaled copy
    scann_index.replace(loaded.index, scann_index.build_searcher(more, 10))
    tf.saved_model.save(loaded, str(tmp_path / "v2"), options=scann_index.SAVE_OPTIONS)
    rebuilt = tf.saved_model.load(str(tmp_path / "v2"))
    found = rebuilt.search(tf.constant(queries))[0].numpy()
    assert found[:, 0].tolist() == list(range(3000, 3050))


def test_unknown_index_is_refused():
    with pytest.raises(ValueError, match="index must be one of"):
        exporter.ServingModule(None, None, None, None, {}, None, [], [], 10, 10, 4.0, {}, index="faiss")

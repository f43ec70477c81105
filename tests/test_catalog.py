"""The serving catalog (towers.catalog) and its variable helpers (towers.tables), on 3-4 items."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.tiny_serving import catalog_tables
from towers import features as F
from towers.catalog import UNKNOWN, Catalog
from towers.contract import EMBEDDINGS_OUTPUT, ITEM_IDS_INPUT
from towers.tables import growable, string_list, utf8

pytestmark = pytest.mark.unit

EMBEDDINGS = [[0.1, 0.9], [0.9, 0.1], [0.5, 0.5]]


def test_utf8_encodes_non_ascii_ids_and_keeps_bytes():
    assert utf8(["Amélie", b"x", 3]).tolist() == ["Amélie".encode(), b"x", b"3"]


def test_string_list_may_be_empty():
    assert string_list((), "empty").numpy().tolist() == []
    assert string_list({"text": 4, "image": 8}, "modalities").numpy().tolist() == [b"text", b"image"]


def test_growable_variables_take_more_rows_after_save_and_load(tmp_path):
    module = tf.Module()
    module.table = growable(np.zeros([3, 2], np.float32), "table")
    module.grow = tf.function(
        lambda rows: module.table.assign(tf.concat([module.table, rows], 0)), input_signature=[tf.TensorSpec([None, 2], tf.float32)]
    )
    tf.saved_model.save(module, str(tmp_path / "v1"))
    loaded = tf.saved_model.load(str(tmp_path / "v1"))
    loaded.grow(tf.ones([2, 2]))
    tf.saved_model.save(loaded, str(tmp_path / "v2"))
    grown = tf.saved_model.load(str(tmp_path / "v2"))
    assert grown.table.numpy().shape == (5, 2)


def test_lookup_keeps_the_shape_and_gives_minus_one_for_unknown_ids():
    catalog = Catalog(catalog_tables(EMBEDDINGS))
    assert catalog.lookup(tf.constant([["i2", "nope"], ["i0", "i1"]])).numpy().tolist() == [[2, -1], [0, 1]]
    assert catalog.ids_at(tf.constant([[2, 0]], tf.int64)).numpy().tolist() == [[b"i2", b"i0"]]
    assert int(catalog.size()) == 3


def test_new_items_are_those_with_the_oov_index():
    catalog = Catalog(catalog_tables(EMBEDDINGS, new={1}))  # OOV index 3
    assert catalog.new_items().numpy().tolist() == [False, True, False]
    assert catalog.is_new(tf.constant([[1, 1, 0]], tf.int64)).numpy().tolist() == [[True, True, False]]


def test_ranker_inputs_gather_item_index_embedding_and_content_profile():
    profile = np.array([[1.0], [2.0], [3.0]], np.float32)
    inputs = Catalog(catalog_tables(EMBEDDINGS, new={0}, content_profile=profile)).ranker_inputs(tf.constant([2, 0], tf.int64))
    assert inputs[F.ITEM_INDEX].numpy().tolist() == [2, 3]
    np.testing.assert_allclose(inputs[F.CANDIDATE_EMBEDDING].numpy(), [[0.5, 0.5], [0.1, 0.9]])
    np.testing.assert_allclose(inputs[F.CONTENT_PROJECTION].numpy(), [[3.0], [1.0]])
    assert F.CONTENT_PROJECTION not in Catalog(catalog_tables(EMBEDDINGS)).ranker_inputs(tf.constant([0], tf.int64))


def test_slices_of_an_item_not_in_the_catalog_are_unknown():
    slices = Catalog(catalog_tables(EMBEDDINGS, new={2})).slices_at(tf.constant([2, -1, 0], tf.int64))
    assert slices[F.ITEM_POPULARITY].numpy().tolist() == [b"none", UNKNOWN.encode(), b"head"]


def test_appended_items_get_the_next_positions_and_the_oov_index():
    profile = np.zeros([3, 1], np.float32)
    catalog = Catalog(catalog_tables(EMBEDDINGS, content_profile=profile))
    spec = catalog.added_items_spec()
    assert set(spec) == {ITEM_IDS_INPUT, EMBEDDINGS_OUTPUT, F.CONTENT_PROFILE, F.ITEM_POPULARITY}
    assert spec[EMBEDDINGS_OUTPUT].shape.as_list() == [None, 2] and spec[F.CONTENT_PROFILE].shape.as_list() == [None, 1]
    size = catalog.append(
        {
            ITEM_IDS_INPUT: tf.constant(["a", "b"]),
            EMBEDDINGS_OUTPUT: tf.constant([[1.0, 0.0], [0.0, 1.0]]),
            F.CONTENT_PROFILE: tf.constant([[7.0], [8.0]]),
            F.ITEM_POPULARITY: tf.constant(["none", "none"]),
        }
    )
    assert int(size) == 5
    assert catalog.lookup(tf.constant(["b", "a", "i2"])).numpy().tolist() == [4, 3, 2]
    assert catalog.item_index.numpy().tolist() == [0, 1, 2, 3, 3]  # 3: the OOV index
    assert catalog.new_items().numpy().tolist() == [False, False, False, True, True]
    np.testing.assert_allclose(catalog.embeddings.numpy()[3:], [[1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(catalog.content_projection.numpy()[:, 0], [0, 0, 0, 7, 8])
    assert catalog.slices[F.ITEM_POPULARITY].numpy().tolist() == [b"head"] * 3 + [b"none"] * 2


def test_without_content_the_added_items_carry_no_profile():
    catalog = Catalog(catalog_tables(EMBEDDINGS))
    assert catalog.content_projection is None and catalog.profile_dim == 0
    assert F.CONTENT_PROFILE not in catalog.added_items_spec()


def test_a_bfloat16_catalog_stores_half_the_bytes_and_scores_as_float32_within_its_precision(tmp_path):
    from towers.catalog import BFLOAT16, scores
    from towers.retrieval import brute_force

    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=[200, 16]).astype(np.float32)
    full, half = Catalog(catalog_tables(embeddings)), Catalog(catalog_tables(embeddings), BFLOAT16)
    assert half.embeddings.dtype == tf.bfloat16 and half.embeddings.numpy().nbytes * 2 == full.embeddings.numpy().nbytes
    rows = half.embeddings_at(tf.constant([3, 7], tf.int64))
    assert rows.dtype == tf.float32
    np.testing.assert_allclose(rows.numpy(), embeddings[[3, 7]], rtol=1 / 128)  # bfloat16 keeps 8 bits of mantissa
    queries = tf.constant(rng.normal(size=[4, 16]).astype(np.float32))
    exact, approximate = scores(queries, full.embeddings), scores(queries, half.embeddings)
    assert approximate.dtype == tf.float32
    np.testing.assert_allclose(approximate.numpy(), exact.numpy(), atol=0.1 + 0.02 * np.abs(exact.numpy()).max())
    no_exclusions = tf.zeros([0, 2], tf.int64)
    top_full = brute_force(queries, full.embeddings.value(), no_exclusions, 10)[1].numpy()
    top_half = brute_force(queries, half.embeddings.value(), no_exclusions, 10)[1].numpy()
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top_full, top_half)]) >= 0.8
    half.append(
        {ITEM_IDS_INPUT: tf.constant(["x"]), EMBEDDINGS_OUTPUT: tf.constant([[1.0] * 16]), F.ITEM_POPULARITY: tf.constant(["none"])}
    )
    assert half.embeddings.dtype == tf.bfloat16 and half.embeddings.numpy().shape == (201, 16)
    tf.saved_model.save(half, str(tmp_path / "catalog"))  # a bfloat16 variable saves and loads like any other
    assert tf.saved_model.load(str(tmp_path / "catalog")).embeddings.dtype == tf.bfloat16
    with pytest.raises(ValueError, match="catalog precision must be one of"):
        Catalog(catalog_tables(embeddings), "int4")

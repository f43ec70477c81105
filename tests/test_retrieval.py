"""Top-k over the catalog (towers.retrieval): brute force, new-item candidates, ScaNN + added rows, on 4-6 items."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.tiny_serving import catalog_tables
from towers import features as F
from towers.catalog import Catalog
from towers.contract import EMBEDDINGS_OUTPUT, ITEM_IDS_INPUT
from towers.hparams import BRUTE_FORCE, SCANN
from towers.retrieval import EXCLUSION_SLACK, Retriever, brute_force

pytestmark = pytest.mark.unit

MIN = np.finfo(np.float32).min
# Scores for query [1, 0]: 0.1, 0.9, 0.5, 0.7; for query [0, 1]: 0.9, 0.1, 0.5, -1.0.
EMBEDDINGS = np.array([[0.1, 0.9], [0.9, 0.1], [0.5, 0.5], [0.7, -1.0]], np.float32)
QUERIES = tf.constant([[1.0, 0.0], [0.0, 1.0]])
NO_PAIRS = tf.zeros([0, 2], tf.int64)


def test_brute_force_returns_the_best_scores_first():
    scores, positions = brute_force(QUERIES, tf.constant(EMBEDDINGS), NO_PAIRS, 3)
    assert positions.numpy().tolist() == [[1, 3, 2], [0, 2, 1]]
    np.testing.assert_allclose(scores.numpy(), [[0.9, 0.7, 0.5], [0.9, 0.5, 0.1]])
    assert positions.dtype == tf.int64


def test_brute_force_skips_excluded_items_and_puts_them_last_when_too_few_remain():
    exclude = tf.constant([[0, 1], [1, 0], [1, 2], [1, 1]], tf.int64)
    scores, positions = brute_force(QUERIES, tf.constant(EMBEDDINGS), exclude, 2)
    assert positions.numpy().tolist()[0] == [3, 2]
    assert positions.numpy().tolist()[1][0] == 3 and scores.numpy()[1].tolist() == [-1.0, MIN]  # one item left for row 1


def test_new_items_follow_the_top_k_and_a_repeated_one_scores_the_minimum():
    is_new = tf.constant([False, False, True, True])
    scores, positions = brute_force(QUERIES, tf.constant(EMBEDDINGS), NO_PAIRS, 2, new_items=2, is_new=is_new)
    # row 0: top 2 = 1 (0.9), 3 (0.7); new: 3 (0.7, already there), 2 (0.5)
    # row 1: top 2 = 0 (0.9), 2 (0.5); new: 2 (0.5, already there), 3 (-1.0)
    assert positions.numpy().tolist() == [[1, 3, 3, 2], [0, 2, 2, 3]]
    np.testing.assert_allclose(scores.numpy(), [[0.9, 0.7, MIN, 0.5], [0.9, 0.5, MIN, -1.0]])


def test_retriever_brute_force_searches_the_catalog_and_its_new_items():
    catalog = Catalog(catalog_tables(EMBEDDINGS, new={0}))
    retriever = Retriever(catalog, BRUTE_FORCE, searcher_k=3)
    assert retriever.scann_index is None and int(retriever.indexed_items) == 0 and retriever.index_type.numpy() == b"brute_force"
    scores, positions = retriever.top_k(QUERIES, tf.constant([[0, 3]], tf.int64), 2, new_items=1)
    assert positions.numpy().tolist() == [[1, 2, 0], [0, 2, 0]]  # item 0 is the only new one
    np.testing.assert_allclose(scores.numpy(), [[0.9, 0.5, 0.1], [0.9, 0.5, MIN]])


def test_unknown_index_is_refused():
    with pytest.raises(ValueError, match="index must be one of"):
        Retriever(Catalog(catalog_tables(EMBEDDINGS)), "faiss", searcher_k=3)


@pytest.fixture
def scann_catalog():
    pytest.importorskip("scann")
    embeddings = np.concatenate([np.pad(EMBEDDINGS, [[0, 0], [0, 2]]), [[0.2, 0.2, 0.3, 0.1], [0.3, 0.0, 0.0, 1.0]]])
    return Catalog(catalog_tables(embeddings.astype(np.float32)))


QUERIES_4 = tf.constant([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])


def test_scann_finds_the_exact_top_k_of_a_tiny_catalog_and_leaves_out_excluded_items(scann_catalog):
    retriever = Retriever(scann_catalog, SCANN, searcher_k=3, most_excluded=2)
    assert int(retriever.indexed_items) == 6 and retriever.exclusion_margin == 2 + EXCLUSION_SLACK
    _, positions = retriever.top_k(QUERIES_4, NO_PAIRS, 3)
    assert positions.numpy().tolist() == [[1, 3, 2], [0, 2, 4]]
    _, positions = retriever.top_k(QUERIES_4, tf.constant([[0, 3], [1, 0]], tf.int64), 3)
    assert positions.numpy().tolist() == [[1, 2, 5], [2, 4, 1]]


def test_rows_added_after_the_index_was_built_are_scored_by_brute_force(scann_catalog):
    retriever = Retriever(scann_catalog, SCANN, searcher_k=3)
    scann_catalog.append(
        {
            ITEM_IDS_INPUT: tf.constant(["a"]),
            EMBEDDINGS_OUTPUT: tf.constant([[2.0, 0.0, 0.0, 0.0]]),
            F.ITEM_POPULARITY: tf.constant(["none"]),
        }
    )
    scores, positions = retriever.top_k(QUERIES_4, NO_PAIRS, 2)
    assert positions.numpy().tolist() == [[6, 1], [0, 2]]
    np.testing.assert_allclose(scores.numpy(), [[2.0, 0.9], [0.9, 0.5]], rtol=1e-5)
    retriever.indexed_items.assign(0)  # the index off: every row scored exactly
    _, exact = retriever.top_k(QUERIES_4, NO_PAIRS, 2)
    assert exact.numpy().tolist() == [[6, 1], [0, 2]]

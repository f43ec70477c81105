"""recommend's fan-out (towers.fanout) and the served item graph (towers.graph_scores), with a fixed ranker.

Four items; item 3 is new (the OOV index 4). The ranker's engagement logit is
a bias per item index: i0 1.0, i1 1.5, i2 0.5, new items 0.0; its predicted
rating is the item index. Graph edges (kind 0, kind 1 columns):
i0 -> i1 (kind 0, weight 1); i2 -> i0 (kind 0, 0.5), i1 (kind 1, 2.0); i3 -> i0 (kind 1, 4.0).
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.tiny_serving import ToyRanker, catalog_tables
from towers import features as F
from towers.catalog import Catalog
from towers.contract import ITEM_IDS_OUTPUT, PREDICTED_RATINGS_OUTPUT, RETRIEVAL_SCORES_OUTPUT, SCORES_OUTPUT
from towers.fanout import GRAPH_HISTORY, RANKED_OUTPUTS, RankingFanout
from towers.graph_scores import GraphTables
from towers.ranking import ENGAGEMENT_LOGIT, ENGAGEMENT_OUTPUT, RATING_OUTPUT

pytestmark = pytest.mark.unit

MIN = np.finfo(np.float32).min
NEIGHBOURS = np.array([[1, -1], [-1, -1], [0, 1], [-1, 0]], np.int64)
WEIGHTS = np.array([[1.0, 0.0], [0.0, 0.0], [0.5, 2.0], [0.0, 4.0]], np.float32)
KINDS = np.array([0, 1])
TRANSFORMED = {F.USER_INDEX: tf.constant([0], tf.int64), F.TIME_CONTEXT: tf.zeros([1, F.TIME_CONTEXT_DIM])}
QUERIES = tf.constant([[1.0, 0.0]])
CANDIDATES = tf.constant([[0, 1, 2, 3]], tf.int64)
HISTORY = tf.sparse.from_dense(tf.constant([["i0", "i1"]]))  # oldest first


def _fanout(ranking_candidates: int = 4) -> RankingFanout:
    tables = catalog_tables(np.eye(4, 2), new={3}, graph=(NEIGHBOURS, WEIGHTS, KINDS))
    catalog = Catalog(tables)
    graph = GraphTables(4, tables.graph_neighbours, tables.graph_weights, tables.graph_kinds)
    return RankingFanout(ToyRanker(np.array([1.0, 1.5, 0.5, 9.0, 0.0])), catalog, graph, ranking_candidates)


def test_blend_weights_start_neutral():
    fanout = _fanout()
    assert fanout.graph_mix.numpy().tolist() == [0.0, 0.0] and fanout.graph.num_kinds == 2
    assert int(fanout.graph_history.numpy()) == GRAPH_HISTORY and float(fanout.new_item_boost.numpy()) == 0.0


def test_rank_gives_zero_to_items_not_in_the_catalog():
    ranked = _fanout().rank(TRANSFORMED, QUERIES, tf.constant([[2, -1, 3]], tf.int64))
    assert tuple(ranked) == RANKED_OUTPUTS
    np.testing.assert_allclose(ranked[ENGAGEMENT_LOGIT].numpy(), [[0.5, 0.0, 0.0]])
    np.testing.assert_allclose(ranked[ENGAGEMENT_OUTPUT].numpy(), [[1 / (1 + np.exp(-0.5)), 0.0, 0.5]])
    np.testing.assert_allclose(ranked[RATING_OUTPUT].numpy(), [[2.0, 0.0, 4.0]])  # the new item has the OOV index 4


def test_graph_scores_count_the_edges_to_the_last_history_items_per_kind():
    parts = _fanout().parts(TRANSFORMED, QUERIES, (tf.constant([[0.9, 0.8, 0.7, 0.6]]), CANDIDATES), HISTORY, [2, 1])
    both, latest = (graph.numpy()[0] for graph in parts["graph"])
    # last 2 items (i0, i1): kind 0 = 1.0, 0, 0.5, 0 (max 1.0); kind 1 = 0, 0, 2.0, 4.0 (max 4.0)
    np.testing.assert_allclose(both, [[1.0, 0.0], [0.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    # last item (i1) only: i0's kind-0 edge and i2's kind-1 edge
    np.testing.assert_allclose(latest, [[1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    assert parts["is_new"].numpy().tolist() == [[False, False, False, True]]


def _recommend(fanout: RankingFanout, retrieval_scores, k: int = 4) -> dict:
    parts = fanout.parts(TRANSFORMED, QUERIES, (tf.constant([retrieval_scores]), CANDIDATES), HISTORY, [2])
    return {name: value.numpy()[0].tolist() for name, value in fanout.top(parts, k).items()}


def test_the_ranker_alone_orders_the_candidates_by_its_logit():
    out = _recommend(_fanout(), [0.9, 0.8, 0.7, 0.6])
    assert out[ITEM_IDS_OUTPUT] == [b"i1", b"i0", b"i2", b"i3"]  # logits 1.5, 1.0, 0.5, 0.0
    np.testing.assert_allclose(out[SCORES_OUTPUT], 1 / (1 + np.exp(-np.array([1.5, 1.0, 0.5, 0.0]))), rtol=1e-6)
    assert out[PREDICTED_RATINGS_OUTPUT] == [1.0, 0.0, 2.0, 4.0]
    np.testing.assert_allclose(out[RETRIEVAL_SCORES_OUTPUT], [0.8, 0.9, 0.7, 0.6])


def test_graph_mix_and_new_item_boost_reorder_the_candidates():
    fanout = _fanout()
    fanout.graph_mix.assign([1.0, 3.0])
    fanout.new_item_boost.assign(0.25)
    # i0: 1.0 + 1.0 = 2.0; i1: 1.5; i2: 0.5 + 0.5 + 3 x 0.5 = 2.5; i3: 0.0 + 3 x 1.0 + 0.25 = 3.25
    out = _recommend(fanout, [0.9, 0.8, 0.7, 0.6], k=3)
    assert out[ITEM_IDS_OUTPUT] == [b"i3", b"i2", b"i0"]
    np.testing.assert_allclose(out[SCORES_OUTPUT], 1 / (1 + np.exp(-np.array([3.25, 2.5, 2.0]))), rtol=1e-6)


def test_excluded_candidates_come_last_whatever_their_logit():
    fanout = _fanout()
    fanout.graph_mix.assign([1.0, 3.0])
    out = _recommend(fanout, [0.9, 0.8, 0.7, MIN])  # i3 was excluded (fewer candidates than asked remained)
    assert out[ITEM_IDS_OUTPUT] == [b"i2", b"i0", b"i1", b"i3"]
    assert out[SCORES_OUTPUT][-1] == 0.0


def test_recommend_lists_are_at_most_ranking_candidates_long():
    assert len(_recommend(_fanout(ranking_candidates=2), [0.9, 0.8, 0.7, 0.6], k=10)[ITEM_IDS_OUTPUT]) == 2


def test_items_added_after_the_graph_have_no_edges_and_no_row():
    """Candidates at positions past the graph's rows (items appended to the catalog later) score 0 on every kind,
    exactly as rows of no edges would, without the tables growing."""
    graph = GraphTables(2, np.array([[1], [0]]), np.array([[1.0], [2.0]], np.float32), np.array([0]))
    assert graph.neighbours.dtype == tf.int32
    recent = tf.constant([[0, 1]], tf.int64)
    scores = graph.scores(recent, tf.constant([[0, 1, 2, 3]], tf.int64), 2).numpy()
    assert scores[0, :, 0].tolist() == [0.5, 1.0, 0.0, 0.0]  # items 2 and 3 were added: no edges
    assert graph.neighbours.numpy().tolist() == [[1], [0]]
    empty = GraphTables(3)
    assert empty.num_kinds == 0 and empty.scores(recent, tf.constant([[0, 5]], tf.int64), 2).shape == (1, 2, 0)

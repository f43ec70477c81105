"""The item graph (components.item_graph) and the served scores built on it (towers.exporter.graph_scores)."""

import json

import numpy as np
import pytest

from components import item_graph

pytestmark = pytest.mark.unit


def test_cooccurrence_neighbours_come_from_shared_users_and_new_items_get_content_neighbours_only():
    # users 0 and 1 both took items 0 and 1; user 2 took 1 and 2; item 3 has no interaction (new).
    users = np.array([0, 0, 1, 1, 2, 2])
    positions = np.array([0, 1, 0, 1, 1, 2])
    content = np.array([[1, 0], [0, 1], [0, 1], [1, 0]], np.float32)  # item 3 looks like item 0
    graph = item_graph.build(users, positions, 4, content, k=2)
    cooc = graph.kinds == item_graph.KINDS.index(item_graph.COOCCURRENCE)
    assert set(graph.neighbours[0][cooc]) == {1, -1}
    assert graph.neighbours[1][cooc][0] == 0 and graph.weights[1][cooc][0] > graph.weights[1][cooc][1] > 0  # 0 shares 2 users
    content = graph.kinds == item_graph.KINDS.index(item_graph.CONTENT)
    assert set(graph.neighbours[3][content]) == {0, -1}  # by content, never itself
    # item 3 (new) inherits item 0's co-occurrence edge (to item 1) through content
    assert graph.neighbours[3][cooc].tolist() == [1, -1] and graph.weights[3][cooc][0] > 0
    assert graph.edge_counts() == {item_graph.COOCCURRENCE: 5, item_graph.CONTENT: 4, "items_with_inherited_cooccurrence": 1}


def test_knowledge_edges_link_items_through_shared_attributes_rare_ones_more():
    # items 0-2 are animals; 0 and 1 are also birds (rarer); 3 is food; 4 has no attributes (no edges)
    attributes = [["animals", "birds"], ["animals", "birds"], ["animals", "cats"], ["food"], []]
    graph = item_graph.build(np.array([0]), np.array([3]), 5, None, attributes, k=3)
    knowledge = graph.kinds == item_graph.KINDS.index(item_graph.KNOWLEDGE)
    assert set(graph.kinds) == {item_graph.KINDS.index(item_graph.COOCCURRENCE), item_graph.KINDS.index(item_graph.KNOWLEDGE)}
    neighbours, weights = graph.neighbours[:, knowledge], graph.weights[:, knowledge]
    assert neighbours[0][0] == 1 and weights[0][0] > weights[0][1] > 0 and neighbours[0][1] == 2  # a shared rare attribute counts more
    assert set(neighbours[3]) == {-1} and set(neighbours[4]) == {-1}  # nothing shared
    assert item_graph.build(np.array([0]), np.array([0]), 2, None, [[], []], k=1).edge_counts() == {
        item_graph.COOCCURRENCE: 0,
        "items_with_inherited_cooccurrence": 0,
    }


def test_without_content_the_graph_has_cooccurrence_edges_only():
    graph = item_graph.build(np.array([0, 0]), np.array([0, 1]), 3, None, k=2)
    assert graph.neighbours.shape == (3, 2) and set(graph.kinds) == {0}


def test_choose_mix_picks_the_best_recall_among_settings_that_let_new_items_reach_users():
    # 4 events, 3 candidates; candidate 9 is a new item. Events 0-1 want 7 (the graph finds it), 2-3 want 9 (new).
    logits = np.array([[2.0, 1.0, 0.0]] * 4)
    candidates = np.array([[5, 7, 9]] * 4)
    is_new = candidates == 9
    truth = np.array([7, 7, 9, 9])
    graph = np.zeros([4, 3, 1])
    graph[:, 1, 0] = 1.0
    chosen, tried = item_graph.choose_mix(
        logits, {5: graph, 10: graph * 0}, candidates, is_new, truth, truth == 9, kinds=1, new_item_ratio=0.0, k=1
    )
    # without a new-item target: the smallest graph weight that lifts 7 above 5 (1 + w > 2), no boost
    assert chosen["recall_at_1"] == 0.5 and chosen["mix"] == [2.0] and chosen["history_length"] == 5
    assert len(tried) == (2 * len(item_graph.MIX_GRID) - 1) * len(item_graph.BOOST_GRID)  # length 10 is not tried without the graph
    # new items' Recall@50 is 1 whatever the weights here (3 candidates): the target holds everywhere
    assert all(t["new_item_target_met"] for t in tried)
    json.dumps(tried)  # written to item_graph.json beside the model


def test_the_new_item_target_forces_a_boost_and_an_unreachable_one_is_reported():
    def setting(new_item_logit):
        logits = np.zeros([2, 60])
        logits[:, 0] = 10.0
        logits[1, 59] = new_item_logit
        candidates = np.arange(60)[None, :].repeat(2, axis=0)
        truth = np.array([0, 59])  # a warm target and a new one (55-59 are new)
        return item_graph.choose_mix(
            logits, {3: np.zeros([2, 60, 0])}, candidates, candidates >= 55, truth, truth >= 55, kinds=0, new_item_ratio=0.5, k=1
        )[0]

    chosen = setting(-5.0)  # a boost of 8 lifts it into the top 50, smaller ones do not
    assert chosen["new_item_target_met"] and chosen["new_item_boost"] == 8.0 and chosen["new_recall_at_50"] == 1.0
    chosen = setting(-50.0)  # out of reach: the target is reported unmet, the best Recall@k is kept
    assert not chosen["new_item_target_met"] and chosen["new_item_boost"] == 0.0 and chosen["recall_at_1"] == 0.5


def test_an_unmet_new_item_target_never_costs_most_of_the_accuracy():
    # 20 warm events, each's item first (logit 1), and 4 new-item events: a boost of 8 lifts 3 of the 4 new items
    # into the top 50 (the 4th is out of reach), short of the target with 95% confidence on 4 events, and lifts
    # every new item above every warm target: the setting closest to the target would drop Recall@1 from 1 to 0.
    width = 60
    warm = np.zeros([20, width])
    warm[:, 0] = 1.0
    new = np.zeros([4, width])
    new[[0, 1, 2, 3], [56, 57, 58, 59]] = [-5.0, -5.0, -5.0, -50.0]
    logits = np.concatenate([warm, new])
    candidates = np.arange(width)[None, :].repeat(24, axis=0)
    candidates[:20, 0] = np.arange(100, 120)  # the warm targets
    truth = np.concatenate([np.arange(100, 120), [56, 57, 58, 59]])
    is_new = (candidates >= 55) & (candidates < 100)
    chosen, tried = item_graph.choose_mix(
        logits, {3: np.zeros([24, width, 0])}, candidates, is_new, truth, (truth >= 55) & (truth < 100), kinds=0, new_item_ratio=0.5, k=1
    )
    assert not any(t["new_item_target_met"] for t in tried)
    closest = max(tried, key=lambda t: t["new_recall_at_50_low"] / max(t["warm_recall_at_50"], 1e-9))
    assert closest["new_item_boost"] == 8.0 and closest["recall_at_1"] == 0.0  # what the fallback used to choose
    assert chosen["recall_at_1"] >= item_graph.FALLBACK_RECALL_SHARE * max(t["recall_at_1"] for t in tried)


def test_recall_at_counts_ties_against_the_held_out_item():
    scores = np.array([[3.0, 2.0, 1.0], [1.0, 1.0, 0.0], [5.0, -np.inf, 0.0]])
    hit = np.array([[False, True, False], [False, True, False], [False, False, False]])
    assert item_graph.recall_at(scores, hit, 1).tolist() == [False, False, False]
    assert item_graph.recall_at(scores, hit, 2).tolist() == [True, True, False]


def test_served_graph_scores_sum_edges_to_the_last_history_items_per_kind():
    pytest.importorskip("tensorflow")
    from towers.exporter import graph_scores

    neighbours = np.array([[1, 2, -1, -1], [0, -1, 2, -1], [0, 1, 1, 0]], np.int64)
    weights = np.array([[0.5, 0.2, 0, 0], [0.5, 0, 0.9, 0], [0.2, 0.1, 0.3, 0.4]], np.float32)
    kinds = np.array([0, 0, 1, 1])
    recent = np.array([[0, 1, -1], [2, 0, 1]], np.int64)  # row 0: history 0 then 1 (padded); row 1: 2, 0, 1
    candidates = np.array([[2, 1], [2, 0]], np.int64)
    out = graph_scores(recent, candidates, neighbours, weights, kinds, 2, length=1).numpy()
    # row 0, last item 1: candidate 2 links to 1 by cooc 0.1 and content 0.3; candidate 1 has no edge to itself.
    np.testing.assert_allclose(out[0], [[1.0, 1.0], [0.0, 0.0]])
    # row 1, last item 1: candidate 2 -> 1 (0.1 cooc, 0.3 content); candidate 0 -> 1 (0.5 cooc).
    np.testing.assert_allclose(out[1], [[0.2, 1.0], [1.0, 0.0]])
    both = graph_scores(recent, candidates, neighbours, weights, kinds, 2, length=2).numpy()
    # row 1, last two items (0, 1): candidate 2 -> cooc 0.2 + 0.1, content 0.4 + 0.3; candidate 0 -> cooc 0.5
    np.testing.assert_allclose(both[1], [[0.6, 1.0], [1.0, 0.0]], rtol=1e-6)
    # the blend recommend orders by is item_graph.blend
    is_new = np.array([[True, False], [False, False]])
    np.testing.assert_allclose(
        item_graph.blend(np.zeros([2, 2]), both, np.array([1.0, 2.0]), is_new, 3.0), both @ np.array([1.0, 2.0]) + 3.0 * is_new
    )

"""The shared evaluation protocol: full seen-item exclusion, top-K, new items, user-bootstrap intervals."""

import numpy as np
import pytest

from components import evaluation as ev

pytestmark = pytest.mark.unit

INDEX = ev.catalog_index([b"a", b"b", b"c", b"d"])


def events(rows, histories=None) -> ev.Events:
    """(user, item, timestamp) rows."""
    return ev.Events(
        np.array([u.encode() for u, _, _ in rows], object),
        np.array([i.encode() for _, i, _ in rows], object),
        np.array([t for _, _, t in rows], np.int64),
        histories or [()] * len(rows),
    )


def test_seen_items_are_every_earlier_item_in_any_split_and_every_training_item():
    train = events([("u", "a", 1), ("u", "b", 5)])  # b: a training item after the eval event at 3 (random split)
    validation = events([("u", "c", 2)])
    held_out = events([("u", "d", 3), ("u", "c", 9), ("v", "a", 4)])
    seen = ev.SeenItems(INDEX, train, validation, held_out)
    assert sorted(seen.before(b"u", 3).tolist()) == [0, 0, 1, 2]  # a (train, and earlier), b (train), c (validation at 2)
    assert sorted(set(seen.before(b"u", 9).tolist())) == [0, 1, 2, 3]  # ... and d, an earlier eval event
    assert seen.before(b"u", 2).tolist().count(2) == 0  # not the item of the same second
    assert seen.before(b"v", 4).tolist() == [] and seen.before(b"nobody", 4).tolist() == []
    # the user's events before a time, in time order (train's later b is not among them): what a history reads
    assert seen.history(b"u", 9).tolist() == [0, 2, 3, 1] and seen.history(b"u", 3).tolist() == [0, 2]
    assert seen.history(b"nobody", 4).tolist() == []


def test_top_k_excludes_and_restricts_and_breaks_ties_by_position():
    scores = np.array([[0.9, 0.5, 0.5, 0.1], [0.1, 0.2, 0.3, 0.4]])
    top = ev.top_k(scores, [np.array([0]), np.array([], np.int64)], k=3)
    assert top.tolist() == [[1, 2, 3], [3, 2, 1]]
    only_cold = ev.top_k(scores, [np.array([], np.int64)] * 2, k=2, allowed=np.array([False, False, True, True]))
    assert only_cold.tolist() == [[2, 3], [3, 2]]


def test_hits_use_the_models_metric_code_on_positions():
    top = np.array([[3, 1, 2, 0], [0, 1, 2, 3]])
    out = ev.hits(top, np.array([1, 7]))  # a catalog of 4: lists are padded to the longest cut-off
    assert out["recall_at_10"].tolist() == [1.0, 0.0]
    assert out["ndcg_at_10"][0] == pytest.approx(1 / np.log2(3))


def test_cold_mask_marks_items_without_training_interactions():
    assert ev.cold_mask(4, INDEX, events([("u", "a", 1), ("v", "c", 2), ("v", "zz", 3)])).tolist() == [False, True, False, True]


def test_user_bootstrap_weighs_users_per_event_and_per_user():
    # user x: 3 events, all hits; user y: 1 event, a miss. Per event 3/4, per user 1/2.
    users = np.array([b"x", b"x", b"x", b"y"])
    boot = ev.user_bootstrap({"model": np.array([1.0, 1.0, 1.0, 0.0]), "base": np.array([1.0, 0.0, 0.0, 0.0])}, users, resamples=500)
    assert boot["users"] == 2
    assert boot["per_event"]["model"]["mean"] == pytest.approx(0.75)
    assert boot["per_user"]["model"]["mean"] == pytest.approx(0.5)
    low, high = boot["per_user"]["model"]["ci"]
    assert low == pytest.approx(0.0) and high == pytest.approx(1.0)  # resampling two users: none, one or both hit
    ratio = ev.ratio(boot, "model", "base")
    assert ratio["per_event"]["ratio"] == pytest.approx(3.0) and ratio["per_user"]["ratio"] == pytest.approx(0.5 / (1 / 6))
    assert ratio["per_event"]["ci"][0] <= 3.0 <= ratio["per_event"]["ci"][1]
    assert "_replicates" not in ev.public(boot)


def test_bootstrap_interval_excludes_a_clearly_worse_baseline():
    rng = np.random.default_rng(1)
    users = np.repeat(np.arange(200), 5).astype(bytes)
    model = (rng.random(1000) < 0.5).astype(float)
    base = (rng.random(1000) < 0.2).astype(float)
    ratio = ev.ratio(ev.user_bootstrap({"model": model, "base": base}, users), "model", "base")
    assert ratio["per_event"]["ci"][0] > 1.5 and ratio["per_user"]["ci"][0] > 1.5


def test_list_diversity_and_category_coverage():
    import numpy as np

    embeddings = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    same = np.array([[0, 1, -1]])  # two identical directions: diversity 0
    spread = np.array([[0, 2, -1]])  # orthogonal: diversity 1
    assert ev.list_diversity(same, embeddings) == pytest.approx(0.0)
    assert ev.list_diversity(spread, embeddings) == pytest.approx(1.0)
    assert ev.list_diversity(np.concatenate([same, spread]), embeddings) == pytest.approx(0.5)
    assert np.isnan(ev.list_diversity(np.array([[3, -1, -1]]), embeddings))  # one item: no pair
    categories = np.array([0, 0, 1, -1])
    assert ev.category_coverage(same, categories) == pytest.approx(0.5)
    assert ev.category_coverage(np.array([[0, 2, 3]]), categories) == pytest.approx(1.0)
    assert np.isnan(ev.category_coverage(same, np.array([-1, -1, -1, -1])))

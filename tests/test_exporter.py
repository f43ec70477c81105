"""The serving module (towers.exporter) on a tiny model with hand-set scores, and the ScaNN index inside a SavedModel.

Items i0..i3 (i3 new: no training interactions); users u0 [1, 0], u1 [0, 1], u2 [1, 1]. Retrieval scores:
u0: 0.1, 0.9, 0.5, 0.7; u1: 0.9, 0.1, 0.5, -1.0. u0 has seen i1, u2 i0 and i2. The ranker's logit is a bias per
item index: i0 0.0, i1 0.2, i2 0.4, new items 2.0. Eight filler items i4..i11 score u0 -2.5, u1 -0.5 (the evaluation
signatures need at least metrics.NDCG_K = 10 items and ranking candidates). The pieces have their own tests
(test_catalog, test_exclusions, test_retrieval, test_fanout).
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.tiny_serving import RAW_SPEC, ToyCandidateTower, ToyQueryTower, ToyRanker, ToyTransform, catalog_tables
from towers import exporter, scann_index
from towers import features as F
from towers.catalog import UNKNOWN
from towers.contract import (
    EMBED_SIGNATURE,
    EMBEDDINGS_OUTPUT,
    ITEM_ENCODER,
    ITEM_IDS_INPUT,
    ITEM_IDS_OUTPUT,
    PREDICTED_RATINGS_OUTPUT,
    RANK_SIGNATURE,
    RANKER,
    SCORES_OUTPUT,
    SERVING_DEFAULT,
    SIGNATURES,
    trainer_model_dirs,
)
from towers.fanout import GRAPH_HISTORY
from towers.hparams import BRUTE_FORCE, SCANN

pytestmark = pytest.mark.unit

EMBEDDINGS = np.array([[0.1, 0.9], [0.9, 0.1], [0.5, 0.5], [0.7, -1.0]] + [[-2.5, -0.5]] * 8, np.float32)
USER_VECTORS = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]], np.float32)  # u0, u1, u2, unknown users
BIAS = np.array([0.0, 0.2, 0.4, 9.0] + [0.0] * 8 + [2.0], np.float32)  # by item index; 12: the OOV index (i3)
OOV = 12


def _module(index: str = BRUTE_FORCE) -> exporter.ServingModule:
    tables = catalog_tables(EMBEDDINGS, new={3})
    models = exporter.TrainedModels(
        ToyTransform(tables.ids),
        ToyQueryTower(USER_VECTORS),
        ToyCandidateTower(np.concatenate([EMBEDDINGS, np.zeros([1, 2], np.float32)])),
        ToyRanker(BIAS),
    )
    return exporter.ServingModule(
        models,
        exporter.ModelInputs(RAW_SPEC, F.NO_FEATURES),
        tables,
        exporter.UserTables(seen_positions=[[1], [], [0, 2], []], activity=["light", "new", "heavy", "new"]),
        exporter.ServingOptions(k=2, ranking_candidates=10, liked_rating=4.0, index=index, new_item_candidates=1),
    )


def _query(users, history) -> dict:
    return {
        F.USER_ID: tf.constant(users),
        F.TIMESTAMP: tf.zeros([len(users)], tf.int64),
        F.HISTORY: tf.constant(history),
    }


def _example(features: dict) -> bytes:
    feature = {
        name: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode() for v in values])) for name, values in features.items()
    }
    feature[F.TIMESTAMP] = tf.train.Feature(int64_list=tf.train.Int64List(value=[0]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The tiny module, exported (recommender, ranker and item encoder) and the recommender loaded back."""
    path = str(tmp_path_factory.mktemp("export") / "recommender")
    exporter.export(_module(), path)
    return path, tf.saved_model.load(path)


def test_query_leaves_out_the_users_seen_items_and_history(exported):
    _, model = exported
    out = model.signatures["query"](**_query(["u0", "u1"], [["i3"], [""]]))
    # u0: i1 seen, i3 in the history -> i2 (0.5), i0 (0.1); u1: i0 (0.9), i2 (0.5)
    assert out[ITEM_IDS_OUTPUT].numpy().tolist() == [[b"i2", b"i0"], [b"i0", b"i2"]]
    np.testing.assert_allclose(out[SCORES_OUTPUT].numpy(), [[0.5, 0.1], [0.9, 0.5]])


def test_recommend_ranks_the_retrieved_items_and_the_best_new_item(exported):
    _, model = exported
    out = model.signatures["recommend"](**_query(["u0", "u0", "u1"], [[""]] * 3), exclude_seen=tf.constant([False, True, True]))
    # u0 keeping seen items: retrieved i1, i3, i2, i0, i4.. (i3, the new item, already among them); logits 0.2, 2.0, 0.4, 0, 0..
    # u0 without them: i3, i2, i0, i4..; u1: i0, i2, i1, i4..i10 + the new item i3 (score -1.0, outside the top 10)
    assert out[ITEM_IDS_OUTPUT].numpy().tolist() == [[b"i3", b"i2"], [b"i3", b"i2"], [b"i3", b"i2"]]
    np.testing.assert_allclose(out[SCORES_OUTPUT].numpy()[0], 1 / (1 + np.exp(-np.array([2.0, 0.4]))), rtol=1e-6)
    np.testing.assert_allclose(out["retrieval_scores"].numpy(), [[0.7, 0.5], [0.7, 0.5], [-1.0, 0.5]])
    np.testing.assert_allclose(out[PREDICTED_RATINGS_OUTPUT].numpy(), [[OOV, 2.0]] * 3)  # the toy ranker's rating: the item index


def test_recommend_diverse_with_diversity_off_is_recommend_and_explains_too(exported):
    _, model = exported
    query = _query(["u0", "u1"], [["i1"], ["i0"]])
    plain = model.signatures["recommend"](**query, exclude_seen=tf.constant([True, True]))
    off = model.signatures["recommend_diverse"](
        **query, exclude_seen=tf.constant([True, True]), diversity=tf.constant([0.0, 0.0]), max_per_category=tf.constant([0, 0], tf.int64)
    )
    assert set(off) == set(plain) and "because_items" in off
    for name in plain:
        assert off[name].numpy().tolist() == plain[name].numpy().tolist(), name
    assert plain["because_items"].numpy().tolist()[0][0][0] == b"i1"  # the one history item explains both items
    novel = model.signatures["recommend_diverse"](
        **query, exclude_seen=tf.constant([True, True]), diversity=tf.constant([1.0, 0.0]), max_per_category=tf.constant([0, 0], tf.int64)
    )
    assert novel[ITEM_IDS_OUTPUT].numpy().tolist()[1] == plain[ITEM_IDS_OUTPUT].numpy().tolist()[1]  # the other row untouched


def test_rank_scores_given_items_and_zero_for_unknown_ones(exported):
    _, model = exported
    out = model.signatures["rank"](**_query(["u2"], [[""]]), item_ids=tf.constant([["i2", "nope", "i3"]]))
    np.testing.assert_allclose(out[SCORES_OUTPUT].numpy(), [[1 / (1 + np.exp(-0.4)), 0.0, 1 / (1 + np.exp(-2.0))]], rtol=1e-6)
    np.testing.assert_allclose(out[PREDICTED_RATINGS_OUTPUT].numpy(), [[2.0, 0.0, OOV]])


def test_evaluate_leaves_out_the_seen_items_of_the_example(exported):
    _, model = exported
    example = _example({F.USER_ID: ["u1"], F.ITEM_ID: ["i1"], F.HISTORY: [], F.SEEN_ITEMS: ["i0"]})
    out = model.signatures["evaluate"](examples=tf.constant([example]))
    assert out[ITEM_IDS_OUTPUT].numpy().tolist() == [[b"i2", b"i1"] + [f"i{i}".encode() for i in range(4, 12)]]  # then i3, i0
    assert out["recall_at_10"].numpy().tolist() == [1.0]
    np.testing.assert_allclose(out["ndcg_at_10"].numpy(), [1 / np.log2(3)])


def test_evaluation_features_slice_by_item_and_user(exported):
    _, model = exported
    examples = [_example({F.USER_ID: ["u2"], F.ITEM_ID: ["i3"]}), _example({F.USER_ID: ["zz"], F.ITEM_ID: ["gone"]})]
    out = model.signatures["evaluation_features"](examples=tf.constant(examples))
    assert out[F.ITEM_POPULARITY].numpy().tolist() == [b"none", UNKNOWN.encode()]
    assert out[F.USER_ACTIVITY].numpy().tolist() == [b"heavy", b"new"]
    assert out[F.LIKED].numpy().tolist() == [0.0, 0.0]  # no rating: not liked


def test_the_saved_models_have_their_signatures_and_the_attributes_others_read(exported):
    path, model = exported
    assert sorted(model.signatures.keys()) == sorted(SIGNATURES)
    dirs = trainer_model_dirs(path)
    assert sorted(tf.saved_model.load(dirs[RANKER]).signatures.keys()) == sorted([SERVING_DEFAULT, RANK_SIGNATURE])
    encoder = tf.saved_model.load(dirs[ITEM_ENCODER])
    assert sorted(encoder.signatures.keys()) == sorted([SERVING_DEFAULT, EMBED_SIGNATURE])
    embedded = encoder.signatures[EMBED_SIGNATURE](examples=tf.constant([_example({F.ITEM_ID: ["i1"]})]))
    np.testing.assert_allclose(embedded[EMBEDDINGS_OUTPUT].numpy(), [[0.9, 0.1]])
    assert encoder.content_modalities.numpy().tolist() == []
    assert model.catalog_ids.numpy().tolist() == [f"i{i}".encode() for i in range(12)]
    assert model.catalog_embeddings.numpy().shape == (12, 2) and model.profile_modalities.numpy().tolist() == []
    assert model.graph_mix.numpy().shape == (0,) and float(model.new_item_boost.numpy()) == 0.0
    assert int(model.graph_history.numpy()) == GRAPH_HISTORY
    assert model.index_type.numpy() == b"brute_force" and int(model.indexed_items.numpy()) == 0
    assert getattr(model, "catalog_content_projection", None) is None and int(model.catalog_profile_dim.numpy()) == 0


def test_a_scann_indexed_module_retrieves_as_brute_force_on_a_tiny_catalog():
    pytest.importorskip("scann")
    indexed, brute = _module(SCANN), _module()
    assert indexed.new_item_candidates == 0 and brute.new_item_candidates == 1  # new-item candidates: brute force only
    assert indexed.index_type.numpy() == b"scann" and int(indexed.indexed_items.numpy()) == 12
    query = _query(["u0", "u1"], [["i3"], [""]])
    got, expected = indexed.query(*query.values()), brute.query(*query.values())
    assert got[ITEM_IDS_OUTPUT].numpy().tolist() == expected[ITEM_IDS_OUTPUT].numpy().tolist() == [[b"i2", b"i0"], [b"i0", b"i2"]]


def test_items_added_to_a_loaded_model_are_served_after_saving_it_again(exported, tmp_path):
    model = tf.saved_model.load(exported[0])  # a copy of its own: add_items changes it
    added = {
        ITEM_IDS_INPUT: tf.constant(["a"]),
        EMBEDDINGS_OUTPUT: tf.constant([[5.0, 0.0]]),
        F.ITEM_POPULARITY: tf.constant(["none"]),
    }
    assert int(model.add_items(added)) == 13
    exporter.save(model, str(tmp_path / "v2"), dict(model.signatures))
    grown = tf.saved_model.load(str(tmp_path / "v2"))
    out = grown.signatures["query"](**_query(["u0"], [[""]]))
    assert out[ITEM_IDS_OUTPUT].numpy().tolist() == [[b"a", b"i3"]]
    assert grown.catalog_item_index.numpy()[[3, 12]].tolist() == [OOV, OOV]  # the added item has the OOV index
    assert grown.graph_neighbours.numpy().shape == (12, 0)  # an added item gets no graph row (no edges)


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
        exporter.ServingOptions(k=10, ranking_candidates=10, liked_rating=4.0, index="faiss")

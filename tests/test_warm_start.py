"""Warm start across vocabularies: each id keeps its own row, new ids get fresh rows, other weights carry over."""

import numpy as np
import pytest
import tensorflow as tf

from towers import features as F
from towers import warm_start
from towers.hparams import HParams
from towers.model import TwoTowerModel
from towers.ranking import RankingModel

pytestmark = pytest.mark.unit

HP = HParams(embedding_dim=8, id_embedding_dim=4, feature_embedding_dim=4, hidden_units=(16,), ranking_hidden_units=(8,))
OLD = {F.VOCAB_USER: ["u1", "u2", "u3"], F.VOCAB_ITEM: ["a", "b", "c", "d"], F.tokens_feature(F.TITLE): ["red", "car"], F.GENRES: ["x"]}
# The next span: "e" is new, "d" is gone, the others moved (frequency order); a new user "u4", "u1" gone.
NEW = {
    F.VOCAB_USER: ["u3", "u4", "u2"],
    F.VOCAB_ITEM: ["c", "a", "e", "b"],
    F.tokens_feature(F.TITLE): ["car", "red", "blue"],
    F.GENRES: ["x"],
}


def _sizes(vocabs):
    return {name: len(entries) for name, entries in vocabs.items()}


def _batch(vocabs) -> dict:
    return {
        F.USER_INDEX: tf.constant([0, 1], tf.int64),
        F.TIME_CONTEXT: tf.zeros([2, F.TIME_CONTEXT_DIM]),
        F.RECENCY_BUCKET: tf.constant([0, 1], tf.int64),
        F.HISTORY_TOKENS: tf.constant([[1, 2] + [0] * (F.HISTORY_LENGTH - 2)] * 2, tf.int64),
        F.ITEM_INDEX: tf.constant([0, 1], tf.int64),
        F.tokens_feature(F.TITLE): tf.constant([[1] + [0] * (F.TEXT_MAX_TOKENS - 1)] * 2, tf.int64),
        F.tokens_feature(F.GENRES): tf.constant([[1] + [0] * (F.MAX_VALUES - 1)] * 2, tf.int64),
    }


def _model(vocabs, hp=HP, seed=0):
    tf.keras.utils.set_random_seed(seed)
    roles = F.FeatureRoles(item_text=(F.TITLE,), item_multivalued=(F.GENRES,))
    model = TwoTowerModel(_sizes(vocabs), np.full(len(vocabs[F.VOCAB_ITEM]) + 1, 0.2, np.float32), hp, {}, roles=roles)
    model.query_tower(_batch(vocabs)), model.candidate_tower(_batch(vocabs))
    return model


def _rows(model, layer_name):
    (layer,) = [m for m in model.submodules if isinstance(m, tf.keras.layers.Embedding) and m.name == layer_name]
    return layer.embeddings.numpy()


def test_rows_follow_their_ids_into_the_new_vocabulary(tmp_path):
    old = _model(OLD, seed=1)
    warm_start.save(old, OLD, str(tmp_path), trained_until=123)
    new = _model(NEW, seed=2)
    fresh_item_rows = _rows(new, "item_embedding").copy()
    report = warm_start.restore(new, str(tmp_path), NEW)

    old_items, new_items = _rows(old, "item_embedding"), _rows(new, "item_embedding")
    for item in ("a", "b", "c"):
        np.testing.assert_array_equal(new_items[NEW[F.VOCAB_ITEM].index(item)], old_items[OLD[F.VOCAB_ITEM].index(item)])
    np.testing.assert_array_equal(new_items[2], fresh_item_rows[2])  # "e" is new: its initial row
    np.testing.assert_array_equal(new_items[-1], old_items[-1])  # the OOV bucket
    # The history table has the padding row first (offset 1).
    old_history, new_history = (m.query_tower.history.embedding.embeddings.numpy() for m in (old, new))
    np.testing.assert_array_equal(new_history[0], old_history[0])
    np.testing.assert_array_equal(new_history[1 + NEW[F.VOCAB_ITEM].index("b")], old_history[1 + OLD[F.VOCAB_ITEM].index("b")])
    old_users, new_users = _rows(old, "user_embedding"), _rows(new, "user_embedding")
    np.testing.assert_array_equal(new_users[0], old_users[2])  # u3
    # Every weight that is not a vocabulary table (all of those are embeddings) is copied as it is.
    for old_w, new_w in zip(old.trainable_weights, new.trainable_weights):
        if "embedding" not in new_w.name:
            np.testing.assert_array_equal(new_w.numpy(), old_w.numpy())
    assert report[F.VOCAB_ITEM] == {"kept": 3, "new": 1, "dropped": 1}
    assert report[F.VOCAB_USER] == {"kept": 2, "new": 1, "dropped": 1}
    assert report[F.tokens_feature(F.TITLE)] == {"kept": 2, "new": 1, "dropped": 0}
    assert warm_start.facts(str(tmp_path)) == {"trained_until": 123}


def test_warm_started_model_scores_known_pairs_as_the_old_one(tmp_path):
    """Same weights for the same ids: a user and item both in both vocabularies embed identically."""
    old = _model(OLD, seed=1)
    warm_start.save(old, OLD, str(tmp_path))
    new = _model(NEW, seed=2)
    warm_start.restore(new, str(tmp_path), NEW)
    old_batch, new_batch = _batch(OLD), _batch(NEW)
    # u2/"b": old indices 1/1, new indices 2/3; history "a","b" -> old ids 1,2; new ids 2,4
    old_batch.update({F.USER_INDEX: tf.constant([1], tf.int64), F.ITEM_INDEX: tf.constant([1], tf.int64)})
    new_batch.update({F.USER_INDEX: tf.constant([2], tf.int64), F.ITEM_INDEX: tf.constant([3], tf.int64)})
    old_batch[F.HISTORY_TOKENS] = tf.constant([[1, 2] + [0] * (F.HISTORY_LENGTH - 2)], tf.int64)
    new_batch[F.HISTORY_TOKENS] = tf.constant([[2, 4] + [0] * (F.HISTORY_LENGTH - 2)], tf.int64)
    # title "red" -> old id 1, new id 2
    new_batch[F.tokens_feature(F.TITLE)] = tf.constant([[2] + [0] * (F.TEXT_MAX_TOKENS - 1)], tf.int64)
    old_batch[F.tokens_feature(F.TITLE)] = tf.constant([[1] + [0] * (F.TEXT_MAX_TOKENS - 1)], tf.int64)
    for name in (F.TIME_CONTEXT, F.RECENCY_BUCKET, F.tokens_feature(F.GENRES)):
        old_batch[name], new_batch[name] = old_batch[name][:1], new_batch[name][:1]
    np.testing.assert_allclose(new.query_tower(new_batch).numpy(), old.query_tower(old_batch).numpy(), rtol=1e-6)
    np.testing.assert_allclose(new.candidate_tower(new_batch).numpy(), old.candidate_tower(old_batch).numpy(), rtol=1e-6)


def test_ranking_model_warm_starts_too(tmp_path):
    def ranker(vocabs, seed):
        tf.keras.utils.set_random_seed(seed)
        model = RankingModel(_sizes(vocabs), HP)
        model(
            {
                F.USER_INDEX: tf.constant([0], tf.int64),
                F.ITEM_INDEX: tf.constant([0], tf.int64),
                F.QUERY_EMBEDDING: tf.zeros([1, 8]),
                F.CANDIDATE_EMBEDDING: tf.zeros([1, 8]),
                F.TIME_CONTEXT: tf.zeros([1, F.TIME_CONTEXT_DIM]),
            }
        )
        return model

    old, new = ranker(OLD, 1), ranker(NEW, 2)
    warm_start.save(old, OLD, str(tmp_path))
    assert warm_start.restore(new, str(tmp_path), NEW)[F.VOCAB_ITEM] == {"kept": 3, "new": 1, "dropped": 1}
    np.testing.assert_array_equal(_rows(new, "ranking_item_embedding")[0], _rows(old, "ranking_item_embedding")[2])  # "c"


def test_another_architecture_is_refused(tmp_path):
    warm_start.save(_model(OLD), OLD, str(tmp_path))
    with pytest.raises(warm_start.WarmStartError, match="shape"):
        warm_start.restore(_model(NEW, hp=HP.replace(hidden_units=(32,))), str(tmp_path), NEW)


def test_a_model_that_leaves_tables_unused_saves_and_restores(tmp_path):
    """The TFRS tutorials' two-tower (user id / item id) never calls the history table: nothing to save for it."""
    hp = HParams(**{**HP.__dict__, "query_features": ("id",), "item_modalities": ("id",)})
    old = _model(OLD, hp)
    warm_start.save(old, OLD, str(tmp_path))
    new = _model(NEW, hp, seed=1)
    report = warm_start.restore(new, str(tmp_path), NEW)
    assert report[F.VOCAB_USER] == {"kept": 2, "new": 1, "dropped": 1}

"""Ranking model, its training examples, and the evaluation slices, on tiny hand-made inputs."""

import numpy as np
import pytest
import tensorflow as tf

from components import ranking_data, slices
from towers import features as F
from towers.hparams import HParams
from towers.ranking import (
    ENGAGEMENT_LOGIT,
    ENGAGEMENT_OUTPUT,
    ENGAGEMENT_WEIGHT,
    INTERACTION_WEIGHT,
    LIKE_LOGIT,
    LIKE_OUTPUT,
    RATING_OUTPUT,
    RankingModel,
)

pytestmark = pytest.mark.unit

VOCAB_SIZES = {F.VOCAB_USER: 3, F.VOCAB_ITEM: 4}
HP = HParams(id_embedding_dim=4, fusion_dim=4, ranking_projection_dim=2, ranking_hidden_units=(8,), id_dropout=0.0)
DIM, CONTENT_DIM = 6, 5


def _inputs(n: int = 3, content: bool = True) -> dict:
    rng = np.random.default_rng(0)
    out = {
        F.USER_INDEX: tf.constant([0, 2, 3][:n], tf.int64),
        F.ITEM_INDEX: tf.constant([1, 4, 0][:n], tf.int64),  # 4 = OOV: an item unseen in training
        F.TIME_CONTEXT: tf.zeros([n, F.TIME_CONTEXT_DIM]),
        F.QUERY_EMBEDDING: tf.constant(rng.normal(size=[n, DIM]), tf.float32),
        F.CANDIDATE_EMBEDDING: tf.constant(rng.normal(size=[n, DIM]), tf.float32),
    }
    if content:
        out[F.CONTENT_PROFILE] = tf.constant(rng.normal(size=[n, CONTENT_DIM]), tf.float32)
    return out


def test_ranking_model_named_outputs_and_ranges():
    model = RankingModel(VOCAB_SIZES, HP, CONTENT_DIM)
    out = model(_inputs())
    assert set(out) == {ENGAGEMENT_LOGIT, ENGAGEMENT_OUTPUT, LIKE_LOGIT, LIKE_OUTPUT, RATING_OUTPUT}
    assert all(tensor.shape == (3,) for tensor in out.values())
    np.testing.assert_allclose(out[ENGAGEMENT_OUTPUT].numpy(), tf.sigmoid(out[ENGAGEMENT_LOGIT]).numpy(), rtol=1e-6)
    assert RankingModel(VOCAB_SIZES, HP, 0)(_inputs(content=False))[RATING_OUTPUT].shape == (3,)


def test_ranking_model_uses_dcn_cross_layers():
    import tensorflow_recommenders as tfrs

    model = RankingModel(VOCAB_SIZES, HP.replace(ranking_cross_layers=3), CONTENT_DIM)
    model(_inputs())
    assert sum(isinstance(layer, tfrs.layers.dcn.Cross) for layer in model.cross_layers) == 3


def test_a_projected_content_profile_gives_the_ranker_the_same_outputs():
    """The served catalog stores project_content(profile) (64 values, not the profile's 1,864 on tuxpaint): fed as
    F.CONTENT_PROJECTION, the ranker's outputs are those of the profile itself."""
    model = RankingModel(VOCAB_SIZES, HP, CONTENT_DIM)
    inputs = _inputs()
    direct = model(inputs)
    projected = {name: value for name, value in inputs.items() if name != F.CONTENT_PROFILE}
    projected[F.CONTENT_PROJECTION] = model.project_content(inputs[F.CONTENT_PROFILE])
    assert projected[F.CONTENT_PROJECTION].shape == (3, HP.fusion_dim)
    for name, value in model(projected).items():
        np.testing.assert_allclose(value.numpy(), direct[name].numpy(), rtol=1e-6, atol=1e-6)


def test_rating_loss_ignores_negatives_and_weights_combine():
    model = RankingModel(VOCAB_SIZES, HP.replace(engagement_loss_weight=0.0, like_loss_weight=0.0, rating_loss_weight=1.0), CONTENT_DIM)
    features = {
        **_inputs(),
        F.ENGAGED: tf.constant([1.0, 0.0, 1.0]),
        F.LIKED: tf.constant([1.0, 0.0, 0.0]),
        F.RATING: tf.constant([5.0, 0.0, 3.0]),
        ENGAGEMENT_WEIGHT: tf.constant([1.0, 1.0, 1.0]),
        INTERACTION_WEIGHT: tf.constant([1.0, 0.0, 1.0]),
    }
    predicted = model(features)[RATING_OUTPUT].numpy()
    expected = ((predicted[0] - 5.0) ** 2 + (predicted[2] - 3.0) ** 2) / 3.0  # Keras MSE: weighted sum / batch size
    assert float(model.compute_loss(features)) == pytest.approx(expected, rel=1e-5)
    changed = {**features, F.RATING: tf.constant([5.0, 100.0, 3.0])}  # a negative's rating does not count
    assert float(model.compute_loss(changed)) == pytest.approx(expected, rel=1e-5)


def test_ranking_model_learns_engagement():
    rng = np.random.default_rng(1)
    n = 256
    candidate = rng.normal(size=[n, DIM]).astype(np.float32)
    engaged = (candidate[:, 0] > 0).astype(np.float32)  # engagement follows one coordinate of the item
    features = {
        F.USER_INDEX: np.zeros(n, np.int64),
        F.ITEM_INDEX: np.zeros(n, np.int64),
        F.TIME_CONTEXT: np.zeros([n, F.TIME_CONTEXT_DIM], np.float32),
        F.QUERY_EMBEDDING: np.zeros([n, DIM], np.float32),
        F.CANDIDATE_EMBEDDING: candidate,
        F.ENGAGED: engaged,
        F.LIKED: np.zeros(n, np.float32),
        F.RATING: np.zeros(n, np.float32),
        ENGAGEMENT_WEIGHT: np.ones(n, np.float32),
        INTERACTION_WEIGHT: np.zeros(n, np.float32),
    }
    tf.keras.utils.set_random_seed(0)
    model = RankingModel(VOCAB_SIZES, HP, 0)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.05))
    history = model.fit(tf.data.Dataset.from_tensor_slices(features).batch(64), epochs=20, verbose=0)
    assert history.history["engagement_auc"][-1] > 0.95


def test_retrieved_negatives_come_from_the_top_and_skip_known_items():
    catalog = np.eye(5, dtype=np.float32)  # item i scores query[i]
    queries = np.array([[5, 4, 3, 2, 1], [1, 2, 3, 4, 5], [1, 2, 3, 4, 5]], np.float32)
    seen = [[1], []]  # user 0 interacted with item 1
    negatives, retrieved = ranking_data.retrieved_negatives(
        queries,
        catalog,
        users=np.array([0, 1, 1]),
        positives=np.array([0, 4, 0]),
        seen=seen + [[]],
        num_candidates=3,
        num_negatives=2,
        rng=np.random.default_rng(0),
    )
    # query 0: top 3 = {0, 1, 2}; 0 is its item, 1 was seen -> only 2 remains.
    assert negatives[0].tolist() == [2, -1]
    # query 1: top 3 = {4, 3, 2}; 4 is its item -> {3, 2}.
    assert sorted(negatives[1].tolist()) == [2, 3]
    # query 2 = query 1's scores but its item is 0, not among the top 3.
    assert retrieved.tolist() == [True, True, False]


def test_items_without_training_interactions_are_never_negatives():
    """Else the OOV id they share would only ever be a negative, and the ranker would bury every new item."""
    catalog = np.eye(4, dtype=np.float32)
    queries = np.array([[4, 3, 2, 1]], np.float32)
    negatives, _ = ranking_data.retrieved_negatives(
        queries,
        catalog,
        users=np.array([0]),
        positives=np.array([0]),
        seen=[[]],
        num_candidates=4,
        num_negatives=3,
        rng=np.random.default_rng(0),
        eligible=np.array([True, False, True, False]),
    )
    assert sorted(negatives[0].tolist()) == [-1, -1, 2]


def test_ranking_rows_label_interactions_and_negatives():
    rows = ranking_data.ranking_rows(
        users=np.array([0, 1, 2]),
        positions=np.array([3, -1, 4]),
        item_rows=np.arange(3),
        ratings=np.array([5.0, 4.0, 2.0]),
        negatives=np.array([[1, -1], [2, 0], [-1, -1]]),
        retrieved=np.array([True, True, False]),
        liked_rating=4.0,
    )
    # interactions 0 and 2 (1 is not in the catalog), then negatives (0,1), (1,2), (1,0).
    assert rows["position"].tolist() == [3, 4, 1, 2, 0]
    assert rows[F.USER_INDEX].tolist() == [0, 2, 0, 1, 1]
    assert rows[F.ENGAGED].tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert rows[F.LIKED].tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert rows[INTERACTION_WEIGHT].tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]
    # interaction 2's item was not retrieved: engagement does not learn from it, like and rating do.
    assert rows[ENGAGEMENT_WEIGHT].tolist() == [1.0, 0.0, 1.0, 1.0, 1.0]
    assert rows[F.RATING].tolist() == [5.0, 2.0, 0.0, 0.0, 0.0]


def test_ranking_dataset_gathers_item_and_query_inputs():
    rows = ranking_data.ranking_rows(np.array([0]), np.array([1]), np.array([0]), np.array([5.0]), np.array([[0]]), np.array([True]), 4.0)
    per_row = {F.QUERY_EMBEDDING: np.array([[1.0, 2.0]], np.float32), F.TIME_CONTEXT: np.zeros([1, 4], np.float32)}
    per_position = {F.ITEM_INDEX: np.array([7, 8], np.int64), F.CANDIDATE_EMBEDDING: np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)}
    batch = next(iter(ranking_data.ranking_dataset(rows, per_row, per_position, batch_size=2, seed=0)))
    by_item = {
        int(i): (float(e), c.tolist()) for i, e, c in zip(batch[F.ITEM_INDEX], batch[F.ENGAGED], batch[F.CANDIDATE_EMBEDDING].numpy())
    }
    assert by_item == {8: (1.0, [1.0, 0.0]), 7: (0.0, [0.0, 1.0])}
    assert batch[F.QUERY_EMBEDDING].numpy().tolist() == [[1.0, 2.0], [1.0, 2.0]]


def test_dropped_item_ids_come_with_the_content_only_embedding():
    rows = ranking_data.ranking_rows(
        np.zeros(400, np.int64),
        np.arange(400) % 2,
        np.zeros(400, np.int64),
        np.full(400, 5.0),
        np.full([400, 1], -1),
        np.ones(400, bool),
        4.0,
    )
    per_row = {F.QUERY_EMBEDDING: np.ones([1, 2], np.float32), F.TIME_CONTEXT: np.zeros([1, 4], np.float32)}
    per_position = {F.ITEM_INDEX: np.array([0, 1], np.int64), F.CANDIDATE_EMBEDDING: np.array([[1.0, 0.0], [2.0, 0.0]], np.float32)}
    content_only = np.array([[0.0, -1.0], [0.0, -2.0]], np.float32)
    dataset = ranking_data.ranking_dataset(rows, per_row, per_position, batch_size=400, seed=0, new_item=(0.25, 9, content_only))
    batch = next(iter(dataset))
    pairs = {(int(i), tuple(c)) for i, c in zip(batch[F.ITEM_INDEX].numpy(), batch[F.CANDIDATE_EMBEDDING].numpy().tolist())}
    assert pairs == {(0, (1.0, 0.0)), (1, (2.0, 0.0)), (9, (0.0, -1.0)), (9, (0.0, -2.0))}
    dropped = float(np.mean(batch[F.ITEM_INDEX].numpy() == 9))
    assert 0.15 < dropped < 0.35, dropped


def test_slices_hand_computed():
    # 10 warm items: 1 head (top 10%), 4 torso (to 50%), 5 tail; one cold.
    counts = [100, 0, 50, 40, 30, 20, 9, 8, 7, 6, 5]
    assert slices.item_popularity(counts) == ["head", "cold", "torso", "torso", "torso", "torso", "tail", "tail", "tail", "tail", "tail"]
    assert slices.item_freshness([3, 0]) == ["warm", "cold"]
    assert slices.user_activity([0, 1, 9, 10, 29, 30]) == ["new", "light", "light", "medium", "medium", "heavy"]
    content = {"text": {"a": 1, "b": 1}, "image": {"a": 1}, "audio": {}}
    assert slices.item_modalities(["a", "b", "c"], content) == ["text+image", "text", "none"]

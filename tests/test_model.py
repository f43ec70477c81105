"""Towers, logQ correction and the loss, on tiny vocabularies with hand-computed values."""

import math
import os

import numpy as np
import pytest
import tensorflow as tf

from towers import features as F
from towers.hparams import HParams
from towers.model import TwoTowerModel, item_sampling_probability
from towers.towers import CandidateTower, MaskedMeanEmbedding, QueryTower

pytestmark = pytest.mark.unit

VOCAB_SIZES = {
    F.VOCAB_USER: 3,
    F.VOCAB_ITEM: 4,
    F.GENDER: 2,
    F.OCCUPATION: 5,
    F.ZIP_CODE: 6,
    F.tokens_feature(F.TITLE): 7,
    F.GENRES: 3,
}
ROLES = F.FeatureRoles(  # MovieLens's
    user_categorical=(F.GENDER, F.OCCUPATION, F.ZIP_CODE),
    user_numeric=(F.AGE,),
    item_text=(F.TITLE,),
    item_multivalued=(F.GENRES,),
    item_numeric=(F.YEAR,),
)
TEXT_DIM = 5
CONTENT_DIMS = {"text": TEXT_DIM}  # a catalog with text only (no image, no audio)
HP = HParams(embedding_dim=8, id_embedding_dim=4, feature_embedding_dim=4, hidden_units=(16,))


def _batch(n: int = 3) -> dict:
    return {
        F.USER_INDEX: tf.constant([0, 2, 3][:n], tf.int64),  # 3 = the OOV bucket
        F.index_feature(F.GENDER): tf.constant([0, 1, 2][:n], tf.int64),
        F.index_feature(F.OCCUPATION): tf.constant([1, 4, 5][:n], tf.int64),
        F.index_feature(F.ZIP_CODE): tf.constant([0, 6, 3][:n], tf.int64),
        F.z_feature(F.AGE): tf.constant([0.1, -1.0, 2.0][:n]),
        F.TIME_CONTEXT: tf.zeros([n, F.TIME_CONTEXT_DIM]),
        F.RECENCY_BUCKET: tf.constant([0, 5, 9][:n], tf.int64),
        F.ITEM_INDEX: tf.constant([0, 3, 4][:n], tf.int64),  # 4 = OOV: an item unseen in training
        F.tokens_feature(F.TITLE): tf.constant([[1, 2] + [0] * (F.TEXT_MAX_TOKENS - 2)] * n, tf.int64),
        F.tokens_feature(F.GENRES): tf.constant([[1] + [0] * (F.MAX_VALUES - 1)] * n, tf.int64),
        F.z_feature(F.YEAR): tf.constant([0.0, 1.0, -1.0][:n]),
        F.HISTORY_TOKENS: tf.constant([[1, 5] + [0] * (F.HISTORY_LENGTH - 2)] * n, tf.int64),  # 5 = OOV + 1
        F.TEXT_EMBEDDING: tf.constant([[0.5] * TEXT_DIM, [0.0] * TEXT_DIM, [-0.5] * TEXT_DIM][:n]),  # row 1: no text
    }


def test_sampling_probability_hand_computed():
    probs = item_sampling_probability(["a", "b", "c"], {"a": 6, "b": 2, "c": 0})
    # a: 6/8, b: 2/8, c unseen -> floor (smallest observed) 2/8, OOV bucket -> floor.
    np.testing.assert_allclose(probs, [0.75, 0.25, 0.25, 0.25])


@pytest.mark.parametrize("tower_cls", [QueryTower, CandidateTower])
def test_towers_embed_to_unit_vectors(tower_cls):
    tower = (
        tower_cls(VOCAB_SIZES, HP, CONTENT_DIMS, roles=ROLES) if tower_cls is CandidateTower else tower_cls(VOCAB_SIZES, HP, roles=ROLES)
    )
    out = tower(_batch()).numpy()
    assert out.shape == (3, HP.embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)


# A dataset with no user attributes and no year (e.g. tuxpaint): the towers use what there is.
MINIMAL_VOCABS = {F.VOCAB_USER: 3, F.VOCAB_ITEM: 4, F.tokens_feature(F.TITLE): 7, F.GENRES: 3}
MINIMAL_ROLES = F.FeatureRoles(item_text=(F.TITLE,), item_multivalued=(F.GENRES,))
MINIMAL_FEATURES = (
    F.USER_INDEX,
    F.TIME_CONTEXT,
    F.RECENCY_BUCKET,
    F.HISTORY_TOKENS,
    F.ITEM_INDEX,
    F.tokens_feature(F.TITLE),
    F.tokens_feature(F.GENRES),
    F.TEXT_EMBEDDING,
)


def test_towers_use_only_the_features_a_dataset_has():
    batch = {name: value for name, value in _batch().items() if name in MINIMAL_FEATURES}
    query, candidate = (
        QueryTower(MINIMAL_VOCABS, HP, roles=MINIMAL_ROLES),
        CandidateTower(MINIMAL_VOCABS, HP, CONTENT_DIMS, roles=MINIMAL_ROLES),
    )
    assert query(batch).shape == (3, HP.embedding_dim) and candidate(batch).shape == (3, HP.embedding_dim)
    # Same ids, one less feature -> a smaller first layer than with every feature.
    full = QueryTower(VOCAB_SIZES, HP, roles=ROLES)
    full(_batch())
    assert query.mlp.layers[0].kernel.shape[0] < full.mlp.layers[0].kernel.shape[0]
    assert not any("gender" in w.name or "occupation" in w.name for w in query.weights)


def test_masked_mean_ignores_padding():
    layer = MaskedMeanEmbedding(vocab_size=4, dim=3)
    table = layer.embedding(tf.constant([1, 2])).numpy()
    out = layer(tf.constant([[1, 2, 0, 0], [0, 0, 0, 0]])).numpy()
    np.testing.assert_allclose(out[0], table.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(out[1], 0.0)  # all padding -> zeros, not NaN


def test_logq_corrected_loss_hand_computed():
    model = TwoTowerModel(VOCAB_SIZES, np.full(5, 0.2, np.float32), HP.replace(temperature=1.0), CONTENT_DIMS, roles=ROLES)
    q = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    c = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    p = tf.constant([0.5, 0.25])
    loss = model.task(q, c, candidate_sampling_probability=p, candidate_ids=tf.constant([0, 1]), compute_metrics=False)
    # logits[i, j] = q_i . c_j - log p_j ; softmax cross-entropy on the diagonal, summed.
    logits = np.array([[1 - math.log(0.5), -math.log(0.25)], [-math.log(0.5), 1 - math.log(0.25)]])
    expected = -sum(logits[i, i] - np.log(np.exp(logits[i]).sum()) for i in range(2))
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_accidental_hits_are_not_negatives():
    model = TwoTowerModel(VOCAB_SIZES, np.full(5, 0.2, np.float32), HP.replace(temperature=1.0), CONTENT_DIMS, roles=ROLES)
    q = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    c = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    # Both rows hold item 7: each row's other column is the same item, so it is masked out.
    loss = model.task(q, c, candidate_ids=tf.constant([7, 7]), compute_metrics=False)
    assert float(loss) == pytest.approx(0.0, abs=1e-5)


def test_compute_loss_uses_item_frequencies():
    """compute_loss gathers p(item) by item index: with identical weights, turning logQ off changes the loss."""
    probs = np.array([0.5, 0.1, 0.1, 0.1, 0.2], np.float32)
    batch = _batch()
    with_logq = TwoTowerModel(VOCAB_SIZES, probs, HP, CONTENT_DIMS, roles=ROLES)
    without = TwoTowerModel(VOCAB_SIZES, probs, HP.replace(use_logq=False), CONTENT_DIMS, roles=ROLES)
    loss = float(with_logq.compute_loss(batch))
    without.compute_loss(batch)  # builds the layers
    without.set_weights(with_logq.get_weights())
    assert np.isfinite(loss) and loss > 0
    assert float(without.compute_loss(batch)) != pytest.approx(loss, rel=1e-4)


def test_catalog_negatives_are_the_exact_softmax_over_the_vocabulary():
    """hp.negatives "catalog": each query against every vocabulary item of the item table (the OOV row is not an
    item), summed over the batch; an example whose item is out of the vocabulary adds nothing."""
    batch = _batch()
    table_names = (F.ITEM_INDEX, F.tokens_feature(F.TITLE), F.tokens_feature(F.GENRES), F.z_feature(F.YEAR), F.TEXT_EMBEDDING)
    rows = VOCAB_SIZES[F.VOCAB_ITEM] + F.NUM_OOV_BUCKETS
    table = {name: np.repeat(batch[name].numpy()[:1], rows, axis=0) for name in table_names}
    table[F.ITEM_INDEX] = np.arange(rows, dtype=np.int64)
    table[F.z_feature(F.YEAR)] = np.linspace(-1, 1, rows).astype(np.float32)
    hp = HP.replace(negatives="catalog", temperature=0.5)
    model = TwoTowerModel(VOCAB_SIZES, np.full(5, 0.2, np.float32), hp, CONTENT_DIMS, roles=ROLES, item_table=table)
    loss = float(model.compute_loss(batch))
    queries = model.query_tower(batch).numpy()
    items = model.candidate_tower({name: values[: VOCAB_SIZES[F.VOCAB_ITEM]] for name, values in table.items()}).numpy()
    logits = queries @ items.T / 0.5
    labels = batch[F.ITEM_INDEX].numpy()  # 0, 3 in the vocabulary; 4: out of it
    expected = sum(np.log(np.exp(logits[i]).sum()) - logits[i, labels[i]] for i in range(2))
    assert loss == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="item table"):
        TwoTowerModel(VOCAB_SIZES, np.full(5, 0.2, np.float32), hp, CONTENT_DIMS, roles=ROLES)
    with pytest.raises(ValueError, match="negatives must be one of"):
        TwoTowerModel(VOCAB_SIZES, np.full(5, 0.2, np.float32), HP.replace(negatives="sampled"), CONTENT_DIMS, roles=ROLES)


def test_gate_ignores_missing_modalities():
    """Row 0 has everything; row 1 has no text embedding; row 2's item is unseen (OOV id)."""
    tower = CandidateTower(VOCAB_SIZES, HP, CONTENT_DIMS, roles=ROLES)
    weights = tower.modality_weights(_batch()).numpy()
    assert tower.modalities == ("id", "metadata", "text")  # no image or audio in this catalog
    id_, metadata, text = (tower.modalities.index(m) for m in ("id", "metadata", "text"))
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-6)
    assert (weights[0] > 0).all()
    assert weights[1, text] == 0 and weights[1, id_] > 0
    assert weights[2, id_] == 0 and weights[2, text] > 0 and weights[2, metadata] > 0


def test_unseen_item_embeds_from_content_alone():
    """An OOV item's embedding does not depend on the (untrained) OOV id row."""
    tower = CandidateTower(VOCAB_SIZES, HP, CONTENT_DIMS, roles=ROLES)
    batch = _batch()
    before = tower(batch).numpy()
    table = tower.item.embeddings
    table.assign(table + 10.0)  # change every id row, OOV included
    after = tower(batch).numpy()
    np.testing.assert_allclose(after[2], before[2], rtol=1e-5)
    assert not np.allclose(after[0], before[0])  # a warm item does use its id


def test_id_only_tower_sees_no_content():
    tower = CandidateTower(VOCAB_SIZES, HP.replace(item_modalities=("id",)), CONTENT_DIMS, roles=ROLES)
    weights = tower.modality_weights(_batch()).numpy()
    np.testing.assert_allclose(weights[:2], [[1, 0, 0], [1, 0, 0]], atol=1e-6)
    np.testing.assert_allclose(weights[2], 0.0)  # unseen item: nothing to go on
    with pytest.raises(ValueError, match="item_modalities"):
        CandidateTower(VOCAB_SIZES, HP.replace(item_modalities=("pixels",)), CONTENT_DIMS, roles=ROLES)


def test_masked_mean_ignores_oov_tokens():
    layer = MaskedMeanEmbedding(vocab_size=4, dim=3)
    oov = 4 + 1  # vocabulary index 4 (the OOV bucket), shifted by 1
    np.testing.assert_allclose(layer(tf.constant([[1, oov, 0]])).numpy(), layer(tf.constant([[1, 0, 0]])).numpy())


def test_tower_fuses_every_content_modality_the_catalog_has():
    tower = CandidateTower(VOCAB_SIZES, HP, {"text": TEXT_DIM, "image": 3}, roles=ROLES)
    batch = {**_batch(), F.IMAGE_EMBEDDING: tf.constant([[1.0, 0.0, 2.0], [0.0, 0.0, 0.0], [0.5, 0.5, 0.5]])}
    assert tower.modalities == ("id", "metadata", "text", "image")
    weights = tower.modality_weights(batch).numpy()
    assert weights[1, 3] == 0 and weights[0, 3] > 0  # row 1 has no image
    assert tower(batch).shape == (3, HP.embedding_dim)


def test_fine_tuned_text_encoder_reads_item_text_and_gets_gradients(tmp_path):
    from towers.encoders import registry

    handle = registry.local_handle("text")
    if not os.path.exists(os.path.join(handle, "saved_model.pb")):
        handle = registry.export("text", str(tmp_path))
    encoder = registry.load(handle, trainable=True)
    tower = CandidateTower(VOCAB_SIZES, HP, {"text": 384}, text_encoder=encoder, roles=ROLES)
    batch = {name: value for name, value in _batch().items() if name != F.TEXT_EMBEDDING}
    batch[F.ITEM_TEXT] = tf.constant(["A blackbird. animals, birds", "  ", "A frog. animals, amphibians"])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tower(batch)[:, 0])
    gradients = tape.gradient(loss, encoder.trainable_weights)
    assert encoder.trainable_weights and any(g is not None for g in gradients)
    text_weights = tower.modality_weights(batch).numpy()[:, tower.modalities.index("text")]
    assert text_weights[1] == 0.0 and text_weights[0] > 0 and text_weights[2] > 0  # blank text counts as missing


def test_towers_share_one_content_projection():
    table = np.random.default_rng(0).normal(size=(VOCAB_SIZES[F.VOCAB_ITEM] + 1, TEXT_DIM)).astype(np.float32)
    model = TwoTowerModel(
        VOCAB_SIZES, np.full(5, 0.2, np.float32), HP.replace(content_similarity_dim=4), CONTENT_DIMS, history_content=table, roles=ROLES
    )
    batch = _batch()
    queries, candidates = model.query_tower(batch), model.candidate_tower(batch)
    assert queries.shape == candidates.shape == (3, HP.embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(candidates.numpy(), axis=1), 1.0, rtol=1e-5)
    assert model.query_tower.shared_content is model.candidate_tower.shared_content
    shared = {id(w) for w in model.query_tower.shared_content.weights}
    assert shared <= {id(w) for w in model.query_tower.weights} and shared <= {id(w) for w in model.candidate_tower.weights}


def test_a_query_tower_on_the_user_id_alone_ignores_history_time_and_attributes():
    """The TFRS tutorials' query tower (bench/quality's row): only the user id reaches the embedding."""
    tower = QueryTower(VOCAB_SIZES, HParams(**{**HP.__dict__, "query_features": ("id",)}), roles=ROLES)
    batch = _batch()
    changed = {
        **batch,
        F.HISTORY_TOKENS: tf.ones_like(batch[F.HISTORY_TOKENS]),
        F.TIME_CONTEXT: batch[F.TIME_CONTEXT] + 1.0,
        F.index_feature(F.GENDER): 1 - batch[F.index_feature(F.GENDER)],
    }
    np.testing.assert_allclose(tower(batch).numpy(), tower(changed).numpy())
    other_users = {**batch, F.USER_INDEX: (batch[F.USER_INDEX] + 1) % 3}
    assert not np.allclose(tower(batch).numpy(), tower(other_users).numpy())


def test_history_sequence_reads_order_skips_padding_and_unknown_items():
    from towers.towers import HistorySequence

    layer = HistorySequence(vocab_size=4, dim=8, blocks=2, heads=2, content=tf.Variable(np.eye(5, 3, dtype=np.float32)))
    pad = lambda ids: tf.constant([ids + [0] * (F.HISTORY_LENGTH - len(ids))], tf.int64)
    ab, ba = layer(pad([1, 2])).numpy(), layer(pad([2, 1])).numpy()
    assert ab.shape == (1, 8) and not np.allclose(ab, ba)  # order matters
    # an unknown item (5 = OOV) is never read: with it last, the output is read at item 2 over [1, 2] (its recency shifts)
    assert np.abs(layer(pad([1, 2, 5])).numpy()).sum() > 0
    np.testing.assert_allclose(layer(pad([])).numpy(), 0.0)  # an empty history: zeros
    np.testing.assert_allclose(layer(pad([5])).numpy(), 0.0)  # unknown items only: zeros


def test_attention_history_and_fusion_towers_train_and_expose_modality_weights():
    hp = HP.replace(history_encoder="attention", fusion="attention", content_similarity_dim=4)
    model = TwoTowerModel(
        VOCAB_SIZES, np.full(5, 0.2, np.float32), hp, CONTENT_DIMS, history_content=np.ones([5, TEXT_DIM], np.float32), roles=ROLES
    )
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01))
    batch = _batch()
    before = model.evaluate(batch, verbose=0, return_dict=True)["loss"]
    model.fit(tf.data.Dataset.from_tensors(batch).repeat(5), verbose=0)
    assert model.evaluate(batch, verbose=0, return_dict=True)["loss"] < before
    assert any("history_sequence" in w.name for w in model.query_tower.trainable_weights)
    weights = model.candidate_tower.modality_weights(batch).numpy()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)
    text = model.candidate_tower.modalities.index("text")
    assert weights[1, text] == 0.0  # row 1 has no text: it gets no weight
    with pytest.raises(ValueError, match="history_encoder"):
        QueryTower(VOCAB_SIZES, HP.replace(history_encoder="lstm"), roles=ROLES)

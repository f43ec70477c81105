"""Differentially private training (towers.dp): the accountant, clipping, noise, and the DP train step."""

import math

import dp_accounting
import numpy as np
import pytest
import tensorflow as tf

from tests.test_model import CONTENT_DIMS, HP, ROLES, VOCAB_SIZES, _batch
from towers import dp
from towers import features as F
from towers.model import TwoTowerModel
from towers.towers import candidate_inputs

pytestmark = pytest.mark.unit


def test_epsilon_lies_between_the_exact_privacy_loss_and_the_classic_rdp_bound():
    # TensorFlow Privacy's MNIST setting: 60,000 examples, batch 256, noise 1.1, 60 epochs, delta 1e-5
    q, steps, delta = 256 / 60_000, 60 * 60_000 // 256, 1e-5
    pld = dp_accounting.pld.PLDAccountant()  # privacy-loss distributions: (near) exact, an independent method
    pld.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(1.1)), steps))
    assert pld.get_epsilon(delta) <= dp.epsilon(1.1, q, steps, delta) <= 1.15 * pld.get_epsilon(delta)
    # one Gaussian step without sampling: RDP alpha / (2 sigma^2), converted the classic way, bounds it from above
    classic = min(a / (2 * 2.0**2) + math.log(1 / delta) / (a - 1) for a in np.arange(1.1, 100, 0.1))
    assert dp.epsilon(2.0, 1.0, 1, delta) <= classic
    assert dp.epsilon(0.0, 0.01, 100, delta) == math.inf


def test_noise_multiplier_is_the_smallest_that_meets_the_target():
    for target in (1.0, 4.0, 10.0):
        sigma = dp.noise_multiplier_for(target, 0.01, 1000, 1e-6)
        assert dp.epsilon(sigma, 0.01, 1000, 1e-6) <= target
        assert dp.epsilon(sigma - 0.01, 0.01, 1000, 1e-6) > target
    assert dp.noise_multiplier_for(1.0, 0.01, 1000, 1e-6) > dp.noise_multiplier_for(10.0, 0.01, 1000, 1e-6)


def test_budget_plan_and_default_delta():
    assert dp.default_delta(80_000) == 1e-6
    assert dp.default_delta(30_000) == pytest.approx(2e-6)
    budget = dp.Budget.plan(4.0, 0.0, 1.0, examples=80_000, batch_size=512, epochs=2, negatives=64)
    assert budget.steps == 2 * (80_000 // 512) and budget.delta == 1e-6 and budget.epsilon <= 4.0
    assert dp.Budget.plan(math.inf, 0.0, 1.0, examples=80_000, batch_size=512, epochs=2, negatives=64).noise_multiplier == 0.0
    with pytest.raises(ValueError, match="full batch"):
        dp.Budget.plan(4.0, 0.0, 1.0, examples=100, batch_size=512, epochs=1, negatives=64)


def test_clipped_sum_scales_each_example_to_the_clip_norm():
    a = tf.constant([[3.0, 0.0], [0.3, 0.0]])  # per-example gradients of weight a
    b = tf.constant([[[4.0]], [[0.4]]])  # of weight b: example 0's global norm is 5, example 1's 0.5
    summed = dp.clipped_sum([a, b], clip=1.0)
    np.testing.assert_allclose(summed[0].numpy(), [3.0 / 5 + 0.3, 0.0], rtol=1e-6)
    np.testing.assert_allclose(summed[1].numpy(), [[4.0 / 5 + 0.4]], rtol=1e-6)


def test_noise_has_the_calibrated_scale():
    tf.random.set_seed(0)
    noisy = dp.noisy_mean([tf.zeros([200_000])], clip=2.0, noise_multiplier=1.5, batch_size=10)[0].numpy()
    assert noisy.std() == pytest.approx(2.0 * 1.5 / 10, rel=0.02)


# no dropout: a training step computes what the test computes in inference mode
DETERMINISTIC = HP.replace(temperature=1.0, id_dropout=0.0, modality_dropout=0.0, history_encoder="mean", dp_uniformity=0.0)


def _dp_model(noise_multiplier: float = 0.0, clip: float = 1e6, batch_size: int = 3):
    batch = _batch()
    table, examples = dp.item_feature_table([batch], candidate_inputs(ROLES, CONTENT_DIMS), VOCAB_SIZES[F.VOCAB_ITEM] + F.NUM_OOV_BUCKETS)
    budget = dp.Budget(1.0, 1e-5, noise_multiplier, clip, examples, batch_size, 1, negatives=4)
    model = TwoTowerModel(VOCAB_SIZES, np.full(5, 0.2, np.float32), DETERMINISTIC, CONTENT_DIMS, roles=ROLES, dp=budget, item_table=table)
    return model, batch


def test_item_table_holds_each_items_inputs_by_index():
    batch = _batch()
    table, examples = dp.item_feature_table([batch], (F.ITEM_INDEX, F.z_feature(F.YEAR)), 5)
    assert examples == 3
    np.testing.assert_array_equal(table[F.ITEM_INDEX], [0, 0, 0, 3, 4])
    np.testing.assert_allclose(table[F.z_feature(F.YEAR)], [0.0, 0.0, 0.0, 1.0, -1.0])


def test_an_examples_loss_reads_no_other_example():
    model, batch = _dp_model()
    negatives = model.embed_negatives(model.sample_negatives())
    together = model.example_losses(batch, negatives).numpy()
    for row in range(3):
        alone = model.example_losses({name: values[row : row + 1] for name, values in batch.items()}, negatives).numpy()
        np.testing.assert_allclose(alone, together[row : row + 1], rtol=1e-5)


def test_negatives_equal_to_the_examples_item_do_not_count():
    model, batch = _dp_model()
    negatives = model.embed_negatives({name: tf.gather(values, [0, 0]) for name, values in model.item_table.items()})  # item 0 twice
    losses = model.example_losses(batch, negatives).numpy()
    assert losses[0] == pytest.approx(0.0, abs=1e-6)  # example 0's item is 0: no negative left, loss log(1) = 0
    assert losses[1] > 0


def test_dp_step_applies_the_mean_of_clipped_per_example_gradients():
    """Without noise, one DP step with plain SGD moves the weights by -lr x the mean of each example's gradient scaled to the clip norm."""
    clip = 0.05
    model, batch = _dp_model(clip=clip)
    model.compile(optimizer=tf.keras.optimizers.SGD(1.0))
    model.example_losses(batch, model.embed_negatives(model.sample_negatives()))  # builds the weights
    before = [v.numpy() for v in model.trainable_variables]
    negatives = {name: tf.gather(values, [0, 1, 2, 3]) for name, values in model.item_table.items()}  # each vocabulary item
    expected = [np.zeros_like(b) for b in before]
    for row in range(3):
        with tf.GradientTape() as tape:
            loss = model.example_losses({name: values[row : row + 1] for name, values in batch.items()}, model.embed_negatives(negatives))[
                0
            ]
        grads = [
            np.zeros_like(v.numpy()) if g is None else tf.convert_to_tensor(g).numpy()
            for g, v in zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        ]
        norm = math.sqrt(sum(float((g**2).sum()) for g in grads))
        assert norm > clip  # the clip is in play
        expected = [e + g * min(1.0, clip / norm) / 3 for e, g in zip(expected, grads)]
    model.sample_negatives = lambda: negatives  # the same draw as above
    model.train_step(batch)
    for b, v, e in zip(before, model.trainable_variables, expected):
        np.testing.assert_allclose(b - v.numpy(), e, atol=1e-5)


def test_dp_training_runs_and_noise_moves_weights_more():
    quiet, batch = _dp_model(noise_multiplier=0.0, clip=1.0)
    loud, _ = _dp_model(noise_multiplier=5.0, clip=1.0)
    moved = []
    for model in (quiet, loud):
        model.compile(optimizer=tf.keras.optimizers.SGD(0.1))
        model.example_losses(batch, model.embed_negatives(model.sample_negatives()))
        before = [v.numpy() for v in model.trainable_variables]
        history = model.fit(tf.data.Dataset.from_tensors(batch).repeat(2), verbose=0)
        assert np.isfinite(history.history["loss"]).all()
        moved.append(sum(float(np.abs(b - v.numpy()).sum()) for b, v in zip(before, model.trainable_variables)))
    assert moved[1] > 5 * moved[0]


def test_the_public_uniformity_term_trains_only_the_item_tower():
    """With every example's gradient clipped to ~0, what moves is the uniformity term's gradient on catalog items:
    the item tower's weights, never the query tower's."""
    model, batch = _dp_model(clip=1e-12)
    model.hp = model.hp.replace(dp_uniformity=1.0)
    model.compile(optimizer=tf.keras.optimizers.SGD(0.1))
    model.example_losses(batch, model.embed_negatives(model.sample_negatives()))
    query = [v.numpy() for v in model.query_tower.trainable_variables]
    items = [v.numpy() for v in model.candidate_tower.trainable_variables]
    outputs = model.train_step(batch)
    assert np.isfinite(outputs["uniformity"].numpy())
    for before, v in zip(query, model.query_tower.trainable_variables):
        np.testing.assert_allclose(v.numpy(), before, atol=1e-9)
    assert any(not np.allclose(v.numpy(), before) for before, v in zip(items, model.candidate_tower.trainable_variables))


def test_the_dp_ranker_is_the_retrieval_score():
    from towers.ranking import ENGAGEMENT_LOGIT, ENGAGEMENT_OUTPUT, RATING_OUTPUT, RetrievalScoreRanker

    queries, candidates = tf.constant([[1.0, 0.0], [0.6, 0.8]]), tf.constant([[0.5, 0.5], [0.0, 1.0]])
    out = RetrievalScoreRanker(temperature=0.5)({F.QUERY_EMBEDDING: queries, F.CANDIDATE_EMBEDDING: candidates})
    np.testing.assert_allclose(out[ENGAGEMENT_LOGIT].numpy(), [1.0, 1.6], rtol=1e-6)
    np.testing.assert_allclose(out[ENGAGEMENT_OUTPUT].numpy(), 1 / (1 + np.exp([-1.0, -1.6])), rtol=1e-6)
    assert np.isnan(out[RATING_OUTPUT].numpy()).all()


def test_private_hparams_drop_the_user_id_and_the_cooccurrence_graph():
    private = dp.private(HP)
    assert "id" not in private.query_features and "history" in private.query_features and not private.item_graph


def test_summary_line_states_the_guarantee():
    from app.report import format_differential_privacy

    budget = dp.Budget.plan(4.0, 0.0, 1.0, examples=38_972, batch_size=512, epochs=3, negatives=512)
    line = format_differential_privacy(budget.to_dict())
    assert line.startswith("Differential privacy: the two towers are (3.99, 2e-06)-DP per training example")
    assert "228 steps of 512 of 38,972 events" in line
    assert format_differential_privacy({}).startswith("Differential privacy: off")

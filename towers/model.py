"""The two-tower retrieval model: towers + a TFRS Retrieval task with logQ correction."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from towers import dp as dp_lib
from towers import features as F
from towers.hparams import CATALOG, NEGATIVES, HParams
from towers.towers import CandidateTower, QueryTower, shared_content_projection


def item_sampling_probability(item_vocab: list[str], counts: dict[str, int]) -> np.ndarray:
    """Probability that an in-batch negative is each item, by item index.

    In-batch negatives are sampled in proportion to item frequency; logQ
    correction subtracts log(p) from each logit so popular items are not
    over-penalised. Index i < len(item_vocab) is vocabulary item i; the last
    entry is the OOV bucket, given the smallest observed probability.

    Args:
      item_vocab: the item vocabulary in index order.
      counts: interactions per item in the training split.
    Returns:
      float32 [len(item_vocab) + NUM_OOV_BUCKETS], each in (0, 1].
    """
    total = float(sum(counts.values()))
    probs = np.array([counts.get(item, 0) / total for item in item_vocab], dtype=np.float64)
    floor = probs[probs > 0].min() if (probs > 0).any() else 1.0 / max(total, 1.0)
    probs = np.maximum(probs, floor)
    return np.concatenate([probs, np.full(F.NUM_OOV_BUCKETS, floor)]).astype(np.float32)


class TwoTowerModel(tfrs.Model):
    """Softmax retrieval: over in-batch negatives with sampling-bias correction and accidental-hit removal, or
    (hp.negatives "catalog") over every item of `item_table`.

    `history_content`: optional content table for the query tower (see towers.HistoryContent).
    `text_encoder`: optional trainable text encoder for the candidate tower (fine-tuning).
    `roles`: the dataset's declared user and item features (towers.features.FeatureRoles).
    `dp`: differentially private training (towers.dp): each example's gradient is clipped and noised, and its
    softmax is over `dp.negatives` items drawn uniformly from `item_table` (item index -> candidate inputs)
    instead of the other examples' items; None: the usual softmax.
    """

    def __init__(
        self,
        vocab_sizes: dict[str, int],
        sampling_probability: np.ndarray,
        hp: HParams,
        content_dims: dict[str, int],
        history_content=None,
        text_encoder=None,
        roles: F.FeatureRoles = F.NO_FEATURES,
        dp: dp_lib.Budget | None = None,
        item_table: dict[str, np.ndarray] | None = None,
    ):
        super().__init__()
        if hp.negatives not in NEGATIVES:
            raise ValueError(f"negatives must be one of {NEGATIVES}, got {hp.negatives!r}")
        self.hp = hp
        self.dp = dp
        self.item_table = {name: tf.constant(values) for name, values in (item_table or {}).items()}
        if (dp is not None or hp.negatives == CATALOG) and not self.item_table:
            raise ValueError("differentially private training and catalog negatives need the item table of their negatives")
        # the shared content coordinates compare the history's content with the item's: only with a history in the query
        shared = shared_content_projection(hp) if history_content is not None and "history" in hp.query_features else None
        self.query_tower = QueryTower(vocab_sizes, hp, history_content, shared, roles)
        self.candidate_tower = CandidateTower(vocab_sizes, hp, content_dims, text_encoder, shared, roles)
        self.sampling_probability = tf.constant(sampling_probability)
        self.task = tfrs.tasks.Retrieval(temperature=hp.temperature, remove_accidental_hits=True)

    def compute_loss(self, features: dict, training: bool = False) -> tf.Tensor:
        queries = self.query_tower(features, training=training)
        item_index = features[F.ITEM_INDEX]
        if self.hp.negatives == CATALOG:
            return self.catalog_loss(queries, item_index, training)
        candidates = self.candidate_tower(features, training=training)
        probability = tf.gather(self.sampling_probability, item_index) if self.hp.use_logq else None
        return self.task(
            queries,
            candidates,
            candidate_sampling_probability=probability,
            candidate_ids=item_index,
            compute_metrics=False,
            training=training,
        )

    def catalog_loss(self, queries: tf.Tensor, item_index: tf.Tensor, training: bool = False) -> tf.Tensor:
        """The exact softmax loss, summed over the batch like TFRS's Retrieval task: each query [batch, dim] against
        every vocabulary item of the item table, its own item `item_index` [batch] the label. An example whose item
        is out of the vocabulary (the validation split's new items) has no label and adds nothing."""
        vocabulary = tf.shape(self.item_table[F.ITEM_INDEX])[0] - F.NUM_OOV_BUCKETS
        items = self.candidate_tower({name: values[:vocabulary] for name, values in self.item_table.items()}, training=training)
        logits = tf.matmul(queries, items, transpose_b=True) / self.hp.temperature
        known = item_index < tf.cast(vocabulary, item_index.dtype)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.where(known, item_index, 0), logits)
        return tf.reduce_sum(tf.where(known, losses, 0.0))

    def example_losses(self, features: dict, negatives: tuple[tf.Tensor, tf.Tensor], training: bool = False) -> tf.Tensor:
        """float32 [batch]: each example's softmax loss over its item and the `negatives` (item indices [S], their
        embeddings [S, dim], constants: embed_negatives), a negative equal to the example's item left out; one
        example's loss reads no other example."""
        negative_items, negative_embeddings = negatives
        # the query tower's attention dropout is off: its random ops would make pfor run them one example at a
        # time; DP-SGD's noise regularises instead
        queries = self.query_tower(features, training=False)
        positive = tf.reduce_sum(queries * self.candidate_tower(features, training=training), axis=1, keepdims=True)
        hit = tf.equal(features[F.ITEM_INDEX][:, tf.newaxis], negative_items[tf.newaxis, :])
        negative = tf.where(hit, -1e9, tf.matmul(queries, negative_embeddings, transpose_b=True))
        logits = tf.concat([positive, negative], axis=1) / self.hp.temperature
        return tf.reduce_logsumexp(logits, axis=1) - logits[:, 0]

    def embed_negatives(self, items: dict, training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        """Candidate inputs of sampled items -> (their item indices, their embeddings as constants): an example's
        gradient then costs one pass over its own query and item, not one over every negative (the item tower is
        spread by public_loss instead)."""
        return items[F.ITEM_INDEX], tf.stop_gradient(self.candidate_tower(items, training=training))

    def public_loss(self, items: dict, training: bool = False) -> tf.Tensor:
        """hp.dp_uniformity x the uniformity of the embeddings of catalog `items` (log of the mean Gaussian potential
        exp(-2 |e_j - e_k|^2) over pairs; Wang & Isola 2020, DirectAU): it keeps the item tower from collapsing
        under DP, where items are pulled only towards their users' queries; it reads no user data, so its
        gradient is added to DP-SGD's without clipping or noise."""
        embeddings = self.candidate_tower(items, training=training)
        distances = tf.reduce_sum(tf.square(embeddings[:, tf.newaxis] - embeddings[tf.newaxis]), axis=-1)
        pairs = tf.cast(tf.shape(embeddings)[0], tf.float32)
        mean = (tf.reduce_sum(tf.exp(-2.0 * distances)) - pairs) / (pairs * (pairs - 1.0))  # j != k
        return self.hp.dp_uniformity * tf.math.log(mean + 1e-12)

    def sample_negatives(self) -> dict:
        """`dp.negatives` items drawn uniformly (with replacement) from the vocabulary: their candidate inputs."""
        items = tf.shape(self.item_table[F.ITEM_INDEX], out_type=tf.int64)[0] - F.NUM_OOV_BUCKETS
        drawn = tf.random.uniform([self.dp.negatives], 0, items, dtype=tf.int64)
        return {name: tf.gather(values, drawn) for name, values in self.item_table.items()}

    def train_step(self, features):
        if self.dp is None:
            return super().train_step(features)
        negatives = self.embed_negatives(self.sample_negatives(), training=True)
        self.example_losses({name: values[:1] for name, values in features.items()}, negatives)  # creates the weights
        variables = self.trainable_variables

        def example_gradient(example: dict):
            with tf.GradientTape() as tape:
                loss = self.example_losses({name: values[tf.newaxis] for name, values in example.items()}, negatives, training=True)[0]
            gradients = tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return [tf.convert_to_tensor(g) for g in gradients], loss  # embedding rows: dense

        summed, losses = None, []
        batch = tf.shape(features[F.ITEM_INDEX])[0]
        for start in range(0, self.dp.batch_size, dp_lib.CHUNK):  # per-example gradients a chunk at a time (memory)
            per_example, loss = tf.vectorized_map(
                example_gradient, {name: values[start : start + dp_lib.CHUNK] for name, values in features.items()}
            )
            clipped = dp_lib.clipped_sum(per_example, self.dp.clip)
            summed = clipped if summed is None else [s + c for s, c in zip(summed, clipped)]
            losses.append(loss)
        with tf.control_dependencies([tf.debugging.assert_equal(batch, self.dp.batch_size, message="DP-SGD needs full batches")]):
            gradients = dp_lib.noisy_mean(summed, self.dp.clip, self.dp.noise_multiplier, self.dp.batch_size)
        with tf.GradientTape() as tape:
            public = self.public_loss(self.sample_negatives(), training=True)
        gradients = [g if p is None else g + p for g, p in zip(gradients, tape.gradient(public, variables))]
        self.optimizer.apply_gradients(zip(gradients, variables))
        return {"loss": tf.reduce_mean(tf.concat(losses, axis=0)), "uniformity": public}

    def test_step(self, features):
        if self.dp is None:
            return super().test_step(features)
        return {"loss": tf.reduce_mean(self.example_losses(features, self.embed_negatives(self.sample_negatives())))}

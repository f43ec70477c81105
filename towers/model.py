"""The two-tower retrieval model: towers + a TFRS Retrieval task with logQ correction."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from towers import features as F
from towers.hparams import HParams
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
    """In-batch softmax retrieval with sampling-bias correction and accidental-hit removal.

    `history_content`: optional content table for the query tower (see towers.HistoryContent).
    `text_encoder`: optional trainable text encoder for the candidate tower (fine-tuning).
    `roles`: the dataset's declared user and item features (towers.features.FeatureRoles).
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
    ):
        super().__init__()
        self.hp = hp
        # the shared content coordinates compare the history's content with the item's: only with a history in the query
        shared = shared_content_projection(hp) if history_content is not None and "history" in hp.query_features else None
        self.query_tower = QueryTower(vocab_sizes, hp, history_content, shared, roles)
        self.candidate_tower = CandidateTower(vocab_sizes, hp, content_dims, text_encoder, shared, roles)
        self.sampling_probability = tf.constant(sampling_probability)
        self.task = tfrs.tasks.Retrieval(temperature=hp.temperature, remove_accidental_hits=True)

    def compute_loss(self, features: dict, training: bool = False) -> tf.Tensor:
        queries = self.query_tower(features, training=training)
        candidates = self.candidate_tower(features, training=training)
        item_index = features[F.ITEM_INDEX]
        probability = tf.gather(self.sampling_probability, item_index) if self.hp.use_logq else None
        return self.task(
            queries,
            candidates,
            candidate_sampling_probability=probability,
            candidate_ids=item_index,
            compute_metrics=False,
            training=training,
        )

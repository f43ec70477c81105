"""Diversity control for `recommend_diverse`: maximal marginal relevance (MMR) and per-category caps.

The ranked candidates (recommend's blended logits) are re-ordered greedily:
each step takes the candidate with the best

    (1 - diversity) * sigmoid(logit) - diversity * max(0, cos(candidate, an item already taken))

(Carbonell & Goldstein's MMR over the candidate embeddings), skipping items of
a category that already holds `max_per_category` taken items while others
remain. `diversity` 0 and `max_per_category` 0 keep recommend's order exactly.
An item's category is the first value of its dataset's first multi-valued or
categorical column (genres, a category path); -1 (unknown, e.g. items added
after training) counts towards no cap.
"""

from __future__ import annotations

import tensorflow as tf

from towers.catalog import UNKNOWN_CATEGORY

CAPPED = 1e6  # subtracted from a capped item's value: taken only when nothing else remains


def rerank(
    logits: tf.Tensor, embeddings: tf.Tensor, categories: tf.Tensor, k: int, diversity: tf.Tensor, max_per_category: tf.Tensor
) -> tf.Tensor:
    """The order in which to show candidates: int32 [batch, k] indices into the candidate axis.

    Args:
      logits: float32 [batch, C] relevance (-inf: excluded: taken last).
      embeddings: float32 [batch, C, dim] candidate embeddings.
      categories: int64 [batch, C] category ids (UNKNOWN_CATEGORY: none).
      k: how many to take (<= C).
      diversity: float32 [batch] in [0, 1], MMR's weight on novelty (0: relevance alone).
      max_per_category: int64 [batch], items per category (0: no cap).
    """
    plain = tf.math.top_k(logits, k=k).indices
    excluded = tf.math.is_inf(logits)
    relevance = tf.where(excluded, 0.0, tf.sigmoid(logits))
    unit = tf.math.l2_normalize(embeddings, axis=-1)
    similarity = tf.einsum("bcd,bed->bce", unit, unit)  # [batch, C, C]
    known = categories != UNKNOWN_CATEGORY
    same = tf.logical_and(tf.equal(categories[:, :, tf.newaxis], categories[:, tf.newaxis, :]), known[:, :, tf.newaxis])
    weight = tf.clip_by_value(diversity, 0.0, 1.0)[:, tf.newaxis]
    cap = max_per_category[:, tf.newaxis]
    taken = tf.zeros_like(logits, tf.bool)
    nearest = tf.zeros_like(logits)  # max(0, similarity to a taken item)
    order = []
    for _ in range(k):
        value = (1.0 - weight) * relevance - weight * nearest
        count = tf.reduce_sum(tf.cast(tf.logical_and(same, taken[:, tf.newaxis, :]), tf.int64), axis=-1)
        capped = tf.logical_and(cap > 0, count >= cap)
        value -= CAPPED * tf.cast(capped, tf.float32) + 2 * CAPPED * tf.cast(excluded, tf.float32)
        pick = tf.argmax(tf.where(taken, -float("inf"), value), axis=-1, output_type=tf.int32)
        taken = tf.logical_or(taken, tf.one_hot(pick, tf.shape(logits)[1], on_value=True, off_value=False))
        nearest = tf.maximum(nearest, tf.gather(similarity, pick, axis=2, batch_dims=1))
        order.append(pick)
    diverse = tf.stack(order, axis=1)
    off = tf.logical_and(diversity <= 0.0, max_per_category <= 0)[:, tf.newaxis]
    return tf.where(off, plain, diverse)

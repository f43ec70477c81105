"""Retrieval metrics with one relevant item per query, in TensorFlow.

One definition serves the exported model's `evaluate` signature (read by TFMA)
and the most-popular baseline, so both are scored identically.
"""

from __future__ import annotations

import tensorflow as tf

RECALL_KS = (10, 50, 100)
NDCG_K = 10


def recall_name(k: int) -> str:
    return f"recall_at_{k}"


def ndcg_name(k: int) -> str:
    return f"ndcg_at_{k}"


METRIC_NAMES = tuple(recall_name(k) for k in RECALL_KS) + (ndcg_name(NDCG_K),)


def retrieval_metrics(top_ids: tf.Tensor, true_ids: tf.Tensor) -> dict[str, tf.Tensor]:
    """Per-query hit and NDCG for a ranked list with one relevant item.

    Recall@K is 1 if the held-out item is among the first K recommendations
    (averaged over queries this is Recall@K = HitRate@K). NDCG@K is
    1 / log2(rank + 2) for a 0-based rank < K, else 0 (the ideal DCG is 1).

    Args:
      top_ids: [batch, K_max] recommended ids, best first; K_max >= max(RECALL_KS).
      true_ids: [batch] the held-out id of each query.
    Returns:
      metric name -> float32 [batch].
    """
    matches = tf.cast(tf.equal(top_ids, tf.expand_dims(true_ids, 1)), tf.float32)  # [batch, K_max]
    out = {recall_name(k): tf.reduce_max(matches[:, :k], axis=1) for k in RECALL_KS}
    ranks = tf.range(NDCG_K, dtype=tf.float32)
    gains = 1.0 / (tf.math.log(ranks + 2.0) / tf.math.log(2.0))
    out[ndcg_name(NDCG_K)] = tf.reduce_sum(matches[:, :NDCG_K] * gains, axis=1)
    return out

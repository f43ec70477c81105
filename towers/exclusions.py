"""Which items not to recommend to whom: (query row, catalog position) pairs [n, 2].

The pairs come from each user's training items (SeenItems), the query's
history and, in evaluation, every item the user had seen before the event.
Brute force applies them to the full score matrix (`mask_scores`); an index
search tests its candidates against them (`is_excluded`).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

EXCLUDED_SCORE = tf.float32.min  # the score of an excluded item: last, unless fewer than k remain


class SeenItems(tf.Module):
    """Each user's training items (catalog positions), a ragged table by user index.

    Args:
      seen_positions: one list of catalog positions per user index (the last row, for OOV users, is empty).

    Attributes:
      seen_values: int64 [total] catalog positions, user after user.
      seen_row_splits: int64 [users + 1] where each user's positions start.
      longest: the most items any user has.
    """

    def __init__(self, seen_positions: list[list[int]]):
        super().__init__()
        lengths = [len(row) for row in seen_positions]
        values = np.concatenate([np.asarray(row, np.int64) for row in seen_positions]) if sum(lengths) else np.zeros([0], np.int64)
        self.seen_values = tf.Variable(values, trainable=False, name="seen_values")
        self.seen_row_splits = tf.Variable(
            np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), trainable=False, name="seen_row_splits"
        )
        self.longest = max(lengths, default=0)

    def pairs(self, user_index: tf.Tensor) -> tf.Tensor:
        """int64 [n, 2] (row, catalog position): the training items of each query's user, for `user_index` int64 [batch]."""
        seen = tf.RaggedTensor.from_row_splits(self.seen_values, self.seen_row_splits)
        rows = tf.gather(seen, user_index)  # [batch, None] catalog positions
        return tf.stack([rows.value_rowids(), rows.values], axis=1)


def item_pairs(items: tf.SparseTensor, positions: tf.Tensor) -> tf.Tensor:
    """(row, catalog position) pairs of the items of a sparse list, those in the catalog only.

    Args:
      items: string [batch, None] sparse item ids (e.g. the history).
      positions: int64 [nnz] the catalog position of each of `items.values` (-1: not in the catalog).

    Returns:
      int64 [n, 2].
    """
    known = positions >= 0
    return tf.stack([tf.boolean_mask(items.indices[:, 0], known), tf.boolean_mask(positions, known)], axis=1)


def for_rows(pairs: tf.Tensor, rows: tf.Tensor) -> tf.Tensor:
    """The pairs [n, 2] whose row is True in `rows` bool [batch] (e.g. recommend's exclude_seen) -> [m, 2]."""
    return tf.boolean_mask(pairs, tf.gather(rows, pairs[:, 0]))


def mask_scores(scores: tf.Tensor, pairs: tf.Tensor) -> tf.Tensor:
    """float32 [batch, N] `scores` with EXCLUDED_SCORE at each (row, position) of `pairs` [n, 2] (repeats allowed)."""
    mask = tf.scatter_nd(pairs, tf.ones_like(pairs[:, 0], tf.float32), tf.shape(scores, out_type=tf.int64))
    return tf.where(mask > 0, EXCLUDED_SCORE, scores)


def is_excluded(positions: tf.Tensor, pairs: tf.Tensor, num_items: tf.Tensor) -> tf.Tensor:
    """Whether positions[b, m] is among the (row, position) pairs for row b.

    Per row, the excluded positions are sorted and searched (batch x M x log n work, not M x n).

    Args:
      positions: int64 [batch, M] catalog positions.
      pairs: int64 [n, 2] (row, position) pairs, any order.
      num_items: int64 scalar, more than any position.

    Returns:
      bool [batch, M].
    """
    batch = tf.shape(positions, out_type=tf.int64)[0]
    pairs = tf.gather(pairs, tf.argsort(pairs[:, 0] * num_items + pairs[:, 1]))
    rows = tf.RaggedTensor.from_value_rowids(pairs[:, 1], pairs[:, 0], nrows=batch)
    sentinel = tf.fill([batch, 1], tf.int64.max)
    sorted_positions = tf.concat([rows.to_tensor(default_value=tf.int64.max), sentinel], axis=1)
    found = tf.searchsorted(sorted_positions, positions)
    return tf.equal(tf.gather(sorted_positions, found, batch_dims=1), positions)

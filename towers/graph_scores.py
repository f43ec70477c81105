"""The item graph as served: each catalog item's neighbours and edge weights, and the candidates' scores on it.

components.item_graph builds the graph (co-occurrence, content and attribute
edges, one kind per source); recommend scores each candidate by its edges to
the user's latest history items (`graph_scores`), per edge kind.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from towers.tables import growable


def graph_scores(
    recent: tf.Tensor, positions: tf.Tensor, neighbours: tf.Tensor, weights: tf.Tensor, kinds: tf.Tensor, num_kinds: int, length
) -> tf.Tensor:
    """Per candidate and edge kind, the summed weights of the candidate's edges to the user's last `length` history
    items, divided by the largest over the row's candidates (so in [0, 1]).

    Args:
      recent: int64 [batch, L] catalog positions of the history, oldest first (-1: padding or not in the catalog).
      positions: int64 [batch, C] the candidates' catalog positions.
      neighbours: int64 [N, K] each item's neighbours (-1: none).
      weights: float32 [N, K] their edge weights.
      kinds: int64 [K] the edge kind of each column.
      num_kinds: how many edge kinds.
      length: int scalar, how many of the latest history items count.

    Returns:
      float32 [batch, C, num_kinds].
    """
    known = recent >= 0
    from_end = tf.cumsum(tf.cast(known, tf.int64), axis=1, reverse=True)  # 1 = the latest known item
    recent = tf.where(known & (from_end <= length), recent, -2)  # -2 matches no neighbour (-1 pads them)
    rows = tf.maximum(positions, 0)
    linked = tf.reduce_any(tf.equal(tf.gather(neighbours, rows)[..., None], recent[:, None, None, :]), axis=-1)  # [batch, C, K]
    linked_weights = tf.where(linked, tf.gather(weights, rows), 0.0)
    per_kind = tf.transpose(tf.math.unsorted_segment_sum(tf.transpose(linked_weights, [2, 0, 1]), kinds, num_kinds), [1, 2, 0])
    return tf.math.divide_no_nan(per_kind, tf.reduce_max(per_kind, axis=1, keepdims=True))


class GraphTables(tf.Module):
    """The graph's rows by catalog position (growable with the catalog).

    Args:
      num_items: catalog size N.
      neighbours: int64 [N, K] catalog positions (-1: none), or None: no graph.
      weights: float32 [N, K] edge weights, or None.
      kinds: int [K] edge kind per column, or None.

    Attributes:
      neighbours: int64 variable [N, K] (`graph_neighbours`; K = 0 without a graph).
      weights: float32 variable [N, K] (`graph_weights`).
      kinds: int64 constant [K].
      num_kinds: the number of edge kinds (max kind + 1; 0 without a graph).
    """

    def __init__(self, num_items: int, neighbours=None, weights=None, kinds=None):
        super().__init__()
        kinds = np.zeros([0], np.int64) if kinds is None else np.asarray(kinds, np.int64)
        self.num_kinds = int(kinds.max(initial=-1)) + 1
        width = len(kinds)
        self.neighbours = growable(
            np.full([num_items, 0], -1, np.int64) if not width else np.asarray(neighbours, np.int64), "graph_neighbours"
        )
        self.weights = growable(np.zeros([num_items, 0], np.float32) if not width else np.asarray(weights, np.float32), "graph_weights")
        self.kinds = tf.constant(kinds)

    def scores(self, recent: tf.Tensor, positions: tf.Tensor, length) -> tf.Tensor:
        """graph_scores [batch, C, num_kinds] of candidates at `positions` [batch, C] given the history's positions `recent` [batch, L]."""
        return graph_scores(recent, positions, self.neighbours.value(), self.weights.value(), self.kinds, self.num_kinds, length)

    def append_unlinked(self, count: tf.Tensor) -> None:
        """Appends `count` (int64 scalar) rows without edges: an added item is ranked by the ranker alone."""
        width = tf.shape(self.neighbours, out_type=tf.int64)[1]
        self.neighbours.assign(tf.concat([self.neighbours, tf.fill([count, width], tf.constant(-1, tf.int64))], 0))
        self.weights.assign(tf.concat([self.weights, tf.zeros([count, width])], 0))

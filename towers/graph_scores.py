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
      neighbours: int [R, K] the first R items' neighbours (-1: none); items at positions >= R have no edges.
      weights: float32 [R, K] their edge weights.
      kinds: int64 [K] the edge kind of each column.
      num_kinds: how many edge kinds.
      length: int scalar, how many of the latest history items count.

    Returns:
      float32 [batch, C, num_kinds].
    """
    known = recent >= 0
    from_end = tf.cumsum(tf.cast(known, tf.int64), axis=1, reverse=True)  # 1 = the latest known item
    recent = tf.where(known & (from_end <= length), recent, -2)  # -2 matches no neighbour (-1 pads them)
    table_rows = tf.shape(neighbours, out_type=tf.int64)[0]
    in_table = (positions >= 0) & (positions < table_rows)  # items added after training have no row, so no edges
    rows = tf.clip_by_value(positions, 0, tf.maximum(table_rows - 1, 0))
    candidates = tf.cast(tf.gather(neighbours, rows), tf.int64)  # [batch, C, K]
    linked = tf.reduce_any(tf.equal(candidates[..., None], recent[:, None, None, :]), axis=-1) & in_table[..., None]
    linked_weights = tf.where(linked, tf.gather(weights, rows), 0.0)
    per_kind = tf.transpose(tf.math.unsorted_segment_sum(tf.transpose(linked_weights, [2, 0, 1]), kinds, num_kinds), [1, 2, 0])
    return tf.math.divide_no_nan(per_kind, tf.reduce_max(per_kind, axis=1, keepdims=True))


class GraphTables(tf.Module):
    """The graph's rows by catalog position, for the items the graph was built on.

    Items appended to the catalog later (add-items) have no edges and get no row: the tables do not grow with
    the catalog (at a million added items, dense empty rows of 60 edges took 687 MiB of a 1 GiB SavedModel).
    Neighbours are stored as int32 (catalog positions < 2^31): half the bytes of int64, exactly.

    Args:
      num_items: catalog size N.
      neighbours: int [N, K] catalog positions (-1: none), or None: no graph.
      weights: float32 [N, K] edge weights, or None.
      kinds: int [K] edge kind per column, or None.

    Attributes:
      neighbours: int32 variable [N, K] (`graph_neighbours`; K = 0 without a graph).
      weights: float32 variable [N, K] (`graph_weights`).
      kinds: int64 constant [K].
      num_kinds: the number of edge kinds (max kind + 1; 0 without a graph).
    """

    def __init__(self, num_items: int, neighbours=None, weights=None, kinds=None):
        super().__init__()
        kinds = np.zeros([0], np.int64) if kinds is None else np.asarray(kinds, np.int64)
        self.num_kinds = int(kinds.max(initial=-1)) + 1
        width = len(kinds)
        if width and num_items >= np.iinfo(np.int32).max:
            raise ValueError(f"{num_items:,} items: graph neighbours are stored as int32 catalog positions")
        self.neighbours = growable(
            np.full([num_items, 0], -1, np.int32) if not width else np.asarray(neighbours, np.int32), "graph_neighbours"
        )
        self.weights = growable(np.zeros([num_items, 0], np.float32) if not width else np.asarray(weights, np.float32), "graph_weights")
        self.kinds = tf.constant(kinds)

    def scores(self, recent: tf.Tensor, positions: tf.Tensor, length) -> tf.Tensor:
        """graph_scores [batch, C, num_kinds] of candidates at `positions` [batch, C] given the history's positions `recent` [batch, L]."""
        return graph_scores(recent, positions, self.neighbours.value(), self.weights.value(), self.kinds, self.num_kinds, length)

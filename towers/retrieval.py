"""Retrieval: the top k catalog items for query embeddings, by brute force or from a ScaNN index.

Brute force scores every item (runs on the stock TF Serving image). A ScaNN
index (towers.scann_index, needs the ScaNN-enabled image) covers the rows the
catalog had when it was built; rows added later (add_items) are scored by
brute force until the index is rebuilt. Excluded items score EXCLUDED_SCORE.
"""

from __future__ import annotations

import tensorflow as tf

from towers.catalog import Catalog
from towers.catalog import scores as catalog_scores
from towers.exclusions import EXCLUDED_SCORE, is_excluded, mask_scores
from towers.hparams import INDEXES, SCANN

EXCLUSION_SLACK = 50  # ScaNN returns the most training items a user has + this many more than asked


def top_k(scores: tf.Tensor, k) -> tuple[tf.Tensor, tf.Tensor]:
    """The `k` best of `scores` float32 [batch, N] -> (scores float32 [batch, k], positions int64 [batch, k]), best first."""
    top_scores, top_positions = tf.math.top_k(scores, k=k)
    return top_scores, tf.cast(top_positions, tf.int64)


def brute_force(
    queries: tf.Tensor, embeddings: tf.Tensor, exclude: tf.Tensor, k: int, new_items: int = 0, is_new: tf.Tensor | None = None
) -> tuple[tf.Tensor, tf.Tensor]:
    """Scores every item; the top `k` (+ the best `new_items` new items outside them).

    Args:
      queries: float32 [batch, dim].
      embeddings: [N, dim] the catalog's candidate embeddings (float32 or bfloat16: towers.catalog.scores).
      exclude: int64 [n, 2] (row, position) pairs not to return (they score EXCLUDED_SCORE).
      k: how many items.
      new_items: how many new items to add after the top `k` (0: none).
      is_new: bool [N] which items are new (needed when new_items > 0).

    Returns:
      (scores float32 [batch, k + new_items], catalog positions int64 [batch, k + new_items]);
      a new item already in the top k scores EXCLUDED_SCORE in the added part.
    """
    scores = mask_scores(catalog_scores(queries, embeddings), exclude)  # [batch, N]
    top_scores, top_positions = top_k(scores, k)
    if not new_items:
        return top_scores, top_positions
    return with_new_items(scores, top_scores, top_positions, is_new, new_items)


def with_new_items(
    scores: tf.Tensor, top_scores: tf.Tensor, top_positions: tf.Tensor, is_new: tf.Tensor, count: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """Appends the best `count` new items to a top-k list.

    Args:
      scores: float32 [batch, N] every item's score.
      top_scores, top_positions: [batch, k] the top k.
      is_new: bool [N].
      count: how many new items.

    Returns:
      (scores, positions) [batch, k + count]; a new item already in the top k scores EXCLUDED_SCORE where repeated.
    """
    new_scores, new_positions = top_k(tf.where(is_new[None, :], scores, EXCLUDED_SCORE), count)
    repeated = tf.reduce_any(tf.equal(new_positions[:, :, None], top_positions[:, None, :]), axis=-1)
    return (
        tf.concat([top_scores, tf.where(repeated, EXCLUDED_SCORE, new_scores)], axis=1),
        tf.concat([top_positions, new_positions], axis=1),
    )


class Retriever(tf.Module):
    """Top-k over a Catalog: brute force, or a ScaNN index over the rows it had + brute force over rows added since.

    Args:
      catalog: the catalog searched.
      index: BRUTE_FORCE or SCANN.
      searcher_k: the k the ScaNN searcher is built for.
      most_excluded: the most training items a user has (ScaNN asks for that many more + EXCLUSION_SLACK).

    Attributes:
      index_type: string variable, `index`.
      indexed_items: int64 variable: catalog rows [0, indexed_items) are in the ScaNN index; later rows are
        scored by brute force (0: every row is, the benchmarks' exact reference).
      scann_index: towers.scann_index.ScannIndex, or None (brute force).
      initially_indexed: the rows the searcher was built on.
      exclusion_margin: how many more candidates ScaNN returns than asked.
    """

    def __init__(self, catalog: Catalog, index: str, searcher_k: int, most_excluded: int = 0):
        super().__init__()
        if index not in INDEXES:
            raise ValueError(f"index must be one of {INDEXES}, got {index!r}")
        self.catalog = catalog
        embeddings = tf.cast(catalog.embeddings, tf.float32).numpy()
        self.index_type = tf.Variable(index, trainable=False, name="index_type")
        self.indexed_items = tf.Variable(len(embeddings) if index == SCANN else 0, dtype=tf.int64, trainable=False, name="indexed_items")
        self.scann_index = None
        self.initially_indexed = 0
        self.exclusion_margin = 0
        if index == SCANN:
            from towers import scann_index

            self.scann_index = scann_index.ScannIndex(scann_index.build_searcher(embeddings, searcher_k))
            self.initially_indexed = len(embeddings)
            self.exclusion_margin = most_excluded + EXCLUSION_SLACK

    def top_k(self, queries: tf.Tensor, exclude: tf.Tensor, k: int, new_items: int = 0) -> tuple[tf.Tensor, tf.Tensor]:
        """The top `k` items for each query, best first.

        Args:
          queries: float32 [batch, dim].
          exclude: int64 [n, 2] (row, position) pairs not to return.
          k: how many items (at most the catalog size at export).
          new_items: brute force only: how many new items follow the top k (see brute_force).

        Returns:
          (scores float32 [batch, k (+ new_items)], catalog positions int64 [batch, k (+ new_items)]).
        """
        if self.scann_index is None:
            is_new = self.catalog.new_items() if new_items else None
            return brute_force(queries, self.catalog.embeddings.value(), exclude, k, new_items, is_new)
        scores, positions = self._index_candidates(queries, k + self.exclusion_margin)
        excluded = is_excluded(positions, exclude, self.catalog.size())
        top_scores, order = tf.math.top_k(tf.where(excluded, EXCLUDED_SCORE, scores), k=k)
        return top_scores, tf.gather(positions, order, batch_dims=1)

    def _index_candidates(self, queries: tf.Tensor, k: int) -> tuple[tf.Tensor, tf.Tensor]:
        """ScaNN's top `k` of the indexed rows + the exact top `k` of the rows added since.

        Returns:
          (scores float32 [batch, >= k], catalog positions int64 [batch, >= k]), padded with
          EXCLUDED_SCORE when the catalog has fewer than k items.
        """
        indexed = tf.minimum(self.indexed_items, self.catalog.size())
        ann_scores, ann_positions = self._search_index(queries, k, indexed)
        added = self.catalog.embeddings[indexed:]
        added_scores, added_order = tf.math.top_k(catalog_scores(queries, added), k=tf.minimum(k, tf.shape(added)[0]))
        scores = tf.concat([ann_scores, added_scores], axis=1)
        positions = tf.concat([ann_positions, indexed + tf.cast(added_order, tf.int64)], axis=1)
        missing = tf.maximum(k - tf.shape(scores)[1], 0)
        return tf.pad(scores, [[0, 0], [0, missing]], constant_values=EXCLUDED_SCORE), tf.pad(positions, [[0, 0], [0, missing]])

    def _search_index(self, queries: tf.Tensor, k: int, indexed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """ScaNN's top `k` -> (scores, positions) [batch, <= k]; [batch, 0] when `indexed` is 0 (the index off)."""
        batch = tf.shape(queries)[0]

        def search():
            positions, scores = self.scann_index.search(queries, min(k, self.initially_indexed))
            return scores, tf.cast(positions, tf.int64)

        return tf.cond(indexed > 0, search, lambda: (tf.zeros([batch, 0]), tf.zeros([batch, 0], tf.int64)))

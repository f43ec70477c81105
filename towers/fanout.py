"""recommend's second stage: rank the retrieved candidates, blend with the item graph and the new-item boost.

Each candidate's blended logit is the ranking model's engagement logit
+ graph_mix . its item-graph scores (edges to the user's last `graph_history`
history items, towers.graph_scores) + new_item_boost if the item has no
training interactions (components.item_graph.blend computes the same). The
Trainer chooses graph_mix, graph_history and new_item_boost on validation.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from towers import features as F
from towers.catalog import Catalog
from towers.contract import ITEM_IDS_OUTPUT, PREDICTED_RATINGS_OUTPUT, RETRIEVAL_SCORES_OUTPUT, SCORES_OUTPUT
from towers.diversity import rerank
from towers.exclusions import EXCLUDED_SCORE
from towers.graph_scores import GraphTables
from towers.ranking import ENGAGEMENT_LOGIT, ENGAGEMENT_OUTPUT, LIKE_OUTPUT, RATING_OUTPUT

GRAPH_HISTORY = 5  # the default history length for item-graph scores (the Trainer chooses it on validation)
RANKED_OUTPUTS = (ENGAGEMENT_LOGIT, ENGAGEMENT_OUTPUT, LIKE_OUTPUT, RATING_OUTPUT)  # what `rank` returns
POSITIONS = "positions"  # top's catalog positions of the items it returns


class RankingFanout(tf.Module):
    """Ranks catalog items for queries and orders retrieved candidates by the blended logit.

    Args:
      ranker: towers.ranking.RankingModel (or any callable with its inputs and outputs).
      catalog: the catalog the positions refer to.
      graph: the item graph's rows, by catalog position.
      ranking_candidates: how many retrieved items recommend ranks (its lists are at most this long).
      new_item_candidates: how many new items are ranked beside them (0: none).

    Attributes:
      graph_mix: float32 variable [graph.num_kinds], the weight of each edge kind's score.
      graph_history: int64 variable, how many of the latest history items the graph scores count.
      new_item_boost: float32 variable, added to a new item's logit.
    """

    def __init__(self, ranker, catalog: Catalog, graph: GraphTables, ranking_candidates: int, new_item_candidates: int = 0):
        super().__init__()
        self.ranker = ranker
        self.catalog = catalog
        self.graph = graph
        self.ranking_candidates = ranking_candidates
        self.new_item_candidates = new_item_candidates
        self.graph_mix = tf.Variable(np.zeros([graph.num_kinds], np.float32), trainable=False, name="graph_mix")
        self.graph_history = tf.Variable(GRAPH_HISTORY, dtype=tf.int64, trainable=False, name="graph_history")
        self.new_item_boost = tf.Variable(0.0, trainable=False, name="new_item_boost")

    def rank(self, transformed: dict, queries: tf.Tensor, positions: tf.Tensor) -> dict:
        """The ranker's outputs for catalog items.

        Args:
          transformed: transformed query features (F.USER_INDEX [batch], F.TIME_CONTEXT [batch, 4]).
          queries: float32 [batch, dim] query embeddings.
          positions: int64 [batch, M] catalog positions (-1: not in the catalog, scores 0).

        Returns:
          RANKED_OUTPUTS name -> float32 [batch, M].
        """
        batch, width = tf.shape(positions)[0], tf.shape(positions)[1]
        known = positions >= 0

        def repeat(tensor):
            return tf.repeat(tensor, width, axis=0)

        inputs = {
            F.USER_INDEX: repeat(transformed[F.USER_INDEX]),
            F.TIME_CONTEXT: repeat(transformed[F.TIME_CONTEXT]),
            F.QUERY_EMBEDDING: repeat(queries),
            **self.catalog.ranker_inputs(tf.reshape(tf.maximum(positions, 0), [-1])),
        }
        outputs = self.ranker(inputs)
        return {name: tf.where(known, tf.reshape(outputs[name], [batch, width]), 0.0) for name in RANKED_OUTPUTS}

    def parts(self, transformed: dict, queries: tf.Tensor, retrieved: tuple, history: tf.SparseTensor, lengths) -> dict:
        """Ranks the retrieved candidates and scores them on the item graph: what `top` blends.

        Args:
          transformed, queries: as `rank`.
          retrieved: (retrieval scores float32 [batch, C], catalog positions int64 [batch, C]), excluded
            candidates scoring EXCLUDED_SCORE.
          history: string [batch, None] sparse, the queries' history item ids, oldest first.
          lengths: history lengths to score the graph with (int scalars).

        Returns:
          positions [batch, C], retrieval_scores [batch, C], is_new bool [batch, C] (no training
          interactions), ranked (RANKED_OUTPUTS name -> [batch, C]), graph (per length, [batch, C, kinds]).
        """
        retrieval_scores, positions = retrieved
        recent = self.catalog.lookup(tf.sparse.to_dense(history, default_value=""))  # [batch, L], -1: padding or unknown
        return {
            "positions": positions,
            "retrieval_scores": retrieval_scores,
            "is_new": self.catalog.is_new(positions),
            "ranked": self.rank(transformed, queries, positions),
            "graph": [self.graph.scores(recent, positions, length) for length in lengths],
        }

    def blend(self, logits: tf.Tensor, graph: tf.Tensor, is_new: tf.Tensor) -> tf.Tensor:
        """The ranker's `logits` [batch, C] + graph_mix . `graph` [batch, C, kinds] + new_item_boost where `is_new` [batch, C]."""
        blended = logits + tf.linalg.matvec(graph, self.graph_mix)
        blended += self.new_item_boost * tf.cast(is_new, tf.float32)
        return blended

    def top(self, parts: dict, k: int, diversity: tf.Tensor | None = None, max_per_category: tf.Tensor | None = None) -> dict:
        """The best `k` candidates of `parts` (the first graph length) by blended logit, as recommend returns them;
        with `diversity` float32 [batch] and `max_per_category` int64 [batch], in towers.diversity's MMR order.

        Returns:
          ITEM_IDS_OUTPUT string, SCORES_OUTPUT (sigmoid of the blended logit), PREDICTED_RATINGS_OUTPUT,
          RETRIEVAL_SCORES_OUTPUT [batch, min(k, ranking_candidates)], and POSITIONS: the items' catalog positions
          (not a signature output). Excluded candidates come last.
        """
        positions, retrieval_scores, ranked = parts["positions"], parts["retrieval_scores"], parts["ranked"]
        excluded = retrieval_scores <= EXCLUDED_SCORE  # only when fewer than ranking_candidates remain
        logits = self.blend(ranked[ENGAGEMENT_LOGIT], parts["graph"][0], parts["is_new"])
        logits = tf.where(excluded, -np.inf, logits)
        count = min(k, self.ranking_candidates)
        if diversity is None:
            top_logits, order = tf.math.top_k(logits, k=count)
        else:
            embeddings = self.catalog.embeddings_at(positions)
            categories = tf.gather(self.catalog.categories.value(), positions)
            order = rerank(logits, embeddings, categories, count, diversity, max_per_category)
            top_logits = tf.gather(logits, order, batch_dims=1)
        pick = lambda tensor: tf.gather(tensor, order, batch_dims=1)
        return {
            POSITIONS: pick(positions),
            ITEM_IDS_OUTPUT: self.catalog.ids_at(pick(positions)),
            SCORES_OUTPUT: tf.sigmoid(top_logits),  # ordered by the logit (the sigmoid saturates), or by MMR
            PREDICTED_RATINGS_OUTPUT: pick(ranked[RATING_OUTPUT]),
            RETRIEVAL_SCORES_OUTPUT: pick(retrieval_scores),
        }

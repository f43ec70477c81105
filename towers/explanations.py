"""Why `recommend` chose each item: the history items closest to it, and the modality mix of its representation.

For each recommended item (catalog position) and the query's history:

- `because_items` / `because_scores` [batch, K, EXPLAIN_ITEMS]: the history
  items whose candidate embedding scores highest against the recommended
  item's (dot product in the model's item space: the items the user had that
  the model places nearest to it), best first; '' and 0 where the history has
  fewer known items;
- `modality_weights` [batch, K, M] and `modalities` [batch, M]: the fusion
  gate's weights over the item's modalities (towers.towers.CandidateTower:
  id, metadata, text, image, audio, video, those the model has). They are the
  exact shares of each modality in the gated sum that feeds the item MLP; they
  approximate the modalities' shares in the score, which also passes through
  that MLP and the content-similarity coordinates. An item unseen in training
  has no id representation, so its id weight is exactly 0.
"""

from __future__ import annotations

import tensorflow as tf

from towers.catalog import Catalog
from towers.contract import BECAUSE_ITEMS_OUTPUT, BECAUSE_SCORES_OUTPUT, MODALITIES_OUTPUT, MODALITY_WEIGHTS_OUTPUT

EXPLAIN_ITEMS = 3  # history items named per recommended item


def explain(catalog: Catalog, modalities: tf.Tensor, positions: tf.Tensor, history: tf.Tensor) -> dict:
    """The explanation outputs (see the module) for recommended catalog `positions` int64 [batch, K].

    Args:
      catalog: the catalog the positions refer to (its embeddings and, if it has them, modality weights).
      modalities: string [M], the names of the modality weights' columns.
      positions: int64 [batch, K], all >= 0.
      history: string [batch, H], the query's history item ids ('' pads).
    """
    recommended = catalog.embeddings_at(positions)  # [batch, K, dim]
    known = catalog.lookup(history)  # [batch, H], -1: padding or not in the catalog
    past = catalog.embeddings_at(tf.maximum(known, 0))  # [batch, H, dim]
    scores = tf.einsum("bkd,bhd->bkh", recommended, past)
    scores = tf.where((known >= 0)[:, tf.newaxis, :], scores, -float("inf"))
    batch, k = tf.shape(positions)[0], tf.shape(positions)[1]
    padding = tf.fill([batch, k, EXPLAIN_ITEMS], -float("inf"))  # at least EXPLAIN_ITEMS columns to pick from
    best, order = tf.math.top_k(tf.concat([scores, padding], axis=-1), k=EXPLAIN_ITEMS)
    ids = tf.concat([history, tf.fill([batch, EXPLAIN_ITEMS], "")], axis=-1)  # [batch, H + E]
    picked = tf.gather(ids, order, batch_dims=1)
    found = tf.math.is_finite(best)
    out = {
        BECAUSE_ITEMS_OUTPUT: tf.where(found, picked, ""),
        BECAUSE_SCORES_OUTPUT: tf.where(found, best, 0.0),
    }
    if catalog.modality_weights is not None:
        out[MODALITY_WEIGHTS_OUTPUT] = tf.gather(catalog.modality_weights.value(), positions)
        out[MODALITIES_OUTPUT] = tf.tile(modalities[tf.newaxis], [batch, 1])
    return out

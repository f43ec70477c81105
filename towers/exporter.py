"""Every serving signature of the retrieval SavedModel, in one module.

The exported module carries the Transform graph, the query tower and the
embeddings of the whole catalog, and scores all items by brute force:

- `serving_default(examples)`: serialized tf.Example with the raw query
  features -> `item_ids` [batch, K] and `scores` [batch, K];
- `query(user_id, timestamp, <user attributes the dataset has>, history)`:
  the same from raw tensors [batch] (history: item ids [batch, None], '' pads);
- `embed_candidates(examples)`: serialized item tf.Examples (item features +
  the content embeddings the model uses, e.g. `text_embedding`) ->
  `embeddings` [batch, dim] and `modality_weights` [batch, M] (order:
  `candidate_tower.modalities`);
- `evaluate(examples)`: serialized eval examples (query features + the
  held-out `item_id`) -> per-example recall@10/50/100 and ndcg@10 (read by TFMA).

Items the user is known to have interacted with (in training, or in the
`history` the query carries) are never recommended to them again.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from towers import features as F
from towers import metrics

SERVING_DEFAULT = "serving_default"
QUERY_SIGNATURE = "query"
EMBED_SIGNATURE = "embed_candidates"
EVALUATE_SIGNATURE = "evaluate"
EXAMPLES_INPUT = "examples"
ITEM_IDS_OUTPUT = "item_ids"
SCORES_OUTPUT = "scores"
EMBEDDINGS_OUTPUT = "embeddings"
MODALITY_WEIGHTS_OUTPUT = "modality_weights"


def _feature_spec(raw_spec: dict, names) -> dict:
    """The entries of `raw_spec` among `names` (a dataset declares a subset of the optional features)."""
    return {name: raw_spec[name] for name in names if name in raw_spec}


class RetrievalModule(tf.Module):
    """Brute-force top-K retrieval over the full catalog, with per-user exclusions.

    Args:
      tft_layer: `TFTransformOutput.transform_features_layer()`.
      query_tower: maps transformed query features to [batch, dim].
      candidate_tower: maps transformed item features to [batch, dim].
      raw_feature_spec: raw feature spec from the curated schema.
      catalog_ids: string [N], the candidate item ids.
      catalog_embeddings: float32 [N, dim], candidate_tower output for each.
      seen_positions: one list of catalog positions per user index (the last
        row, for OOV users, is empty): items to exclude for that user.
      k: number of results.
      content_dims: content modality -> embedding size `embed_candidates` takes.
    """

    def __init__(self, tft_layer, query_tower, candidate_tower, raw_feature_spec: dict, catalog_ids, catalog_embeddings, seen_positions: list[list[int]], k: int, content_dims: dict[str, int]):
        super().__init__()
        self.tft_layer = tft_layer
        self.query_tower = query_tower
        self.candidate_tower = candidate_tower
        self.k = min(k, len(catalog_ids))
        self._query_spec = _feature_spec(raw_feature_spec, F.QUERY_FEATURES)
        self._item_spec = _feature_spec(raw_feature_spec, F.ITEM_FEATURES)
        # An item without a content embedding gets zeros: the tower treats that modality as missing.
        self._content_spec = {
            F.CONTENT_EMBEDDINGS[m]: tf.io.FixedLenFeature([dim], tf.float32, default_value=[0.0] * dim) for m, dim in content_dims.items()
        }
        if getattr(candidate_tower, "text_encoder", None) is not None:  # fine-tuned text: the tower reads the text itself
            self._content_spec[F.ITEM_TEXT] = tf.io.FixedLenFeature([], tf.string, default_value="")
        self._eval_spec = _feature_spec(raw_feature_spec, F.QUERY_FEATURES + (F.ITEM_ID,))
        # `query` takes one tensor per query feature: scalars [batch], history [batch, None].
        scalars = [name for name in self._query_spec if name != F.HISTORY]
        inputs = [tf.TensorSpec([None], self._query_spec[name].dtype, name=name) for name in scalars]
        inputs.append(tf.TensorSpec([None, None], tf.string, name=F.HISTORY))

        def query(*tensors):
            raw = {name: tf.expand_dims(value, 1) for name, value in zip(scalars, tensors)}
            raw[F.HISTORY] = tf.sparse.from_dense(tensors[-1])  # '' (padding) is dropped
            return self._top_k(raw)

        self.query = tf.function(query, input_signature=inputs)
        self.catalog_ids = tf.Variable(np.asarray(catalog_ids, dtype=object).astype(bytes), trainable=False, name="catalog_ids")
        self.catalog_positions = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(list(catalog_ids)), tf.range(len(catalog_ids), dtype=tf.int64)),
            default_value=-1,
        )
        self.catalog_embeddings = tf.Variable(np.asarray(catalog_embeddings, np.float32), trainable=False, name="catalog_embeddings")
        lengths = [len(row) for row in seen_positions]
        values = np.concatenate([np.asarray(row, np.int64) for row in seen_positions]) if sum(lengths) else np.zeros([0], np.int64)
        self.seen_values = tf.Variable(values, trainable=False, name="seen_values")
        self.seen_row_splits = tf.Variable(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), trainable=False, name="seen_row_splits")

    def _exclusions(self, user_index: tf.Tensor, history: tf.SparseTensor) -> tf.Tensor:
        """[n, 2] (query row, catalog position) pairs not to recommend: training items + history."""
        seen = tf.RaggedTensor.from_row_splits(self.seen_values, self.seen_row_splits)
        rows = tf.gather(seen, user_index)  # [batch, None] catalog positions
        history_positions = self.catalog_positions.lookup(history.values)
        known = history_positions >= 0
        from_history = tf.stack([tf.boolean_mask(history.indices[:, 0], known), tf.boolean_mask(history_positions, known)], axis=1)
        return tf.concat([tf.stack([rows.value_rowids(), rows.values], axis=1), from_history], axis=0)

    def _top_k(self, raw: dict) -> dict:
        transformed = self.tft_layer(raw)
        queries = self.query_tower(transformed)
        scores = tf.matmul(queries, self.catalog_embeddings, transpose_b=True)  # [batch, N]
        exclude = self._exclusions(transformed[F.USER_INDEX], raw[F.HISTORY])
        mask = tf.scatter_nd(exclude, tf.ones_like(exclude[:, 0], tf.float32), tf.shape(scores, out_type=tf.int64))
        scores = tf.where(mask > 0, tf.float32.min, scores)
        top_scores, top_positions = tf.math.top_k(scores, k=self.k)
        return {ITEM_IDS_OUTPUT: tf.gather(self.catalog_ids, top_positions), SCORES_OUTPUT: top_scores}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
    def serving_default(self, examples):
        raw = tf.io.parse_example(examples, self._query_spec)
        return self._top_k(raw)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
    def embed_candidates(self, examples):
        raw = tf.io.parse_example(examples, {**self._item_spec, **self._content_spec})
        features = {**self.tft_layer({name: raw[name] for name in self._item_spec}), **{name: raw[name] for name in self._content_spec}}
        return {
            EMBEDDINGS_OUTPUT: self.candidate_tower(features),
            MODALITY_WEIGHTS_OUTPUT: self.candidate_tower.modality_weights(features),
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
    def evaluate(self, examples):
        raw = tf.io.parse_example(examples, self._eval_spec)
        top = self._top_k(raw)
        return metrics.retrieval_metrics(top[ITEM_IDS_OUTPUT], tf.squeeze(raw[F.ITEM_ID], 1))


def export(module: RetrievalModule, path: str) -> None:
    """Saves `module` with all four signatures."""
    signatures = {
        SERVING_DEFAULT: module.serving_default,
        QUERY_SIGNATURE: module.query,
        EMBED_SIGNATURE: module.embed_candidates,
        EVALUATE_SIGNATURE: module.evaluate,
    }
    tf.saved_model.save(module, path, signatures=signatures)

"""Every serving signature of the mmtower SavedModel, in one module.

The exported module carries the Transform graph, both retrieval towers, the
ranking model and the embeddings of the whole catalog; retrieval scores all
items by brute force:

- `recommend(<query features>, exclude_seen)`: retrieve the top
  `ranking_candidates`, order them by the ranking model's engagement
  probability -> `item_ids`, `scores` (engagement), `predicted_ratings`,
  `retrieval_scores` [batch, K]. `exclude_seen` [batch] bool: leave out items
  the user interacted with (in training, or in the query's `history`);
- `query(<query features>)`: retrieval alone -> `item_ids`, `scores` [batch, K]
  (query features: user_id, timestamp, the user attributes the dataset has
  [batch]; history: item ids [batch, None], '' pads); seen items excluded;
- `serving_default(examples)`: the same from serialized query tf.Examples;
- `rank(<query features>, item_ids)`: ranking alone for given items [batch, M]
  -> `scores` (engagement), `predicted_ratings` [batch, M] (an item not in the
  catalog scores 0);
- `embed_query(examples)`: serialized query tf.Examples -> `embeddings`
  [batch, dim] (the query tower alone, e.g. for an external ANN index);
- `embed_candidates(examples)`: serialized item tf.Examples (item features +
  the content embeddings the model uses, e.g. `text_embedding`) ->
  `embeddings` [batch, dim] and `modality_weights` [batch, M] (order:
  `candidate_tower.modalities`);
- `evaluate(examples)` / `evaluate_recommend(examples)`: serialized eval
  examples (query features + the held-out `item_id`) -> per-example
  recall@10/50/100, ndcg@10 and the top-10 `item_ids` of retrieval alone /
  of `recommend` (read by the RetrievalEvaluator);
- `rank_examples(examples)`: eval examples -> `engagement`, `like`,
  `predicted_rating` [batch] (the model TFMA evaluates);
- `evaluation_features(examples)`: eval examples -> the `liked` label and the
  slices (item popularity, freshness, modalities; user activity) [batch], from
  the model's own training data (TFMA's preprocessing function).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from towers import features as F
from towers import metrics
from towers.ranking import ENGAGEMENT_OUTPUT, LIKE_OUTPUT, RATING_OUTPUT

SERVING_DEFAULT = "serving_default"
RECOMMEND_SIGNATURE = "recommend"
QUERY_SIGNATURE = "query"
RANK_SIGNATURE = "rank"
EMBED_SIGNATURE = "embed_candidates"
EMBED_QUERY_SIGNATURE = "embed_query"
EVALUATE_SIGNATURE = "evaluate"
EVALUATE_RECOMMEND_SIGNATURE = "evaluate_recommend"
RANK_EXAMPLES_SIGNATURE = "rank_examples"
EVALUATION_FEATURES_SIGNATURE = "evaluation_features"
EXAMPLES_INPUT = "examples"
EXCLUDE_SEEN_INPUT = "exclude_seen"
ITEM_IDS_INPUT = "item_ids"
ITEM_IDS_OUTPUT = "item_ids"
SCORES_OUTPUT = "scores"
PREDICTED_RATINGS_OUTPUT = "predicted_ratings"
RETRIEVAL_SCORES_OUTPUT = "retrieval_scores"
EMBEDDINGS_OUTPUT = "embeddings"
MODALITY_WEIGHTS_OUTPUT = "modality_weights"
UNKNOWN = "unknown"  # slice value of an eval item that is not in the catalog


def _bytes(values) -> np.ndarray:
    """UTF-8 bytes of each string (item ids are often titles: numpy's astype(bytes) only takes ASCII)."""
    return np.array([v if isinstance(v, bytes) else str(v).encode("utf-8") for v in values], dtype=object)


def _feature_spec(raw_spec: dict, names) -> dict:
    """The entries of `raw_spec` among `names` (a dataset declares a subset of the optional features)."""
    return {name: raw_spec[name] for name in names if name in raw_spec}


@dataclass
class CatalogTables:
    """What the serving module knows about each catalog item, by catalog position.

    Attributes:
      ids: item ids [N].
      embeddings: float32 [N, dim] candidate tower output.
      item_index: int64 [N] vocabulary index (the OOV index for items unseen in training).
      content_profile: float32 [N, C] the ranker's content input; None when the model has no content.
      slices: F.ITEM_POPULARITY, F.ITEM_FRESHNESS, F.ITEM_MODALITIES -> str [N].
    """

    ids: list
    embeddings: np.ndarray
    item_index: np.ndarray
    content_profile: np.ndarray | None
    slices: dict


class ServingModule(tf.Module):
    """Brute-force retrieval over the full catalog, ranking, per-user exclusions and evaluation.

    Args:
      tft_layer: `TFTransformOutput.transform_features_layer()`.
      query_tower: maps transformed query features to [batch, dim].
      candidate_tower: maps transformed item features to [batch, dim].
      ranker: towers.ranking.RankingModel.
      raw_feature_spec: raw feature spec from the curated schema.
      catalog: CatalogTables (ids, embeddings and per-item ranking inputs and slices).
      seen_positions: one list of catalog positions per user index (the last
        row, for OOV users, is empty): items to exclude for that user.
      user_activity: str [user rows], the user activity slice of each user index.
      k: number of results.
      ranking_candidates: items `recommend` retrieves for the ranker.
      liked_rating: rating at or above which an interaction is liked.
      content_dims: content modality -> embedding size `embed_candidates` takes.
    """

    def __init__(self, tft_layer, query_tower, candidate_tower, ranker, raw_feature_spec: dict, catalog: "CatalogTables", seen_positions: list[list[int]], user_activity, k: int, ranking_candidates: int, liked_rating: float, content_dims: dict[str, int]):
        super().__init__()
        self.tft_layer = tft_layer
        self.query_tower = query_tower
        self.candidate_tower = candidate_tower
        self.ranker = ranker
        self.k = min(k, len(catalog.ids))
        self.ranking_candidates = min(max(ranking_candidates, self.k), len(catalog.ids))
        # The evaluation signatures score the longest list the metrics need, whatever the serving K
        # (`recommend` lists are at most ranking_candidates long: its Recall@100 is Recall@ranking_candidates).
        self.eval_k = min(max(metrics.RECALL_KS), len(catalog.ids))
        self.liked_rating = liked_rating
        self._query_spec = _feature_spec(raw_feature_spec, F.QUERY_FEATURES)
        self._item_spec = _feature_spec(raw_feature_spec, F.ITEM_FEATURES)
        # An item without a content embedding gets zeros: the tower treats that modality as missing.
        self._content_spec = {
            F.CONTENT_EMBEDDINGS[m]: tf.io.FixedLenFeature([dim], tf.float32, default_value=[0.0] * dim) for m, dim in content_dims.items()
        }
        if getattr(candidate_tower, "text_encoder", None) is not None:  # fine-tuned text: the tower reads the text itself
            self._content_spec[F.ITEM_TEXT] = tf.io.FixedLenFeature([], tf.string, default_value="")
        self._eval_spec = _feature_spec(raw_feature_spec, F.QUERY_FEATURES + (F.ITEM_ID,))
        # Labels are optional here: a missing rating is not engaged (TFMA reports label counts per slice).
        self._labelled_spec = {**self._eval_spec, F.RATING: tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0])}
        self.catalog_ids = tf.Variable(_bytes(catalog.ids), trainable=False, name="catalog_ids")
        self.catalog_positions = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(_bytes(catalog.ids)), tf.range(len(catalog.ids), dtype=tf.int64)),
            default_value=-1,
        )
        self.catalog_embeddings = tf.Variable(np.asarray(catalog.embeddings, np.float32), trainable=False, name="catalog_embeddings")
        self.catalog_item_index = tf.Variable(catalog.item_index, trainable=False, name="catalog_item_index")
        self.catalog_content_profile = None
        if catalog.content_profile is not None:
            self.catalog_content_profile = tf.Variable(catalog.content_profile, trainable=False, name="catalog_content_profile")
        self.catalog_slices = {name: tf.Variable(_bytes(values), trainable=False, name=name) for name, values in catalog.slices.items()}
        self.user_activity = tf.Variable(_bytes(user_activity), trainable=False, name="user_activity")
        lengths = [len(row) for row in seen_positions]
        values = np.concatenate([np.asarray(row, np.int64) for row in seen_positions]) if sum(lengths) else np.zeros([0], np.int64)
        self.seen_values = tf.Variable(values, trainable=False, name="seen_values")
        self.seen_row_splits = tf.Variable(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), trainable=False, name="seen_row_splits")
        self.query = self._query_signature([], self._top_k)
        self.recommend = self._query_signature([tf.TensorSpec([None], tf.bool, name=EXCLUDE_SEEN_INPUT)], self._recommend)
        self.rank = self._query_signature([tf.TensorSpec([None, None], tf.string, name=ITEM_IDS_INPUT)], self._rank_items)

    def _query_signature(self, extra_inputs: list, body):
        """A tf.function taking one tensor per query feature (scalars [batch], history [batch, None]) + `extra_inputs`.

        `body(raw query features, *extra tensors)` computes its outputs.
        """
        scalars = [name for name in self._query_spec if name != F.HISTORY]
        inputs = [tf.TensorSpec([None], self._query_spec[name].dtype, name=name) for name in scalars]
        inputs.append(tf.TensorSpec([None, None], tf.string, name=F.HISTORY))

        def signature(*tensors):
            raw = {name: tf.expand_dims(value, 1) for name, value in zip(scalars, tensors)}
            raw[F.HISTORY] = tf.sparse.from_dense(tensors[len(scalars)])  # '' (padding) is dropped
            return body(raw, *tensors[len(scalars) + 1 :])

        # No autograph: the bodies have no Python control flow to convert (and converting
        # closures re-reads source files, which breaks if they change while a run is going).
        return tf.function(signature, input_signature=inputs + extra_inputs, autograph=False)

    def _exclusions(self, user_index: tf.Tensor, history: tf.SparseTensor) -> tf.Tensor:
        """[n, 2] (query row, catalog position) pairs not to recommend: training items + history."""
        seen = tf.RaggedTensor.from_row_splits(self.seen_values, self.seen_row_splits)
        rows = tf.gather(seen, user_index)  # [batch, None] catalog positions
        history_positions = self.catalog_positions.lookup(history.values)
        known = history_positions >= 0
        from_history = tf.stack([tf.boolean_mask(history.indices[:, 0], known), tf.boolean_mask(history_positions, known)], axis=1)
        return tf.concat([tf.stack([rows.value_rowids(), rows.values], axis=1), from_history], axis=0)

    def _retrieve(self, raw: dict, k: int, exclude_seen=None) -> tuple[dict, tf.Tensor, tf.Tensor, tf.Tensor]:
        """-> (transformed features, queries [batch, dim], top scores [batch, k], top catalog positions [batch, k]).

        Excluded items score float32.min (they come last only when fewer than k remain).
        """
        transformed = self.tft_layer(raw)
        queries = self.query_tower(transformed)
        scores = tf.matmul(queries, self.catalog_embeddings, transpose_b=True)  # [batch, N]
        exclude = self._exclusions(transformed[F.USER_INDEX], raw[F.HISTORY])
        if exclude_seen is not None:
            exclude = tf.boolean_mask(exclude, tf.gather(exclude_seen, exclude[:, 0]))
        mask = tf.scatter_nd(exclude, tf.ones_like(exclude[:, 0], tf.float32), tf.shape(scores, out_type=tf.int64))
        scores = tf.where(mask > 0, tf.float32.min, scores)
        top_scores, top_positions = tf.math.top_k(scores, k=k)
        return transformed, queries, top_scores, tf.cast(top_positions, tf.int64)

    def _top_k(self, raw: dict, k: int | None = None) -> dict:
        _, _, top_scores, top_positions = self._retrieve(raw, k or self.k)
        return {ITEM_IDS_OUTPUT: tf.gather(self.catalog_ids, top_positions), SCORES_OUTPUT: top_scores}

    def _ranking_scores(self, transformed: dict, queries: tf.Tensor, positions: tf.Tensor) -> dict:
        """Ranker outputs for catalog `positions` [batch, M] (-1: not in the catalog -> 0) -> name -> [batch, M]."""
        batch, width = tf.shape(positions)[0], tf.shape(positions)[1]
        known = positions >= 0
        flat = tf.reshape(tf.maximum(positions, 0), [-1])

        def repeat(tensor):
            return tf.repeat(tensor, width, axis=0)

        inputs = {
            F.USER_INDEX: repeat(transformed[F.USER_INDEX]),
            F.TIME_CONTEXT: repeat(transformed[F.TIME_CONTEXT]),
            F.QUERY_EMBEDDING: repeat(queries),
            F.ITEM_INDEX: tf.gather(self.catalog_item_index, flat),
            F.CANDIDATE_EMBEDDING: tf.gather(self.catalog_embeddings, flat),
        }
        if self.catalog_content_profile is not None:
            inputs[F.CONTENT_PROFILE] = tf.gather(self.catalog_content_profile, flat)
        outputs = self.ranker(inputs)
        return {name: tf.where(known, tf.reshape(outputs[name], [batch, width]), 0.0) for name in (ENGAGEMENT_OUTPUT, LIKE_OUTPUT, RATING_OUTPUT)}

    def _recommend(self, raw: dict, exclude_seen: tf.Tensor, k: int | None = None) -> dict:
        """The top `k` (default: the serving K) of the ranked `ranking_candidates` retrieved items."""
        transformed, queries, retrieval_scores, positions = self._retrieve(raw, self.ranking_candidates, exclude_seen)
        ranked = self._ranking_scores(transformed, queries, positions)
        excluded = retrieval_scores <= tf.float32.min  # only when fewer than ranking_candidates remain
        engagement = tf.where(excluded, -1.0, ranked[ENGAGEMENT_OUTPUT])
        scores, order = tf.math.top_k(engagement, k=min(k or self.k, self.ranking_candidates))
        return {
            ITEM_IDS_OUTPUT: tf.gather(self.catalog_ids, tf.gather(positions, order, batch_dims=1)),
            SCORES_OUTPUT: scores,
            PREDICTED_RATINGS_OUTPUT: tf.gather(ranked[RATING_OUTPUT], order, batch_dims=1),
            RETRIEVAL_SCORES_OUTPUT: tf.gather(retrieval_scores, order, batch_dims=1),
        }

    def _rank_items(self, raw: dict, item_ids: tf.Tensor) -> dict:
        transformed = self.tft_layer(raw)
        ranked = self._ranking_scores(transformed, self.query_tower(transformed), self.catalog_positions.lookup(item_ids))
        return {SCORES_OUTPUT: ranked[ENGAGEMENT_OUTPUT], PREDICTED_RATINGS_OUTPUT: ranked[RATING_OUTPUT]}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
    def serving_default(self, examples):
        raw = tf.io.parse_example(examples, self._query_spec)
        return self._top_k(raw)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
    def embed_query(self, examples):
        raw = tf.io.parse_example(examples, self._query_spec)
        return {EMBEDDINGS_OUTPUT: self.query_tower(self.tft_layer(raw))}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
    def embed_candidates(self, examples):
        raw = tf.io.parse_example(examples, {**self._item_spec, **self._content_spec})
        features = {**self.tft_layer({name: raw[name] for name in self._item_spec}), **{name: raw[name] for name in self._content_spec}}
        return {
            EMBEDDINGS_OUTPUT: self.candidate_tower(features),
            MODALITY_WEIGHTS_OUTPUT: self.candidate_tower.modality_weights(features),
        }

    def _evaluation(self, top_ids: tf.Tensor, true_ids: tf.Tensor) -> dict:
        return {**metrics.retrieval_metrics(top_ids, true_ids), ITEM_IDS_OUTPUT: top_ids[:, : metrics.NDCG_K]}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
    def evaluate(self, examples):
        raw = tf.io.parse_example(examples, self._eval_spec)
        return self._evaluation(self._top_k(raw, self.eval_k)[ITEM_IDS_OUTPUT], tf.squeeze(raw[F.ITEM_ID], 1))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
    def evaluate_recommend(self, examples):
        raw = tf.io.parse_example(examples, self._eval_spec)
        top = self._recommend(raw, tf.ones_like(tf.squeeze(raw[F.ITEM_ID], 1), tf.bool), self.eval_k)
        return self._evaluation(top[ITEM_IDS_OUTPUT], tf.squeeze(raw[F.ITEM_ID], 1))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
    def rank_examples(self, examples):
        raw = tf.io.parse_example(examples, self._eval_spec)
        transformed = self.tft_layer(raw)
        positions = self.catalog_positions.lookup(raw[F.ITEM_ID])  # [batch, 1]
        ranked = self._ranking_scores(transformed, self.query_tower(transformed), positions)
        return {name: values[:, 0] for name, values in ranked.items()}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
    def evaluation_features(self, examples):
        raw = tf.io.parse_example(examples, self._labelled_spec)
        positions = tf.squeeze(self.catalog_positions.lookup(raw[F.ITEM_ID]), 1)
        known = positions >= 0
        out = {name: tf.where(known, tf.gather(table, tf.maximum(positions, 0)), UNKNOWN) for name, table in self.catalog_slices.items()}
        out[F.USER_ACTIVITY] = tf.gather(self.user_activity, self.tft_layer(raw)[F.USER_INDEX])
        out[F.LIKED] = tf.cast(tf.squeeze(raw[F.RATING], 1) >= self.liked_rating, tf.float32)
        return out


SIGNATURES = (
    SERVING_DEFAULT,
    RECOMMEND_SIGNATURE,
    QUERY_SIGNATURE,
    RANK_SIGNATURE,
    EMBED_SIGNATURE,
    EMBED_QUERY_SIGNATURE,
    EVALUATE_SIGNATURE,
    EVALUATE_RECOMMEND_SIGNATURE,
    RANK_EXAMPLES_SIGNATURE,
    EVALUATION_FEATURES_SIGNATURE,
)


def export(module: ServingModule, path: str) -> None:
    """Saves `module` with every signature in SIGNATURES."""
    tf.saved_model.save(module, path, signatures={name: getattr(module, name) for name in SIGNATURES})

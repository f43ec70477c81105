"""Every serving signature of the mmtower SavedModels, in one module.

The exported module carries the Transform graph, both retrieval towers, the
ranking model and the embeddings of the whole catalog. Retrieval scores all
items by brute force (`index="brute_force"`, runs on the stock TF Serving
image), or searches a ScaNN index (`index="scann"`, needs the ScaNN-enabled
image); items added after training (`add_items`, see app.add_items) are
scored by brute force until the index is rebuilt. Signatures:

- `recommend(<query features>, exclude_seen)`: retrieve the top
  `ranking_candidates` (+ the best `new_item_candidates` items without
  training interactions), order them by the ranking model's engagement logit +
  `graph_mix` . the item-graph scores (each candidate's edges to the user's
  last `graph_history` history items, see graph_scores) + `new_item_boost` for
  new items -> `item_ids`, `scores` (sigmoid of that sum), `predicted_ratings`,
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
  examples (query features + the held-out `item_id` + optional `seen_items`:
  every item the user had seen before the event, excluded like the training
  items and the history) -> per-example
  recall@10/50/100, ndcg@10 and the top-10 `item_ids` of retrieval alone /
  of `recommend` (read by the RetrievalEvaluator);
- `rank_examples(examples)`: eval examples -> `engagement`, `like`,
  `predicted_rating` [batch] (the model TFMA evaluates);
- `evaluation_features(examples)`: eval examples -> the `liked` label and the
  slices (item popularity, freshness, modalities; user activity) [batch], from
  the model's own training data (TFMA's preprocessing function).

Three models are pushed (serving.config): the `recommender` (everything
above), the `ranker` (`rank` alone) and the `item_encoder` (`embed_candidates`
alone: the candidate tower, to embed new items).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from towers import features as F
from towers import metrics
from towers.contract import (
    EMBED_SIGNATURE,
    EMBEDDINGS_OUTPUT,
    EXAMPLES_INPUT,
    EXCLUDE_SEEN_INPUT,
    ITEM_ENCODER,
    ITEM_IDS_INPUT,
    ITEM_IDS_OUTPUT,
    MODALITY_WEIGHTS_OUTPUT,
    PREDICTED_RATINGS_OUTPUT,
    RANK_SIGNATURE,
    RANKER,
    RETRIEVAL_SCORES_OUTPUT,
    SCORES_OUTPUT,
    SERVING_DEFAULT,
    SIGNATURES,
    trainer_model_dirs,
)
from towers.hparams import BRUTE_FORCE, INDEXES, SCANN
from towers.ranking import ENGAGEMENT_LOGIT, ENGAGEMENT_OUTPUT, LIKE_OUTPUT, RATING_OUTPUT

GRAPH_HISTORY = 5  # recommend's default history length for item-graph scores (the Trainer chooses it on validation)
UNKNOWN = "unknown"  # slice value of an eval item that is not in the catalog


def _bytes(values) -> np.ndarray:
    """UTF-8 bytes of each string (item ids are often titles: numpy's astype(bytes) only takes ASCII)."""
    return np.array([v if isinstance(v, bytes) else str(v).encode("utf-8") for v in values], dtype=object)


def _growable(values: np.ndarray, name: str) -> tf.Variable:
    """A variable whose first dimension may change (add_items appends rows to it in a loaded model)."""
    return tf.Variable(values, shape=tf.TensorShape([None]).concatenate(values.shape[1:]), trainable=False, name=name)


def _is_excluded(positions: tf.Tensor, exclude: tf.Tensor, num_items: tf.Tensor) -> tf.Tensor:
    """bool [batch, M]: whether positions[b, m] is among the (row, position) pairs of `exclude` [n, 2] for row b.

    Per row, the excluded positions are sorted and searched (batch x M x log n work, not M x n).
    """
    batch = tf.shape(positions, out_type=tf.int64)[0]
    exclude = tf.gather(exclude, tf.argsort(exclude[:, 0] * num_items + exclude[:, 1]))
    rows = tf.RaggedTensor.from_value_rowids(exclude[:, 1], exclude[:, 0], nrows=batch)
    sentinel = tf.fill([batch, 1], tf.int64.max)
    sorted_positions = tf.concat([rows.to_tensor(default_value=tf.int64.max), sentinel], axis=1)
    found = tf.searchsorted(sorted_positions, positions)
    return tf.equal(tf.gather(sorted_positions, found, batch_dims=1), positions)


def graph_scores(
    recent: tf.Tensor, positions: tf.Tensor, neighbours: tf.Tensor, weights: tf.Tensor, kinds: tf.Tensor, num_kinds: int, length
) -> tf.Tensor:
    """[batch, C, num_kinds]: per candidate and edge kind, the summed weights of the candidate's item-graph edges
    to the user's last `length` history items, divided by the largest over the row's candidates (so in [0, 1]).

    Args:
      recent: [batch, L] catalog positions of the history, oldest first (-1: padding or not in the catalog).
      positions: [batch, C] candidates' catalog positions.
      neighbours, weights: [N, K] each item's neighbours (-1: none) and edge weights; kinds: [K] edge kind per column.
    """
    known = recent >= 0
    from_end = tf.cumsum(tf.cast(known, tf.int64), axis=1, reverse=True)  # 1 = the latest known item
    recent = tf.where(known & (from_end <= length), recent, -2)  # -2 matches no neighbour (-1 pads them)
    rows = tf.maximum(positions, 0)
    linked = tf.reduce_any(tf.equal(tf.gather(neighbours, rows)[..., None], recent[:, None, None, :]), axis=-1)  # [batch, C, K]
    linked_weights = tf.where(linked, tf.gather(weights, rows), 0.0)
    per_kind = tf.transpose(tf.math.unsorted_segment_sum(tf.transpose(linked_weights, [2, 0, 1]), kinds, num_kinds), [1, 2, 0])
    return tf.math.divide_no_nan(per_kind, tf.reduce_max(per_kind, axis=1, keepdims=True))


def _feature_spec(raw_spec: dict, names) -> dict:
    """The entries of `raw_spec` among `names` (a dataset declares a subset of the optional features)."""
    return {name: raw_spec[name] for name in names if name in raw_spec}


class ItemEncoder(tf.Module):
    """The candidate tower on raw item features + content embeddings: `embed_candidates` (the `item_encoder` model)."""

    def __init__(self, tft_layer, candidate_tower, raw_feature_spec: dict, content_dims: dict[str, int]):
        super().__init__()
        self.tft_layer = tft_layer
        self.candidate_tower = candidate_tower
        self._item_spec = _feature_spec(raw_feature_spec, F.ITEM_FEATURES)
        # An item without a content embedding gets zeros: the tower treats that modality as missing.
        self._content_spec = {
            F.CONTENT_EMBEDDINGS[m]: tf.io.FixedLenFeature([dim], tf.float32, default_value=[0.0] * dim) for m, dim in content_dims.items()
        }
        if getattr(candidate_tower, "text_encoder", None) is not None:  # fine-tuned text: the tower reads the text itself
            self._content_spec[F.ITEM_TEXT] = tf.io.FixedLenFeature([], tf.string, default_value="")
        # Which content encoders' embeddings embed_candidates reads (app.add_items encodes new items with them).
        self.content_modalities = tf.Variable(
            _bytes(content_dims) if content_dims else np.zeros([0], object),
            dtype=tf.string,
            shape=[None],
            trainable=False,
            name="content_modalities",
        )

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
    def embed_candidates(self, examples):
        raw = tf.io.parse_example(examples, {**self._item_spec, **self._content_spec})
        features = {**self.tft_layer({name: raw[name] for name in self._item_spec}), **{name: raw[name] for name in self._content_spec}}
        return {
            EMBEDDINGS_OUTPUT: self.candidate_tower(features),
            MODALITY_WEIGHTS_OUTPUT: self.candidate_tower.modality_weights(features),
        }


@dataclass
class CatalogTables:
    """What the serving module knows about each catalog item, by catalog position.

    Attributes:
      ids: item ids [N].
      embeddings: float32 [N, dim] candidate tower output.
      item_index: int64 [N] vocabulary index (the OOV index for items unseen in training).
      content_profile: float32 [N, C] the ranker's content input; None when the model has no content.
      slices: F.ITEM_POPULARITY, F.ITEM_FRESHNESS, F.ITEM_MODALITIES -> str [N].
      graph_neighbours: int64 [N, K] each item's item-graph neighbours (catalog positions, -1: none);
        graph_weights: float32 [N, K] their edge weights; graph_kinds: int [K] the edge kind
        of each column (components.item_graph). K = 0: no graph.
    """

    ids: list
    embeddings: np.ndarray
    item_index: np.ndarray
    content_profile: np.ndarray | None
    slices: dict
    graph_neighbours: np.ndarray | None = None
    graph_weights: np.ndarray | None = None
    graph_kinds: np.ndarray | None = None


class ServingModule(tf.Module):
    """Brute-force retrieval over the full catalog, ranking, per-user exclusions and evaluation.

    Catalog tables are only ever read whole (`.value()`) and gathered from as
    tensors: a sparse read of a variable (tf.gather on the variable itself)
    switches it to copy-on-read, after which every dense read (the brute-force
    matmul, tf.size) copies the whole table — 12 ms per call at 1M items.

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
      profile_modalities: the modalities whose embeddings form an item's content
        profile (the ranker's input), kept for items added later.
      index: BRUTE_FORCE or SCANN (see the module docstring).
      oov_item_index: the item vocabulary's OOV index (the ranker's id of an item unseen in training).
      new_item_candidates: `recommend` ranks, beside the retrieved `ranking_candidates`, the best this many
        items without training interactions by retrieval score (brute-force index only).
    """

    def __init__(
        self,
        tft_layer,
        query_tower,
        candidate_tower,
        ranker,
        raw_feature_spec: dict,
        catalog: CatalogTables,
        seen_positions: list[list[int]],
        user_activity,
        k: int,
        ranking_candidates: int,
        liked_rating: float,
        content_dims: dict[str, int],
        profile_modalities=(),
        index: str = BRUTE_FORCE,
        oov_item_index: int = 0,
        new_item_candidates: int = 0,
    ):
        super().__init__()
        if index not in INDEXES:
            raise ValueError(f"index must be one of {INDEXES}, got {index!r}")
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
        self.item_encoder = ItemEncoder(tft_layer, candidate_tower, raw_feature_spec, content_dims)
        self.embed_candidates = self.item_encoder.embed_candidates
        self._eval_spec = _feature_spec(raw_feature_spec, F.QUERY_FEATURES + (F.ITEM_ID,))
        # Labels are optional here: a missing rating is not engaged (TFMA reports label counts per slice).
        self._labelled_spec = {**self._eval_spec, F.RATING: tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0])}
        # The catalog tables have no fixed length: add_items appends to them in a loaded model.
        self.catalog_ids = _growable(_bytes(catalog.ids), "catalog_ids")
        self.catalog_positions = tf.lookup.experimental.MutableHashTable(tf.string, tf.int64, default_value=-1, name="catalog_positions")
        self.catalog_positions.insert(tf.constant(_bytes(catalog.ids)), tf.range(len(catalog.ids), dtype=tf.int64))
        self.catalog_embeddings = _growable(np.asarray(catalog.embeddings, np.float32), "catalog_embeddings")
        self.catalog_item_index = _growable(np.asarray(catalog.item_index, np.int64), "catalog_item_index")
        self.catalog_content_profile = None
        if catalog.content_profile is not None:
            self.catalog_content_profile = _growable(np.asarray(catalog.content_profile, np.float32), "catalog_content_profile")
        self.catalog_slices = {name: _growable(_bytes(values), name) for name, values in catalog.slices.items()}
        self.oov_item_index = tf.Variable(oov_item_index, dtype=tf.int64, trainable=False, name="oov_item_index")
        # The item graph: recommend adds graph_mix . (each kind's edge weight to the user's last
        # graph_history items) to the ranker's logit. Both are set on the validation split (Trainer).
        kinds = np.zeros([0], np.int64) if catalog.graph_kinds is None else np.asarray(catalog.graph_kinds, np.int64)
        self.num_graph_kinds = int(kinds.max(initial=-1)) + 1
        width = len(kinds)
        self.graph_neighbours = _growable(
            np.full([len(catalog.ids), 0], -1, np.int64) if not width else np.asarray(catalog.graph_neighbours, np.int64),
            "graph_neighbours",
        )
        self.graph_weights = _growable(
            np.zeros([len(catalog.ids), 0], np.float32) if not width else np.asarray(catalog.graph_weights, np.float32), "graph_weights"
        )
        self.graph_kinds = tf.constant(kinds)
        self.graph_mix = tf.Variable(np.zeros([self.num_graph_kinds], np.float32), trainable=False, name="graph_mix")
        self.graph_history = tf.Variable(GRAPH_HISTORY, dtype=tf.int64, trainable=False, name="graph_history")
        self.new_item_boost = tf.Variable(0.0, trainable=False, name="new_item_boost")  # added to a new item's logit
        self.new_item_candidates = min(new_item_candidates, len(catalog.ids)) if index == BRUTE_FORCE else 0
        self.profile_modalities = tf.Variable(
            _bytes(profile_modalities) if profile_modalities else np.zeros([0], object),
            dtype=tf.string,
            shape=[None],
            trainable=False,
            name="profile_modalities",
        )
        self.index_type = tf.Variable(index, trainable=False, name="index_type")
        # Catalog rows [0, indexed_items) are in the ScaNN index; later rows (added items) are scored by brute force.
        self.indexed_items = tf.Variable(len(catalog.ids) if index == SCANN else 0, dtype=tf.int64, trainable=False, name="indexed_items")
        self.scann_index = None
        self.exclusion_margin = 0
        if index == SCANN:
            from towers import scann_index

            self.scann_index = scann_index.ScannIndex(scann_index.build_searcher(catalog.embeddings, self.ranking_candidates))
            self.initially_indexed = len(catalog.ids)
            # ScaNN returns this many more than asked, so that excluding a user's seen items still leaves enough.
            self.exclusion_margin = max((len(row) for row in seen_positions), default=0) + 50
        self.user_activity = tf.Variable(_bytes(user_activity), trainable=False, name="user_activity")
        lengths = [len(row) for row in seen_positions]
        values = np.concatenate([np.asarray(row, np.int64) for row in seen_positions]) if sum(lengths) else np.zeros([0], np.int64)
        self.seen_values = tf.Variable(values, trainable=False, name="seen_values")
        self.seen_row_splits = tf.Variable(
            np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), trainable=False, name="seen_row_splits"
        )
        self.query = self._query_signature([], self._top_k)
        self.recommend = self._query_signature([tf.TensorSpec([None], tf.bool, name=EXCLUDE_SEEN_INPUT)], self._recommend)
        self.rank = self._query_signature([tf.TensorSpec([None, None], tf.string, name=ITEM_IDS_INPUT)], self._rank_items)
        self.add_items = tf.function(self._add_items, input_signature=[self.added_items_spec()], autograph=False)

    def added_items_spec(self) -> dict:
        """What add_items takes: ids, candidate embeddings, content profiles (if the ranker reads them) and slices [n, ...]."""
        spec = {
            ITEM_IDS_INPUT: tf.TensorSpec([None], tf.string),
            EMBEDDINGS_OUTPUT: tf.TensorSpec([None, self.catalog_embeddings.shape[1]], tf.float32),
        }
        if self.catalog_content_profile is not None:
            spec[F.CONTENT_PROFILE] = tf.TensorSpec([None, self.catalog_content_profile.shape[1]], tf.float32)
        spec.update({name: tf.TensorSpec([None], tf.string) for name in self.catalog_slices})
        return spec

    def _add_items(self, items: dict) -> tf.Tensor:
        """Appends items to the catalog (not a serving signature: app.add_items calls it on a loaded model,
        then saves a new version). The caller makes sure the ids are new. -> the catalog size."""
        start = tf.size(self.catalog_ids, out_type=tf.int64)
        count = tf.size(items[ITEM_IDS_INPUT], out_type=tf.int64)
        self.catalog_positions.insert(items[ITEM_IDS_INPUT], start + tf.range(count))
        self.catalog_ids.assign(tf.concat([self.catalog_ids, items[ITEM_IDS_INPUT]], 0))
        self.catalog_embeddings.assign(tf.concat([self.catalog_embeddings, items[EMBEDDINGS_OUTPUT]], 0))
        self.catalog_item_index.assign(tf.concat([self.catalog_item_index, tf.fill([count], self.oov_item_index)], 0))
        if self.catalog_content_profile is not None:
            self.catalog_content_profile.assign(tf.concat([self.catalog_content_profile, items[F.CONTENT_PROFILE]], 0))
        # no graph edges of their own yet: an added item is ranked by the ranker alone
        width = tf.shape(self.graph_neighbours, out_type=tf.int64)[1]
        self.graph_neighbours.assign(tf.concat([self.graph_neighbours, tf.fill([count, width], tf.constant(-1, tf.int64))], 0))
        self.graph_weights.assign(tf.concat([self.graph_weights, tf.zeros([count, width])], 0))
        for name, table in self.catalog_slices.items():
            table.assign(tf.concat([table, items[name]], 0))
        return start + count

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

    def _positions(self, ids: tf.Tensor) -> tf.Tensor:
        """Catalog positions of item ids, same shape (-1: not in the catalog)."""
        return tf.reshape(self.catalog_positions.lookup(ids), tf.shape(ids))

    def _exclusions(self, user_index: tf.Tensor, *item_lists: tf.SparseTensor) -> tf.Tensor:
        """[n, 2] (query row, catalog position) pairs not to recommend: training items + each list's items (history, seen items)."""
        seen = tf.RaggedTensor.from_row_splits(self.seen_values, self.seen_row_splits)
        rows = tf.gather(seen, user_index)  # [batch, None] catalog positions
        pairs = [tf.stack([rows.value_rowids(), rows.values], axis=1)]
        for items in item_lists:
            positions = self._positions(items.values)
            known = positions >= 0
            pairs.append(tf.stack([tf.boolean_mask(items.indices[:, 0], known), tf.boolean_mask(positions, known)], axis=1))
        return tf.concat(pairs, axis=0)

    def _retrieve(
        self, raw: dict, k: int, exclude_seen=None, seen=None, new_items: int = 0
    ) -> tuple[dict, tf.Tensor, tf.Tensor, tf.Tensor]:
        """-> (transformed features, queries [batch, dim], top scores [batch, k (+ new_items)], their catalog positions).

        Excluded items (training items, history, `seen` [batch, None] sparse) score float32.min
        (they come last only when fewer than k remain). With `new_items` (brute force only), the
        best that many items without training interactions outside the top k follow it.
        """
        transformed = self.tft_layer(raw)
        queries = self.query_tower(transformed)
        exclude = self._exclusions(transformed[F.USER_INDEX], raw[F.HISTORY], *([] if seen is None else [seen]))
        if exclude_seen is not None:
            exclude = tf.boolean_mask(exclude, tf.gather(exclude_seen, exclude[:, 0]))
        if self.scann_index is None:
            scores = tf.matmul(queries, self.catalog_embeddings, transpose_b=True)  # [batch, N]
            mask = tf.scatter_nd(exclude, tf.ones_like(exclude[:, 0], tf.float32), tf.shape(scores, out_type=tf.int64))
            scores = tf.where(mask > 0, tf.float32.min, scores)
            top_scores, top_positions = tf.math.top_k(scores, k=k)
            top_positions = tf.cast(top_positions, tf.int64)
            if new_items:
                is_new = tf.equal(self.catalog_item_index.value(), self.oov_item_index)
                new_scores, new_positions = tf.math.top_k(tf.where(is_new[None, :], scores, tf.float32.min), k=new_items)
                new_positions = tf.cast(new_positions, tf.int64)
                repeated = tf.reduce_any(tf.equal(new_positions[:, :, None], top_positions[:, None, :]), axis=-1)
                top_scores = tf.concat([top_scores, tf.where(repeated, tf.float32.min, new_scores)], axis=1)
                top_positions = tf.concat([top_positions, new_positions], axis=1)
            return transformed, queries, top_scores, top_positions
        scores, positions = self._index_candidates(queries, k + self.exclusion_margin)
        excluded = _is_excluded(positions, exclude, tf.size(self.catalog_ids, out_type=tf.int64))
        top_scores, order = tf.math.top_k(tf.where(excluded, tf.float32.min, scores), k=k)
        return transformed, queries, top_scores, tf.gather(positions, order, batch_dims=1)

    def _index_candidates(self, queries: tf.Tensor, k: int) -> tuple[tf.Tensor, tf.Tensor]:
        """ScaNN's top `k` of the indexed rows + the top `k` of the added rows by brute force -> (scores, catalog positions) [batch, >= k].

        With `indexed_items` 0 the index is skipped: every row is scored exactly (the benchmarks' brute-force reference).
        """
        indexed = tf.minimum(self.indexed_items, tf.size(self.catalog_ids, out_type=tf.int64))
        batch = tf.shape(queries)[0]

        def search():
            positions, scores = self.scann_index.search(queries, min(k, self.initially_indexed))
            return scores, tf.cast(positions, tf.int64)

        ann_scores, ann_positions = tf.cond(indexed > 0, search, lambda: (tf.zeros([batch, 0]), tf.zeros([batch, 0], tf.int64)))
        added = self.catalog_embeddings[indexed:]
        added_scores, added_order = tf.math.top_k(tf.matmul(queries, added, transpose_b=True), k=tf.minimum(k, tf.shape(added)[0]))
        scores = tf.concat([ann_scores, added_scores], axis=1)
        positions = tf.concat([ann_positions, indexed + tf.cast(added_order, tf.int64)], axis=1)
        # pad to k when the catalog has fewer items than asked for
        missing = tf.maximum(k - tf.shape(scores)[1], 0)
        scores = tf.pad(scores, [[0, 0], [0, missing]], constant_values=tf.float32.min)
        positions = tf.pad(positions, [[0, 0], [0, missing]])
        return scores, positions

    def _top_k(self, raw: dict, k: int | None = None, seen=None) -> dict:
        _, _, top_scores, top_positions = self._retrieve(raw, k or self.k, seen=seen)
        return {ITEM_IDS_OUTPUT: tf.gather(self.catalog_ids.value(), top_positions), SCORES_OUTPUT: top_scores}

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
            F.ITEM_INDEX: tf.gather(self.catalog_item_index.value(), flat),
            F.CANDIDATE_EMBEDDING: tf.gather(self.catalog_embeddings.value(), flat),
        }
        if self.catalog_content_profile is not None:
            inputs[F.CONTENT_PROFILE] = tf.gather(self.catalog_content_profile.value(), flat)
        outputs = self.ranker(inputs)
        return {
            name: tf.where(known, tf.reshape(outputs[name], [batch, width]), 0.0)
            for name in (ENGAGEMENT_LOGIT, ENGAGEMENT_OUTPUT, LIKE_OUTPUT, RATING_OUTPUT)
        }

    def _graph_scores(self, history: tf.SparseTensor, positions: tf.Tensor, length) -> tf.Tensor:
        """graph_scores for candidates at catalog `positions` [batch, C] and the user's `history` ids."""
        recent = self._positions(tf.sparse.to_dense(history, default_value=""))  # [batch, L], -1: padding or unknown
        return graph_scores(
            recent, positions, self.graph_neighbours.value(), self.graph_weights.value(), self.graph_kinds, self.num_graph_kinds, length
        )

    def _recommend_parts(self, raw: dict, exclude_seen: tf.Tensor, seen=None, history_lengths=None) -> dict:
        """Retrieve (+ the new-item candidates), rank, and score the candidates on the item graph -> the parts
        `recommend` blends: positions [batch, C], retrieval scores, is_new (no training interactions), ranker
        outputs (name -> [batch, C]), graph [batch, C, kinds] (one per entry of `history_lengths`, default: the
        served graph_history)."""
        transformed, queries, retrieval_scores, positions = self._retrieve(
            raw, self.ranking_candidates, exclude_seen, seen, self.new_item_candidates
        )
        lengths = [self.graph_history] if history_lengths is None else history_lengths
        return {
            "positions": positions,
            "retrieval_scores": retrieval_scores,
            "is_new": tf.equal(tf.gather(self.catalog_item_index.value(), positions), self.oov_item_index),
            "ranked": self._ranking_scores(transformed, queries, positions),
            "graph": [self._graph_scores(raw[F.HISTORY], positions, length) for length in lengths],
        }

    def _recommend(self, raw: dict, exclude_seen: tf.Tensor, k: int | None = None, seen=None) -> dict:
        """The top `k` (default: the serving K) of the ranked `ranking_candidates` retrieved items."""
        parts = self._recommend_parts(raw, exclude_seen, seen)
        positions, retrieval_scores, ranked = parts["positions"], parts["retrieval_scores"], parts["ranked"]
        excluded = retrieval_scores <= tf.float32.min  # only when fewer than ranking_candidates remain
        # the ranker's logit + the item graph + the new-item boost (components.item_graph.blend), as a probability-like score
        logit = ranked[ENGAGEMENT_LOGIT] + tf.linalg.matvec(parts["graph"][0], self.graph_mix)
        logit += self.new_item_boost * tf.cast(parts["is_new"], tf.float32)
        top_logits, order = tf.math.top_k(tf.where(excluded, -np.inf, logit), k=min(k or self.k, self.ranking_candidates))
        return {
            ITEM_IDS_OUTPUT: tf.gather(self.catalog_ids.value(), tf.gather(positions, order, batch_dims=1)),
            SCORES_OUTPUT: tf.sigmoid(top_logits),  # ordered by the logit: the sigmoid saturates
            PREDICTED_RATINGS_OUTPUT: tf.gather(ranked[RATING_OUTPUT], order, batch_dims=1),
            RETRIEVAL_SCORES_OUTPUT: tf.gather(retrieval_scores, order, batch_dims=1),
        }

    def _rank_items(self, raw: dict, item_ids: tf.Tensor) -> dict:
        transformed = self.tft_layer(raw)
        ranked = self._ranking_scores(transformed, self.query_tower(transformed), self._positions(item_ids))
        return {SCORES_OUTPUT: ranked[ENGAGEMENT_OUTPUT], PREDICTED_RATINGS_OUTPUT: ranked[RATING_OUTPUT]}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
    def serving_default(self, examples):
        raw = tf.io.parse_example(examples, self._query_spec)
        return self._top_k(raw)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
    def embed_query(self, examples):
        raw = tf.io.parse_example(examples, self._query_spec)
        return {EMBEDDINGS_OUTPUT: self.query_tower(self.tft_layer(raw))}

    def _evaluation(self, top_ids: tf.Tensor, true_ids: tf.Tensor) -> dict:
        return {**metrics.retrieval_metrics(top_ids, true_ids), ITEM_IDS_OUTPUT: top_ids[:, : metrics.NDCG_K]}

    def _parse_eval(self, examples) -> tuple[dict, tf.SparseTensor]:
        """Eval examples -> (raw query features + item_id, the F.SEEN_ITEMS to exclude [batch, None] sparse)."""
        raw = tf.io.parse_example(examples, {**self._eval_spec, F.SEEN_ITEMS: tf.io.VarLenFeature(tf.string)})
        return raw, raw.pop(F.SEEN_ITEMS)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
    def evaluate(self, examples):
        raw, seen = self._parse_eval(examples)
        return self._evaluation(self._top_k(raw, self.eval_k, seen)[ITEM_IDS_OUTPUT], tf.squeeze(raw[F.ITEM_ID], 1))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
    def evaluate_recommend(self, examples):
        raw, seen = self._parse_eval(examples)
        top = self._recommend(raw, tf.ones_like(tf.squeeze(raw[F.ITEM_ID], 1), tf.bool), self.eval_k, seen)
        return self._evaluation(top[ITEM_IDS_OUTPUT], tf.squeeze(raw[F.ITEM_ID], 1))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
    def rank_examples(self, examples):
        raw = tf.io.parse_example(examples, self._eval_spec)
        transformed = self.tft_layer(raw)
        positions = self._positions(raw[F.ITEM_ID])  # [batch, 1]
        ranked = self._ranking_scores(transformed, self.query_tower(transformed), positions)
        return {name: values[:, 0] for name, values in ranked.items()}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
    def evaluation_features(self, examples):
        raw = tf.io.parse_example(examples, self._labelled_spec)
        positions = tf.squeeze(self._positions(raw[F.ITEM_ID]), 1)
        known = positions >= 0
        out = {
            name: tf.where(known, tf.gather(table.value(), tf.maximum(positions, 0)), UNKNOWN)
            for name, table in self.catalog_slices.items()
        }
        out[F.USER_ACTIVITY] = tf.gather(self.user_activity.value(), self.tft_layer(raw)[F.USER_INDEX])
        out[F.LIKED] = tf.cast(tf.squeeze(raw[F.RATING], 1) >= self.liked_rating, tf.float32)
        return out


def save(module, path: str, signatures: dict) -> None:
    """tf.saved_model.save with the Scann op namespace allowed (a ScaNN-indexed model has its ops)."""
    from towers import scann_index

    tf.saved_model.save(module, path, signatures=signatures, options=scann_index.SAVE_OPTIONS)


def export(module: ServingModule, path: str) -> None:
    """Saves the recommender (every signature in SIGNATURES) at `path`, and the ranker and the item encoder beside it."""
    save(module, path, {name: getattr(module, name) for name in SIGNATURES})
    dirs = trainer_model_dirs(path)
    save(module, dirs[RANKER], {SERVING_DEFAULT: module.rank, RANK_SIGNATURE: module.rank})
    encoder = module.item_encoder
    save(encoder, dirs[ITEM_ENCODER], {SERVING_DEFAULT: encoder.embed_candidates, EMBED_SIGNATURE: encoder.embed_candidates})

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
  `retrieval_scores` [batch, K], and why (towers.explanations): `because_items`
  / `because_scores` [batch, K, 3] (the history items nearest each item),
  `modality_weights` [batch, K, M] and `modalities` [batch, M] (its fusion
  gate's mix). `exclude_seen` [batch] bool: leave out items
  the user interacted with (in training, or in the query's `history`);
- `recommend_diverse(<query features>, exclude_seen, diversity, max_per_category)`:
  the same, its top K re-ordered by MMR (`diversity` [batch] 0..1, the weight
  on novelty against the items already listed) with at most
  `max_per_category` [batch] items per category (0: no cap); towers.diversity;
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

ServingModule composes the pieces, each in its own module, and defines the
signatures on them: towers.catalog (the catalog's tables, id lookup, appending
items), towers.exclusions (seen items), towers.retrieval (top-k, brute force or
ScaNN), towers.graph_scores (the item graph), towers.fanout (rank and blend the
retrieved candidates) and towers.item_encoder (`embed_candidates`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import tensorflow as tf

from towers import features as F
from towers import metrics
from towers.catalog import FLOAT32, Catalog, CatalogTables
from towers.contract import (
    DIVERSITY_INPUT,
    EMBED_SIGNATURE,
    EMBEDDINGS_OUTPUT,
    EXAMPLES_INPUT,
    EXCLUDE_SEEN_INPUT,
    ITEM_ENCODER,
    ITEM_IDS_INPUT,
    ITEM_IDS_OUTPUT,
    MAX_PER_CATEGORY_INPUT,
    PREDICTED_RATINGS_OUTPUT,
    RANK_SIGNATURE,
    RANKER,
    SCORES_OUTPUT,
    SERVING_DEFAULT,
    SIGNATURES,
    trainer_model_dirs,
)
from towers.exclusions import SeenItems, for_rows, item_pairs
from towers.explanations import explain
from towers.fanout import POSITIONS, RankingFanout
from towers.graph_scores import GraphTables, graph_scores  # noqa: F401 - graph_scores: re-exported (tests, docs)
from towers.hparams import BRUTE_FORCE, INDEXES
from towers.item_encoder import ItemEncoder
from towers.ranking import ENGAGEMENT_OUTPUT, RATING_OUTPUT
from towers.retrieval import Retriever
from towers.tables import string_list, utf8


@dataclass(frozen=True)
class TrainedModels:
    """What training produced.

    Attributes:
      tft_layer: `TFTransformOutput.transform_features_layer()`.
      query_tower: transformed query features -> float32 [batch, dim].
      candidate_tower: transformed item features -> float32 [batch, dim].
      ranker: towers.ranking.RankingModel.
    """

    tft_layer: Any
    query_tower: Any
    candidate_tower: Any
    ranker: Any


@dataclass(frozen=True)
class ModelInputs:
    """The raw features and the content the model reads.

    Attributes:
      raw_feature_spec: raw feature spec from the curated schema.
      roles: the dataset's declared features (which raw features a query and an item have).
      content_dims: content modality -> embedding size `embed_candidates` takes.
      profile_modalities: the modalities whose embeddings form an item's content profile (the
        ranker's input), kept for items added later.
    """

    raw_feature_spec: dict
    roles: F.FeatureRoles
    content_dims: dict[str, int] = field(default_factory=dict)
    profile_modalities: tuple = ()


@dataclass(frozen=True)
class UserTables:
    """What the serving module knows about each user, by user index.

    Attributes:
      seen_positions: one list of catalog positions per user index (the last row, for OOV users,
        is empty): the items to exclude for that user.
      activity: str [user rows], the user activity slice of each user index.
    """

    seen_positions: list[list[int]]
    activity: list[str]


@dataclass(frozen=True)
class ServingOptions:
    """How the signatures answer.

    Attributes:
      k: number of results.
      ranking_candidates: items `recommend` retrieves for the ranker.
      liked_rating: rating at or above which an interaction is liked.
      index: BRUTE_FORCE or SCANN (see the module docstring).
      new_item_candidates: `recommend` ranks, beside the retrieved `ranking_candidates`, the best this many
        items without training interactions by retrieval score (brute-force index only).
      catalog_precision: how the candidate embeddings are stored (towers.catalog.PRECISIONS).
    """

    k: int
    ranking_candidates: int
    liked_rating: float
    index: str = BRUTE_FORCE
    new_item_candidates: int = 0
    catalog_precision: str = FLOAT32

    def __post_init__(self):
        if self.index not in INDEXES:
            raise ValueError(f"index must be one of {INDEXES}, got {self.index!r}")


def _feature_spec(raw_spec: dict, names) -> dict:
    """The entries of `raw_spec` among `names` (a dataset declares a subset of the optional features)."""
    return {name: raw_spec[name] for name in names if name in raw_spec}


class ServingModule(tf.Module):
    """Every signature of the recommender (see the module docstring), composed of the catalog, the seen items,
    the retriever and the ranking fan-out.

    Args:
      models: the trained towers, ranker and Transform layer.
      inputs: the raw features and content the model reads.
      catalog: the catalog's tables.
      users: each user's training items and activity slice.
      options: K, the ranking candidates, the index, ...

    Attributes (besides the pieces: catalog, graph, seen, retriever, fanout, item_encoder), under the names
    a loaded model is read by (app.add_items, bench/, the Trainer, the tests): catalog_ids,
    catalog_embeddings, catalog_item_index, catalog_content_projection, catalog_profile_dim (the content profile
    size add_items takes; 0: none), catalog_modality_weights, catalog_categories,
    catalog_slices, catalog_positions,
    oov_item_index, graph_neighbours, graph_weights, graph_kinds, num_graph_kinds, graph_mix,
    graph_history, new_item_boost, seen_values, seen_row_splits, index_type, indexed_items,
    scann_index, user_activity, profile_modalities, modality_names.
    """

    def __init__(self, models: TrainedModels, inputs: ModelInputs, catalog: CatalogTables, users: UserTables, options: ServingOptions):
        super().__init__()
        size = len(catalog.ids)
        self.tft_layer = models.tft_layer
        self.query_tower = models.query_tower
        self.candidate_tower = models.candidate_tower
        self.ranker = models.ranker
        self.k = min(options.k, size)
        self.ranking_candidates = min(max(options.ranking_candidates, self.k), size)
        # The evaluation signatures score the longest list the metrics need, whatever the serving K
        # (`recommend` lists are at most ranking_candidates long: its Recall@100 is Recall@ranking_candidates).
        self.eval_k = min(max(metrics.RECALL_KS), size)
        self.liked_rating = options.liked_rating
        self._set_specs(inputs.raw_feature_spec, inputs.roles)
        item_spec = _feature_spec(inputs.raw_feature_spec, inputs.roles.candidate_features)
        self.item_encoder = ItemEncoder(models.tft_layer, models.candidate_tower, item_spec, inputs.content_dims)
        self.embed_candidates = self.item_encoder.embed_candidates
        # the ranker's content projection is applied once per item as it is stored (exact: its first, linear op)
        ranker = models.ranker
        project = ranker.project_content if getattr(ranker, "content_projection", None) is not None else tf.identity
        self.catalog = Catalog(catalog, options.catalog_precision, project)
        self.graph = GraphTables(size, catalog.graph_neighbours, catalog.graph_weights, catalog.graph_kinds)
        self.seen = SeenItems(users.seen_positions)
        self.retriever = Retriever(self.catalog, options.index, self.ranking_candidates, self.seen.longest)
        new_items = min(options.new_item_candidates, size) if options.index == BRUTE_FORCE else 0
        self.fanout = RankingFanout(models.ranker, self.catalog, self.graph, self.ranking_candidates, new_items)
        self.user_activity = tf.Variable(utf8(users.activity), trainable=False, name="user_activity")
        self.profile_modalities = string_list(inputs.profile_modalities, "profile_modalities")
        self.modality_names = string_list(models.candidate_tower.modalities, "modality_names")
        self._expose_tables()
        self.query = self._query_signature([], self._top_k)
        exclude_seen = tf.TensorSpec([None], tf.bool, name=EXCLUDE_SEEN_INPUT)
        self.recommend = self._query_signature([exclude_seen], self._explained)
        self.recommend_diverse = self._query_signature(
            [
                exclude_seen,
                tf.TensorSpec([None], tf.float32, name=DIVERSITY_INPUT),
                tf.TensorSpec([None], tf.int64, name=MAX_PER_CATEGORY_INPUT),
            ],
            self._explained,
        )
        self.rank = self._query_signature([tf.TensorSpec([None, None], tf.string, name=ITEM_IDS_INPUT)], self._rank_items)
        self.add_items = tf.function(self._add_items, input_signature=[self.catalog.added_items_spec()], autograph=False)

    def _set_specs(self, raw_feature_spec: dict, roles: F.FeatureRoles) -> None:
        """The parsing specs of query examples and eval examples (labels optional)."""
        self._query_spec = _feature_spec(raw_feature_spec, roles.query_features)
        self._eval_spec = _feature_spec(raw_feature_spec, roles.query_features + (F.ITEM_ID,))
        # Labels are optional here: a missing rating is not engaged (TFMA reports label counts per slice).
        self._labelled_spec = {**self._eval_spec, F.RATING: tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0])}

    def _expose_tables(self) -> None:
        """The pieces' variables under the module's own names (see the class docstring): the same objects."""
        catalog, graph, seen, retriever, fanout = self.catalog, self.graph, self.seen, self.retriever, self.fanout
        self.catalog_ids = catalog.ids
        self.catalog_positions = catalog.positions
        self.catalog_embeddings = catalog.embeddings
        self.catalog_item_index = catalog.item_index
        self.catalog_content_projection = catalog.content_projection
        self.catalog_profile_dim = tf.Variable(catalog.profile_dim, dtype=tf.int64, trainable=False, name="catalog_profile_dim")
        self.catalog_modality_weights = catalog.modality_weights
        self.catalog_categories = catalog.categories
        self.catalog_slices = catalog.slices
        self.oov_item_index = catalog.oov_item_index
        self.graph_neighbours = graph.neighbours
        self.graph_weights = graph.weights
        self.graph_kinds = graph.kinds
        self.num_graph_kinds = graph.num_kinds
        self.seen_values = seen.seen_values
        self.seen_row_splits = seen.seen_row_splits
        self.index_type = retriever.index_type
        self.indexed_items = retriever.indexed_items
        self.scann_index = retriever.scann_index
        self.graph_mix = fanout.graph_mix
        self.graph_history = fanout.graph_history
        self.new_item_boost = fanout.new_item_boost
        self.new_item_candidates = fanout.new_item_candidates

    def _add_items(self, items: dict) -> tf.Tensor:
        """Appends items to the catalog, without graph edges (not a serving signature: app.add_items calls it on a
        loaded model, then saves a new version). The caller makes sure the ids are new.

        Args:
          items: as Catalog.added_items_spec, n rows each.

        Returns:
          int64 scalar: the catalog size.
        """
        return self.catalog.append(items)  # added items have no graph row: no edges (GraphTables)

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

    def _encode(self, raw: dict) -> tuple[dict, tf.Tensor]:
        """Raw query features -> (transformed features, query embeddings float32 [batch, dim])."""
        transformed = self.tft_layer(raw)
        return transformed, self.query_tower(transformed)

    def _exclusions(self, user_index: tf.Tensor, *item_lists: tf.SparseTensor) -> tf.Tensor:
        """int64 [n, 2] (query row, catalog position) pairs not to recommend: the training items of the users
        `user_index` [batch] + each list's items [batch, None] (history, seen items)."""
        pairs = [self.seen.pairs(user_index)]
        pairs += [item_pairs(items, self.catalog.lookup(items.values)) for items in item_lists]
        return tf.concat(pairs, axis=0)

    def _retrieve(self, raw: dict, k: int, exclude_seen=None, seen=None, new_items: int = 0) -> tuple[dict, tf.Tensor, tuple]:
        """Retrieval for raw query features.

        Args:
          raw: raw query features (scalars [batch, 1], F.HISTORY [batch, None] sparse).
          k: how many items.
          exclude_seen: bool [batch], whether to exclude each row's seen items (None: every row's).
          seen: string [batch, None] sparse, more items to exclude (evaluation's seen items).
          new_items: how many new items follow the top k (brute force only, see retrieval.brute_force).

        Returns:
          (transformed features, queries [batch, dim], (top scores, catalog positions) [batch, k (+ new_items)]);
          excluded items (training items, history, `seen`) come last only when fewer than k remain.
        """
        transformed, queries = self._encode(raw)
        exclude = self._exclusions(transformed[F.USER_INDEX], raw[F.HISTORY], *([] if seen is None else [seen]))
        if exclude_seen is not None:
            exclude = for_rows(exclude, exclude_seen)
        return transformed, queries, self.retriever.top_k(queries, exclude, k, new_items)

    def _top_k(self, raw: dict, k: int | None = None, seen=None) -> dict:
        """Retrieval alone -> item ids string, scores float32 [batch, k (default: the serving K)]."""
        _, _, (top_scores, top_positions) = self._retrieve(raw, k or self.k, seen=seen)
        return {ITEM_IDS_OUTPUT: self.catalog.ids_at(top_positions), SCORES_OUTPUT: top_scores}

    def recommend_parts(self, raw: dict, exclude_seen: tf.Tensor, seen=None, history_lengths=None) -> dict:
        """Retrieve `ranking_candidates` (+ the new-item candidates), rank them and score them on the item graph:
        RankingFanout.parts, the graph scored with each of `history_lengths` (default: the served graph_history).
        The Trainer chooses graph_mix, graph_history and new_item_boost on these."""
        transformed, queries, retrieved = self._retrieve(raw, self.ranking_candidates, exclude_seen, seen, self.new_item_candidates)
        lengths = [self.graph_history] if history_lengths is None else history_lengths
        return self.fanout.parts(transformed, queries, retrieved, raw[F.HISTORY], lengths)

    def _recommend(self, raw: dict, exclude_seen: tf.Tensor, k: int | None = None, seen=None) -> dict:
        """The top `k` (default: the serving K) of the ranked `ranking_candidates` retrieved items (+ fanout.POSITIONS)."""
        return self.fanout.top(self.recommend_parts(raw, exclude_seen, seen), k or self.k)

    def _explained(self, raw: dict, exclude_seen: tf.Tensor, diversity=None, max_per_category=None) -> dict:
        """The `recommend` (and, with `diversity` and `max_per_category` [batch], `recommend_diverse`) signature:
        the top K and why each item (towers.explanations)."""
        top = self.fanout.top(self.recommend_parts(raw, exclude_seen), self.k, diversity, max_per_category)
        positions = top.pop(POSITIONS)
        history = tf.sparse.to_dense(raw[F.HISTORY], default_value="")
        return {**top, **explain(self.catalog, self.modality_names, positions, history)}

    def _rank_items(self, raw: dict, item_ids: tf.Tensor) -> dict:
        """Ranking alone for `item_ids` string [batch, M] -> scores (engagement), predicted ratings [batch, M]."""
        transformed, queries = self._encode(raw)
        ranked = self.fanout.rank(transformed, queries, self.catalog.lookup(item_ids))
        return {SCORES_OUTPUT: ranked[ENGAGEMENT_OUTPUT], PREDICTED_RATINGS_OUTPUT: ranked[RATING_OUTPUT]}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
    def serving_default(self, examples):
        """Serialized query tf.Examples [batch] -> `query`'s outputs."""
        raw = tf.io.parse_example(examples, self._query_spec)
        return self._top_k(raw)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
    def embed_query(self, examples):
        """Serialized query tf.Examples [batch] -> `embeddings` float32 [batch, dim]."""
        raw = tf.io.parse_example(examples, self._query_spec)
        return {EMBEDDINGS_OUTPUT: self.query_tower(self.tft_layer(raw))}

    def _evaluation(self, top_ids: tf.Tensor, true_ids: tf.Tensor) -> dict:
        """Per-example metrics of the lists `top_ids` [batch, >= NDCG_K] for the held-out `true_ids` [batch], + their top NDCG_K."""
        return {**metrics.retrieval_metrics(top_ids, true_ids), ITEM_IDS_OUTPUT: top_ids[:, : metrics.NDCG_K]}

    def parse_eval(self, examples) -> tuple[dict, tf.SparseTensor]:
        """Eval examples -> (raw query features + item_id, the F.SEEN_ITEMS to exclude [batch, None] sparse)."""
        raw = tf.io.parse_example(examples, {**self._eval_spec, F.SEEN_ITEMS: tf.io.VarLenFeature(tf.string)})
        return raw, raw.pop(F.SEEN_ITEMS)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
    def evaluate(self, examples):
        """Eval examples [batch] -> retrieval's metrics [batch] and top-10 `item_ids` [batch, 10]."""
        raw, seen = self.parse_eval(examples)
        return self._evaluation(self._top_k(raw, self.eval_k, seen)[ITEM_IDS_OUTPUT], tf.squeeze(raw[F.ITEM_ID], 1))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
    def evaluate_recommend(self, examples):
        """Eval examples [batch] -> recommend's metrics [batch] and top-10 `item_ids` [batch, 10]."""
        raw, seen = self.parse_eval(examples)
        top = self._recommend(raw, tf.ones_like(tf.squeeze(raw[F.ITEM_ID], 1), tf.bool), self.eval_k, seen)
        return self._evaluation(top[ITEM_IDS_OUTPUT], tf.squeeze(raw[F.ITEM_ID], 1))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
    def rank_examples(self, examples):
        """Eval examples [batch] -> the ranker's outputs for their `item_id` (towers.fanout.RANKED_OUTPUTS name -> [batch])."""
        raw = tf.io.parse_example(examples, self._eval_spec)
        transformed, queries = self._encode(raw)
        ranked = self.fanout.rank(transformed, queries, self.catalog.lookup(raw[F.ITEM_ID]))  # [batch, 1]
        return {name: values[:, 0] for name, values in ranked.items()}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
    def evaluation_features(self, examples):
        """Eval examples [batch] -> the item slices, F.USER_ACTIVITY and F.LIKED [batch] (TFMA's preprocessing)."""
        raw = tf.io.parse_example(examples, self._labelled_spec)
        out = self.catalog.slices_at(tf.squeeze(self.catalog.lookup(raw[F.ITEM_ID]), 1))
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

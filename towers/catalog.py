"""The catalog as the serving module holds it: one row per item, by catalog position, growable.

Tables are only ever read whole (`.value()`) and gathered from as tensors: a
sparse read of a variable (tf.gather on the variable itself) switches it to
copy-on-read, after which every dense read (the brute-force matmul, tf.size)
copies the whole table — 12 ms per call at 1M items.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from towers import features as F
from towers.contract import EMBEDDINGS_OUTPUT, ITEM_IDS_INPUT, MODALITY_WEIGHTS_OUTPUT
from towers.tables import growable, utf8

UNKNOWN = "unknown"  # slice value of an item that is not in the catalog
UNKNOWN_CATEGORY = -1  # an item's category id when it has none (towers.diversity)


FLOAT32, BFLOAT16 = "float32", "bfloat16"
PRECISIONS = (FLOAT32, BFLOAT16)  # how the candidate embeddings are stored (HParams.catalog_precision)


def scores(queries: tf.Tensor, embeddings: tf.Tensor) -> tf.Tensor:
    """float32 [batch, N]: queries float32 [batch, dim] . embeddings [N, dim]; with bfloat16 embeddings the product
    runs in bfloat16 (half the bytes read; oneDNN's bfloat16 kernels on CPUs that have them), scores back in float32."""
    if embeddings.dtype == queries.dtype:
        return tf.matmul(queries, embeddings, transpose_b=True)
    return tf.cast(tf.matmul(tf.cast(queries, embeddings.dtype), embeddings, transpose_b=True), tf.float32)


@dataclass
class CatalogTables:
    """What the serving module knows about each catalog item, by catalog position (plain values).

    Attributes:
      ids: item ids [N].
      embeddings: float32 [N, dim] candidate tower output.
      item_index: int64 [N] vocabulary index (the OOV index for items unseen in training).
      content_profile: float32 [N, C] the ranker's content input; None when the model has no content.
      slices: F.ITEM_POPULARITY, F.ITEM_FRESHNESS, F.ITEM_MODALITIES -> str [N].
      graph_neighbours: int64 [N, K] each item's item-graph neighbours (catalog positions, -1: none);
        graph_weights: float32 [N, K] their edge weights; graph_kinds: int [K] the edge kind
        of each column (components.item_graph). K = 0 or None: no graph.
      oov_item_index: the item vocabulary's OOV index (the ranker's id of an item unseen in training).
      modality_weights: float32 [N, M] each item's fusion gate weights (the candidate tower's modalities);
        None: the model explains no modality mix.
      categories: int64 [N] each item's category id for diversity caps (towers.diversity; -1: none);
        None: all -1.
    """

    ids: list
    embeddings: np.ndarray
    item_index: np.ndarray
    content_profile: np.ndarray | None
    slices: dict
    graph_neighbours: np.ndarray | None = None
    graph_weights: np.ndarray | None = None
    graph_kinds: np.ndarray | None = None
    oov_item_index: int = 0
    modality_weights: np.ndarray | None = None
    categories: np.ndarray | None = None


class Catalog(tf.Module):
    """The catalog's tables as variables, the id -> position lookup, and appending items.

    Attributes:
      ids: string [N] item ids (variable `catalog_ids`).
      positions: hash table item id -> catalog position (-1: not in the catalog).
      embeddings: [N, dim] candidate embeddings, stored in `precision` (float32, or bfloat16: half the bytes;
        read them through embeddings_at / scores, which compute in float32 where it matters).
      item_index: int64 [N] the ranker's item id (oov_item_index: no training interactions).
      content_projection: float32 [N, P] each item's content profile as the ranker reads it: `project` of the
        profile [N, C], applied once when the item is stored (the ranker's projection: P = 64 values instead of
        C = 1,864 on tuxpaint); None when the ranker reads no content.
      profile_dim: C (0 without content): what `append` takes.
      slices: slice name -> string [N].
      oov_item_index: int64 scalar variable.
      modality_weights: float32 [N, M] fusion gate weights, or None.
      categories: int64 [N] category ids (-1: none; items appended later have none).
    """

    def __init__(self, tables: CatalogTables, precision: str = FLOAT32, project=tf.identity):
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"catalog precision must be one of {PRECISIONS}, got {precision!r}")
        ids = utf8(tables.ids)
        self.ids = growable(ids, "catalog_ids")
        self.positions = tf.lookup.experimental.MutableHashTable(tf.string, tf.int64, default_value=-1, name="catalog_positions")
        self.positions.insert(tf.constant(ids), tf.range(len(ids), dtype=tf.int64))
        self.embeddings = growable(tf.cast(np.asarray(tables.embeddings, np.float32), precision).numpy(), "catalog_embeddings")
        self.item_index = growable(np.asarray(tables.item_index, np.int64), "catalog_item_index")
        self.project = project
        self.content_projection, self.profile_dim = None, 0
        if tables.content_profile is not None:
            profile = np.asarray(tables.content_profile, np.float32)
            self.profile_dim = profile.shape[1]
            self.content_projection = growable(np.asarray(project(profile), np.float32), "catalog_content_projection")
        self.slices = {name: growable(utf8(values), name) for name, values in tables.slices.items()}
        self.oov_item_index = tf.Variable(tables.oov_item_index, dtype=tf.int64, trainable=False, name="oov_item_index")
        categories = np.full(len(ids), UNKNOWN_CATEGORY, np.int64) if tables.categories is None else tables.categories
        self.categories = growable(np.asarray(categories, np.int64), "catalog_categories")
        self.modality_weights = None
        if tables.modality_weights is not None:
            self.modality_weights = growable(np.asarray(tables.modality_weights, np.float32), "catalog_modality_weights")

    def size(self) -> tf.Tensor:
        """int64 scalar: the number of items."""
        return tf.size(self.ids, out_type=tf.int64)

    def lookup(self, ids: tf.Tensor) -> tf.Tensor:
        """Catalog positions of item ids.

        Args:
          ids: string, any shape.

        Returns:
          int64, the shape of `ids` (-1: not in the catalog).
        """
        return tf.reshape(self.positions.lookup(ids), tf.shape(ids))

    def embeddings_at(self, positions: tf.Tensor) -> tf.Tensor:
        """float32, the shape of `positions` (int64, all >= 0) + [dim]: those items' candidate embeddings."""
        return tf.cast(tf.gather(self.embeddings.value(), positions), tf.float32)

    def ids_at(self, positions: tf.Tensor) -> tf.Tensor:
        """string, the shape of `positions` (int64, all >= 0): the items' ids."""
        return tf.gather(self.ids.value(), positions)

    def new_items(self) -> tf.Tensor:
        """bool [N]: whether each item has no training interactions (the OOV item index)."""
        return tf.equal(self.item_index.value(), self.oov_item_index)

    def is_new(self, positions: tf.Tensor) -> tf.Tensor:
        """bool, the shape of `positions` (int64, all >= 0): whether those items have no training interactions."""
        return tf.equal(tf.gather(self.item_index.value(), positions), self.oov_item_index)

    def ranker_inputs(self, positions: tf.Tensor) -> dict:
        """The ranker's per-item inputs for catalog `positions` int64 [n] (all >= 0).

        Returns:
          F.ITEM_INDEX int64 [n], F.CANDIDATE_EMBEDDING float32 [n, dim] and, when the
          ranker reads content, F.CONTENT_PROJECTION float32 [n, P].
        """
        inputs = {
            F.ITEM_INDEX: tf.gather(self.item_index.value(), positions),
            F.CANDIDATE_EMBEDDING: self.embeddings_at(positions),
        }
        if self.content_projection is not None:
            inputs[F.CONTENT_PROJECTION] = tf.gather(self.content_projection.value(), positions)
        return inputs

    def slices_at(self, positions: tf.Tensor) -> dict:
        """Slice name -> string [batch]: each item's slice value (UNKNOWN for position -1), for `positions` int64 [batch]."""
        known = positions >= 0
        return {name: tf.where(known, tf.gather(table.value(), tf.maximum(positions, 0)), UNKNOWN) for name, table in self.slices.items()}

    def added_items_spec(self) -> dict:
        """What `append` takes: ids, candidate embeddings, content profiles (if the ranker reads them), modality
        weights (if the catalog has them) and slices [n, ...]."""
        spec = {
            ITEM_IDS_INPUT: tf.TensorSpec([None], tf.string),
            EMBEDDINGS_OUTPUT: tf.TensorSpec([None, self.embeddings.shape[1]], tf.float32),
        }
        if self.content_projection is not None:
            spec[F.CONTENT_PROFILE] = tf.TensorSpec([None, self.profile_dim], tf.float32)
        if self.modality_weights is not None:
            spec[MODALITY_WEIGHTS_OUTPUT] = tf.TensorSpec([None, self.modality_weights.shape[1]], tf.float32)
        spec.update({name: tf.TensorSpec([None], tf.string) for name in self.slices})
        return spec

    def append(self, items: dict) -> tf.Tensor:
        """Appends items (new ids: the caller checks) at the end, as items without training interactions.

        Args:
          items: as `added_items_spec`, n rows each.

        Returns:
          int64 scalar: the catalog size after.
        """
        start = self.size()
        count = tf.size(items[ITEM_IDS_INPUT], out_type=tf.int64)
        self.positions.insert(items[ITEM_IDS_INPUT], start + tf.range(count))
        self.ids.assign(tf.concat([self.ids, items[ITEM_IDS_INPUT]], 0))
        self.embeddings.assign(tf.concat([self.embeddings, tf.cast(items[EMBEDDINGS_OUTPUT], self.embeddings.dtype)], 0))
        self.item_index.assign(tf.concat([self.item_index, tf.fill([count], self.oov_item_index)], 0))
        if self.content_projection is not None:
            projected = tf.cast(self.project(items[F.CONTENT_PROFILE]), tf.float32)
            self.content_projection.assign(tf.concat([self.content_projection, projected], 0))
        if self.modality_weights is not None:
            self.modality_weights.assign(tf.concat([self.modality_weights, items[MODALITY_WEIGHTS_OUTPUT]], 0))
        self.categories.assign(tf.concat([self.categories, tf.fill([count], tf.constant(UNKNOWN_CATEGORY, tf.int64))], 0))
        for name, table in self.slices.items():
            table.assign(tf.concat([table, items[name]], 0))
        return start + count

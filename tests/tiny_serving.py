"""Tiny stand-ins for the trained pieces of a serving module: fixed vectors, hand-set ranker scores.

Users u0, u1, u2 have user indices 0, 1, 2 (3: unknown users); each item's
vocabulary index is its catalog position unless marked new (the OOV index).
The query tower returns the user's fixed vector, the candidate tower the
item's, and the ranker's engagement logit is `bias[item index] + retrieval
weight . (query . candidate) + the content profile's sum`.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from towers import features as F
from towers.catalog import CatalogTables
from towers.ranking import ENGAGEMENT_LOGIT, ENGAGEMENT_OUTPUT, LIKE_LOGIT, LIKE_OUTPUT, RATING_OUTPUT

USERS = ["u0", "u1", "u2"]
RAW_SPEC = {
    F.USER_ID: tf.io.FixedLenFeature([1], tf.string),
    F.TIMESTAMP: tf.io.FixedLenFeature([1], tf.int64),
    F.HISTORY: tf.io.VarLenFeature(tf.string),
    F.ITEM_ID: tf.io.FixedLenFeature([1], tf.string),
    F.RATING: tf.io.FixedLenFeature([1], tf.float32),
}


def _table(keys: list[str]) -> tf.lookup.StaticHashTable:
    init = tf.lookup.KeyValueTensorInitializer(tf.constant(keys), tf.range(len(keys), dtype=tf.int64))
    return tf.lookup.StaticHashTable(init, default_value=len(keys))


class ToyTransform(tf.Module):
    """Raw features -> F.USER_INDEX, F.TIME_CONTEXT (zeros) for queries; F.ITEM_INDEX for items."""

    def __init__(self, items: list[str]):
        super().__init__()
        self.users = _table(USERS)
        self.items = _table(items)

    def __call__(self, raw: dict) -> dict:
        out = {}
        if F.USER_ID in raw:
            users = tf.reshape(raw[F.USER_ID], [-1])
            out[F.USER_INDEX] = self.users.lookup(users)
            out[F.TIME_CONTEXT] = tf.zeros([tf.size(users), F.TIME_CONTEXT_DIM])
        if F.ITEM_ID in raw:
            out[F.ITEM_INDEX] = self.items.lookup(tf.reshape(raw[F.ITEM_ID], [-1]))
        return out


class ToyQueryTower(tf.Module):
    """A fixed vector per user index: float32 [users + 1, dim]."""

    def __init__(self, vectors: np.ndarray):
        super().__init__()
        self.vectors = tf.constant(vectors, tf.float32)

    def __call__(self, transformed: dict) -> tf.Tensor:
        return tf.gather(self.vectors, transformed[F.USER_INDEX])


class ToyCandidateTower(tf.Module):
    """A fixed vector per item index: float32 [items + 1, dim]; one modality weighted 1."""

    text_encoder = None
    modalities = ("id",)

    def __init__(self, vectors: np.ndarray):
        super().__init__()
        self.vectors = tf.constant(vectors, tf.float32)

    def __call__(self, features: dict) -> tf.Tensor:
        return tf.gather(self.vectors, features[F.ITEM_INDEX])

    def modality_weights(self, features: dict) -> tf.Tensor:
        return tf.ones([tf.size(features[F.ITEM_INDEX]), 1])


class ToyRanker(tf.Module):
    """engagement logit = bias[item index] + retrieval_weight . (query . candidate) (+ the content profile's sum);
    predicted rating = the item index."""

    def __init__(self, bias: np.ndarray, retrieval_weight: float = 0.0):
        super().__init__()
        self.bias = tf.constant(bias, tf.float32)
        self.retrieval_weight = retrieval_weight

    def __call__(self, inputs: dict) -> dict:
        logit = tf.gather(self.bias, inputs[F.ITEM_INDEX])
        logit += self.retrieval_weight * tf.reduce_sum(inputs[F.QUERY_EMBEDDING] * inputs[F.CANDIDATE_EMBEDDING], axis=1)
        if F.CONTENT_PROJECTION in inputs:  # the catalog's rows: the profile itself (Catalog's default projection)
            logit += tf.reduce_sum(inputs[F.CONTENT_PROJECTION], axis=1)
        return {
            ENGAGEMENT_LOGIT: logit,
            ENGAGEMENT_OUTPUT: tf.sigmoid(logit),
            LIKE_LOGIT: -logit,
            LIKE_OUTPUT: tf.sigmoid(-logit),
            RATING_OUTPUT: tf.cast(inputs[F.ITEM_INDEX], tf.float32),
        }


def catalog_tables(embeddings, new=(), content_profile=None, graph=None, modality_weights=None) -> CatalogTables:
    """Items i0, i1, ... with these embeddings [N, dim]; positions in `new` have the OOV index (N).

    `graph`: (neighbours [N, K], weights [N, K], kinds [K]) or None. `modality_weights`: [N, M] or None.
    """
    embeddings = np.asarray(embeddings, np.float32)
    n = len(embeddings)
    ids = [f"i{i}" for i in range(n)]
    neighbours, weights, kinds = graph if graph is not None else (None, None, None)
    return CatalogTables(
        ids=ids,
        embeddings=embeddings,
        item_index=np.array([n if i in new else i for i in range(n)], np.int64),
        content_profile=content_profile,
        slices={F.ITEM_POPULARITY: ["head" if i not in new else "none" for i in range(n)]},
        graph_neighbours=neighbours,
        graph_weights=weights,
        graph_kinds=kinds,
        oov_item_index=n,
        modality_weights=modality_weights,
    )

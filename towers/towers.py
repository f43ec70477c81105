"""Query and candidate towers: plain Keras models over transformed features.

Both take the dict `preprocessing_fn` emits and return [batch, embedding_dim]
L2-normalised embeddings. Embedding tables are sized from vocabulary sizes read
back from the Transform output (`vocab_sizes`), never hard-coded.
"""
from __future__ import annotations

import tensorflow as tf

from towers import features as F
from towers.hparams import HParams


def id_embedding(vocab_size: int, dim: int, name: str) -> tf.keras.layers.Embedding:
    """Table for ids in [0, vocab_size + OOV) as produced by compute_and_apply_vocabulary."""
    return tf.keras.layers.Embedding(vocab_size + F.NUM_OOV_BUCKETS, dim, name=name)


class MaskedMeanEmbedding(tf.keras.layers.Layer):
    """Padded token ids [batch, len] (0 = padding) -> mean of their embeddings [batch, dim]."""

    def __init__(self, vocab_size: int, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.dim = vocab_size, dim
        # +1 for the padding id 0 that preprocessing prepends to the vocabulary.
        self.embedding = tf.keras.layers.Embedding(vocab_size + F.NUM_OOV_BUCKETS + 1, dim)

    def call(self, ids: tf.Tensor) -> tf.Tensor:
        mask = tf.cast(ids > 0, tf.float32)[..., tf.newaxis]
        total = tf.reduce_sum(self.embedding(ids) * mask, axis=1)
        return total / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size, "dim": self.dim}


class IdDropout(tf.keras.layers.Layer):
    """In training, replaces each id by the OOV bucket with probability `rate`.

    Users and items unseen in training all share the OOV row; without this
    its embedding is never trained and cold queries start from noise. With it,
    the OOV row learns the average user/item and the other features learn to
    carry cold-start cases.
    """

    def __init__(self, vocab_size: int, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.oov_index, self.rate, self.seed = vocab_size, rate, seed

    def call(self, ids: tf.Tensor, training=None) -> tf.Tensor:
        if not training or self.rate <= 0:
            return ids
        drop = tf.random.uniform(tf.shape(ids), seed=self.seed) < self.rate
        return tf.where(drop, tf.cast(self.oov_index, ids.dtype), ids)

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.oov_index, "rate": self.rate, "seed": self.seed}


def _mlp(hp: HParams, name: str) -> tf.keras.Sequential:
    layers = [tf.keras.layers.Dense(units, activation="relu") for units in hp.hidden_units]
    layers.append(tf.keras.layers.Dense(hp.embedding_dim))
    if hp.l2_normalize:
        layers.append(tf.keras.layers.UnitNormalization())
    return tf.keras.Sequential(layers, name=name)


class QueryTower(tf.keras.Model):
    """User id + user features + recent items + time context -> query embedding [batch, embedding_dim].

    The recent items (the mean embedding of the user's latest interactions before
    the query time) carry users who were not in training.

    The recency bucket lets the tower follow what is popular when: a query at or
    after the end of training asks for what is popular now.
    """

    def __init__(self, vocab_sizes: dict[str, int], hp: HParams):
        super().__init__(name="query_tower")
        self.user = id_embedding(vocab_sizes[F.VOCAB_USER], hp.id_embedding_dim, "user_embedding")
        self.user_dropout = IdDropout(vocab_sizes[F.VOCAB_USER], hp.id_dropout, hp.seed, name="user_id_dropout")
        self.gender = id_embedding(vocab_sizes[F.VOCAB_GENDER], 4, "gender_embedding")
        self.occupation = id_embedding(vocab_sizes[F.VOCAB_OCCUPATION], hp.feature_embedding_dim, "occupation_embedding")
        self.zip_prefix = id_embedding(vocab_sizes[F.VOCAB_ZIP_PREFIX], hp.feature_embedding_dim, "zip_prefix_embedding")
        self.recency = tf.keras.layers.Embedding(F.RECENCY_BUCKETS, hp.feature_embedding_dim, name="recency_embedding")
        self.history = MaskedMeanEmbedding(vocab_sizes[F.VOCAB_ITEM], hp.id_embedding_dim, name="history_embedding")
        self.mlp = _mlp(hp, "query_mlp")

    def call(self, inputs: dict, training=None) -> tf.Tensor:
        parts = [
            self.user(self.user_dropout(inputs[F.USER_INDEX], training=training)),
            self.gender(inputs[F.GENDER_INDEX]),
            self.occupation(inputs[F.OCCUPATION_INDEX]),
            self.zip_prefix(inputs[F.ZIP_PREFIX_INDEX]),
            tf.expand_dims(inputs[F.AGE_Z], -1),
            inputs[F.TIME_CONTEXT],
            self.recency(inputs[F.RECENCY_BUCKET]),
            self.history(inputs[F.HISTORY_TOKENS]),
        ]
        return self.mlp(tf.concat(parts, axis=-1))


class CandidateTower(tf.keras.Model):
    """Item id + title tokens + genres + year -> candidate embedding [batch, embedding_dim].

    Title, genres and year are content: an item never seen in training (its id
    falls in the OOV bucket) is still placed by them.
    """

    def __init__(self, vocab_sizes: dict[str, int], hp: HParams):
        super().__init__(name="candidate_tower")
        self.item = id_embedding(vocab_sizes[F.VOCAB_ITEM], hp.id_embedding_dim, "item_embedding")
        self.item_dropout = IdDropout(vocab_sizes[F.VOCAB_ITEM], 0.0, hp.seed, name="item_id_dropout")
        self.title = MaskedMeanEmbedding(vocab_sizes[F.VOCAB_TITLE_TOKENS], hp.feature_embedding_dim, name="title_embedding")
        self.genres = MaskedMeanEmbedding(vocab_sizes[F.VOCAB_GENRES], hp.feature_embedding_dim, name="genre_embedding")
        self.mlp = _mlp(hp, "candidate_mlp")

    def call(self, inputs: dict, training=None) -> tf.Tensor:
        parts = [
            self.item(self.item_dropout(inputs[F.ITEM_INDEX], training=training)),
            self.title(inputs[F.TITLE_TOKENS]),
            self.genres(inputs[F.GENRE_TOKENS]),
            tf.expand_dims(inputs[F.YEAR_Z], -1),
        ]
        return self.mlp(tf.concat(parts, axis=-1))

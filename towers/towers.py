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


def _mlp(hp: HParams, name: str) -> tf.keras.Sequential:
    layers = [tf.keras.layers.Dense(units, activation="relu") for units in hp.hidden_units]
    layers.append(tf.keras.layers.Dense(hp.embedding_dim))
    layers.append(tf.keras.layers.UnitNormalization())
    return tf.keras.Sequential(layers, name=name)


class QueryTower(tf.keras.Model):
    """User id + user features + time context -> query embedding [batch, embedding_dim]."""

    def __init__(self, vocab_sizes: dict[str, int], hp: HParams):
        super().__init__(name="query_tower")
        self.user = id_embedding(vocab_sizes[F.VOCAB_USER], hp.id_embedding_dim, "user_embedding")
        self.gender = id_embedding(vocab_sizes[F.VOCAB_GENDER], 4, "gender_embedding")
        self.occupation = id_embedding(vocab_sizes[F.VOCAB_OCCUPATION], hp.feature_embedding_dim, "occupation_embedding")
        self.zip_prefix = id_embedding(vocab_sizes[F.VOCAB_ZIP_PREFIX], hp.feature_embedding_dim, "zip_prefix_embedding")
        self.mlp = _mlp(hp, "query_mlp")

    def call(self, inputs: dict) -> tf.Tensor:
        parts = [
            self.user(inputs[F.USER_INDEX]),
            self.gender(inputs[F.GENDER_INDEX]),
            self.occupation(inputs[F.OCCUPATION_INDEX]),
            self.zip_prefix(inputs[F.ZIP_PREFIX_INDEX]),
            tf.expand_dims(inputs[F.AGE_Z], -1),
            inputs[F.TIME_CONTEXT],
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
        self.title = MaskedMeanEmbedding(vocab_sizes[F.VOCAB_TITLE_TOKENS], hp.feature_embedding_dim, name="title_embedding")
        self.genres = MaskedMeanEmbedding(vocab_sizes[F.VOCAB_GENRES], hp.feature_embedding_dim, name="genre_embedding")
        self.mlp = _mlp(hp, "candidate_mlp")

    def call(self, inputs: dict) -> tf.Tensor:
        parts = [
            self.item(inputs[F.ITEM_INDEX]),
            self.title(inputs[F.TITLE_TOKENS]),
            self.genres(inputs[F.GENRE_TOKENS]),
            tf.expand_dims(inputs[F.YEAR_Z], -1),
        ]
        return self.mlp(tf.concat(parts, axis=-1))

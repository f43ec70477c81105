"""TFT `preprocessing_fn`: raw features -> model features.

user_id, item_id, timestamp and history are always there; the user attributes
and item metadata are those the dataset declares (towers.features.FeatureRoles,
passed in the Transform's custom_config), each transformed by its role.

Ids and categorical columns become vocabulary indices with OOV buckets
(vocabularies written under the names in towers.features, so the trainer reads
their sizes back), text and multi-valued columns become padded token ids,
numbers are z-scored (unknown -> 0) and the timestamp becomes cyclic
time-of-day / day-of-week context.
"""

import math

import tensorflow as tf
import tensorflow_transform as tft

from towers import features as F
from towers.contract import FEATURE_ROLES_KEY

_SECONDS_PER_DAY = 86400.0
_SECONDS_PER_WEEK = 7 * _SECONDS_PER_DAY


def _squeeze(x: tf.Tensor) -> tf.Tensor:
    """[batch, 1] -> [batch] for the schema's shape-[1] scalars."""
    return tf.squeeze(x, axis=1)


def _lookup(values: tf.Tensor, vocab_name: str) -> tf.Tensor:
    return tft.compute_and_apply_vocabulary(values, num_oov_buckets=F.NUM_OOV_BUCKETS, vocab_filename=vocab_name)


def _pad(ids: tf.RaggedTensor, max_len: int) -> tf.Tensor:
    """Ragged ids [batch, None] -> int64 [batch, max_len]; ids shift by 1 so that 0 pads."""
    return (ids + 1).to_tensor(default_value=0, shape=[None, max_len])


def _padded_ids(tokens: tf.RaggedTensor, vocab_name: str, max_len: int) -> tf.Tensor:
    """Ragged strings [batch, None] -> padded vocabulary ids [batch, max_len] (see _pad)."""
    return _pad(tft.compute_and_apply_vocabulary(tokens, num_oov_buckets=F.NUM_OOV_BUCKETS, vocab_filename=vocab_name), max_len)


def title_tokens(titles: tf.Tensor) -> tf.RaggedTensor:
    """Lower-cased word tokens of a title; punctuation is dropped.

    Args:
      titles: string [batch].
    Returns:
      ragged string [batch, None].
    """
    cleaned = tf.strings.regex_replace(tf.strings.lower(titles), r"[^a-z0-9' ]", " ")
    return tf.strings.split(cleaned)


def time_context(timestamps: tf.Tensor) -> tf.Tensor:
    """Unix seconds [batch] -> [batch, 4]: sin/cos of hour of day and day of week."""
    seconds = tf.cast(timestamps, tf.float64)
    day = 2 * math.pi * tf.math.floormod(seconds, _SECONDS_PER_DAY) / _SECONDS_PER_DAY
    week = 2 * math.pi * tf.math.floormod(seconds, _SECONDS_PER_WEEK) / _SECONDS_PER_WEEK
    return tf.cast(tf.stack([tf.sin(day), tf.cos(day), tf.sin(week), tf.cos(week)], axis=1), tf.float32)


def _z_score(values: tf.Tensor) -> tf.Tensor:
    """Z-scores the known (finite) numbers over the whole dataset; unknown (NaN) maps to 0 = the mean."""
    as_float = tf.cast(values, tf.float32)
    known = tf.math.is_finite(as_float)
    mean = tft.mean(tf.boolean_mask(as_float, known))
    std = tf.sqrt(tft.var(tf.boolean_mask(as_float, known)))
    return tf.where(known, (as_float - mean) / tf.maximum(std, 1e-6), 0.0)


def _query_features(inputs: dict, item_vocab, roles: F.FeatureRoles) -> dict:
    history = tf.RaggedTensor.from_sparse(inputs[F.HISTORY])[:, -F.HISTORY_LENGTH :]
    history_ids = tft.apply_vocabulary(history, item_vocab, num_oov_buckets=F.NUM_OOV_BUCKETS)
    out = {
        F.USER_INDEX: _lookup(_squeeze(inputs[F.USER_ID]), F.VOCAB_USER),
        F.TIME_CONTEXT: time_context(_squeeze(inputs[F.TIMESTAMP])),
        F.RECENCY_BUCKET: tft.bucketize(_squeeze(inputs[F.TIMESTAMP]), F.RECENCY_BUCKETS),
        F.HISTORY_TOKENS: _pad(history_ids, F.HISTORY_LENGTH),
    }
    for column in roles.user_categorical:
        out[F.index_feature(column)] = _lookup(_squeeze(inputs[column]), column)
    for column in roles.user_numeric:
        out[F.z_feature(column)] = _z_score(_squeeze(inputs[column]))
    return out


def _item_features(inputs: dict, item_vocab, roles: F.FeatureRoles) -> dict:
    out = {F.ITEM_INDEX: tft.apply_vocabulary(_squeeze(inputs[F.ITEM_ID]), item_vocab, num_oov_buckets=F.NUM_OOV_BUCKETS)}
    for column in roles.item_text:
        name = F.tokens_feature(column)
        out[name] = _padded_ids(title_tokens(_squeeze(inputs[column])), name, F.TEXT_MAX_TOKENS)
    for column in roles.item_categorical:
        out[F.index_feature(column)] = _lookup(_squeeze(inputs[column]), column)
    for column in roles.item_multivalued:
        out[F.tokens_feature(column)] = _padded_ids(tf.RaggedTensor.from_sparse(inputs[column]), column, F.MAX_VALUES)
    for column in roles.item_numeric:
        out[F.z_feature(column)] = _z_score(_squeeze(inputs[column]))
    return out


def preprocessing_fn(inputs: dict, custom_config: dict) -> dict:
    """TFT entry point (named by dotted path in the pipeline).

    Args:
      inputs: raw features per the curated schema: scalars as [batch, 1] dense
        tensors, multi-valued columns and history as SparseTensors [batch, None].
      custom_config: {FEATURE_ROLES_KEY: FeatureRoles.to_json()}: the dataset's declared features.
    Returns:
      transformed features named in towers.features.
    """
    roles = F.FeatureRoles.from_json(custom_config[FEATURE_ROLES_KEY])
    item_ids = _squeeze(inputs[F.ITEM_ID])
    item_vocab = tft.vocabulary(item_ids, vocab_filename=F.VOCAB_ITEM)
    # Interaction counts per item, read by the trainer for the logQ correction.
    tft.vocabulary(item_ids, vocab_filename=F.VOCAB_ITEM_FREQUENCY, store_frequency=True)
    out = {**_query_features(inputs, item_vocab, roles), **_item_features(inputs, item_vocab, roles)}
    if F.RATING in inputs:  # the ranking model's label; serving queries have none
        out[F.RATING] = tf.cast(_squeeze(inputs[F.RATING]), tf.float32)
    # Passed through for the Trainer: an incremental run trains on the events after its base model's data.
    out[F.TIMESTAMP] = _squeeze(inputs[F.TIMESTAMP])
    return out

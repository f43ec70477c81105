"""TFT `preprocessing_fn`: raw features -> model features.

user_id, item_id, timestamp and history are always there; user attributes and
item metadata are transformed where the dataset's schema declares them.

Ids become vocabulary indices with OOV buckets (vocabularies written under the
names in towers.features, so the trainer reads their sizes back), text becomes
padded token ids, numbers are z-scored and the timestamp becomes cyclic
time-of-day / day-of-week context.
"""

import math

import tensorflow as tf
import tensorflow_transform as tft

from towers import features as F

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


def _year_z(years: tf.Tensor) -> tf.Tensor:
    """Z-scores known years; unknown (0) maps to 0 = the mean."""
    known = years > 0
    as_float = tf.cast(years, tf.float32)
    mean = tft.mean(tf.boolean_mask(as_float, known))
    std = tf.sqrt(tft.var(tf.boolean_mask(as_float, known)))
    return tf.where(known, (as_float - mean) / tf.maximum(std, 1e-6), 0.0)


def _query_features(inputs: dict, item_vocab) -> dict:
    history = tf.RaggedTensor.from_sparse(inputs[F.HISTORY])[:, -F.HISTORY_LENGTH :]
    history_ids = tft.apply_vocabulary(history, item_vocab, num_oov_buckets=F.NUM_OOV_BUCKETS)
    out = {
        F.USER_INDEX: _lookup(_squeeze(inputs[F.USER_ID]), F.VOCAB_USER),
        F.TIME_CONTEXT: time_context(_squeeze(inputs[F.TIMESTAMP])),
        F.RECENCY_BUCKET: tft.bucketize(_squeeze(inputs[F.TIMESTAMP]), F.RECENCY_BUCKETS),
        F.HISTORY_TOKENS: _pad(history_ids, F.HISTORY_LENGTH),
    }
    # User attributes, where the dataset has them.
    if F.GENDER in inputs:
        out[F.GENDER_INDEX] = _lookup(_squeeze(inputs[F.GENDER]), F.VOCAB_GENDER)
    if F.OCCUPATION in inputs:
        out[F.OCCUPATION_INDEX] = _lookup(_squeeze(inputs[F.OCCUPATION]), F.VOCAB_OCCUPATION)
    if F.ZIP_CODE in inputs:
        out[F.ZIP_PREFIX_INDEX] = _lookup(tf.strings.substr(_squeeze(inputs[F.ZIP_CODE]), 0, F.ZIP_PREFIX_LENGTH), F.VOCAB_ZIP_PREFIX)
    if F.AGE in inputs:
        out[F.AGE_Z] = tft.scale_to_z_score(tf.cast(_squeeze(inputs[F.AGE]), tf.float32))
    return out


def _item_features(inputs: dict, item_vocab) -> dict:
    out = {F.ITEM_INDEX: tft.apply_vocabulary(_squeeze(inputs[F.ITEM_ID]), item_vocab, num_oov_buckets=F.NUM_OOV_BUCKETS)}
    # Item metadata, where the dataset has it.
    if F.TITLE in inputs:
        out[F.TITLE_TOKENS] = _padded_ids(title_tokens(_squeeze(inputs[F.TITLE])), F.VOCAB_TITLE_TOKENS, F.TITLE_MAX_TOKENS)
    if F.GENRES in inputs:
        out[F.GENRE_TOKENS] = _padded_ids(tf.RaggedTensor.from_sparse(inputs[F.GENRES]), F.VOCAB_GENRES, F.MAX_GENRES)
    if F.YEAR in inputs:
        out[F.YEAR_Z] = _year_z(_squeeze(inputs[F.YEAR]))
    return out


def preprocessing_fn(inputs: dict) -> dict:
    """TFT entry point (named by dotted path in the pipeline).

    Args:
      inputs: raw features per the curated schema: scalars as [batch, 1] dense
        tensors, genres and history as SparseTensors [batch, None]; the
        optional features only where the schema declares them. Query
        features alone (serving) transform without the item features.
    Returns:
      transformed features named in towers.features.
    """
    item_ids = _squeeze(inputs[F.ITEM_ID])
    item_vocab = tft.vocabulary(item_ids, vocab_filename=F.VOCAB_ITEM)
    # Interaction counts per item, read by the trainer for the logQ correction.
    tft.vocabulary(item_ids, vocab_filename=F.VOCAB_ITEM_FREQUENCY, store_frequency=True)
    out = {**_query_features(inputs, item_vocab), **_item_features(inputs, item_vocab)}
    if F.RATING in inputs:  # the ranking model's label; serving queries have none
        out[F.RATING] = tf.cast(_squeeze(inputs[F.RATING]), tf.float32)
    # Passed through for the Trainer: an incremental run trains on the events after its base model's data.
    out[F.TIMESTAMP] = _squeeze(inputs[F.TIMESTAMP])
    return out

"""How the serving module keeps plain values as variables: UTF-8 strings, growable tables, string lists."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def utf8(values) -> np.ndarray:
    """UTF-8 bytes of each value, as an object array [n].

    Item ids are often titles: numpy's astype(bytes) only takes ASCII.

    Args:
      values: an iterable of str or bytes (a dict: its keys).

    Returns:
      object [n] of bytes.
    """
    return np.array([v if isinstance(v, bytes) else str(v).encode("utf-8") for v in values], dtype=object)


def growable(values: np.ndarray, name: str) -> tf.Variable:
    """A variable whose first dimension may change (add_items appends rows to it in a loaded model).

    Args:
      values: the initial rows [n, ...].
      name: the variable's name.

    Returns:
      a non-trainable variable of shape [None, ...].
    """
    return tf.Variable(values, shape=tf.TensorShape([None]).concatenate(values.shape[1:]), trainable=False, name=name)


def string_list(values, name: str) -> tf.Variable:
    """A string variable [None] holding `values` (an empty list is allowed), e.g. the modalities a model reads.

    Args:
      values: an iterable of str (a dict: its keys).
      name: the variable's name.

    Returns:
      a non-trainable tf.string variable of shape [None].
    """
    initial = utf8(values) if values else np.zeros([0], object)
    return tf.Variable(initial, dtype=tf.string, shape=[None], trainable=False, name=name)

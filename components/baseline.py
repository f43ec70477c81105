"""MostPopularBaseline: the most-popular recommender scored on the same eval split.

It ranks items by training interactions, leaves out what each user is known to
have seen (their training items and the event's history, as the model does)
and is scored by towers.metrics, the same code the exported model's `evaluate`
signature uses.
"""

import collections
import json
import os

import numpy as np
import tensorflow as tf
from tfx import v1 as tfx
from tfx.types import artifact_utils

from towers import features as F
from towers import metrics

METRICS_FILE = "metrics.json"
TRAIN_SPLIT = "train"
EVAL_SPLIT = "eval"


def read_events(split_uri: str) -> list[tuple[bytes, bytes, tuple[bytes, ...]]]:
    """(user_id, item_id, history) of every tf.Example under an ExampleGen split folder."""
    spec = {
        F.USER_ID: tf.io.FixedLenFeature([1], tf.string),
        F.ITEM_ID: tf.io.FixedLenFeature([1], tf.string),
        F.HISTORY: tf.io.RaggedFeature(tf.string),
    }
    files = tf.io.gfile.glob(os.path.join(split_uri, "*"))
    events = []
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(4096):
        parsed = tf.io.parse_example(batch, spec)
        histories = [tuple(h) for h in parsed[F.HISTORY].to_list()]
        events.extend(zip(parsed[F.USER_ID].numpy()[:, 0], parsed[F.ITEM_ID].numpy()[:, 0], histories))
    return events


def most_popular(train: list[tuple], queries: list[tuple], k: int) -> np.ndarray:
    """Top-k items by training count for each query, skipping items the user is known to have seen.

    Args:
      train: (user, item, ...) training interactions.
      queries: (user, history) pairs to recommend for.
      k: list length.
    Returns:
      object array [len(queries), k] of item ids (fewer real items pad with None).
    """
    ranking = [item for item, _ in sorted(collections.Counter(event[1] for event in train).items(), key=lambda kv: (-kv[1], kv[0]))]
    seen = collections.defaultdict(set)
    for user, item, *_ in train:
        seen[user].add(item)
    out = np.full((len(queries), k), None, dtype=object)
    for row, (user, history) in enumerate(queries):
        known = seen[user].union(history)
        picks = [item for item in ranking if item not in known][:k]
        out[row, : len(picks)] = picks
    return out


def per_example(train: list[tuple], evaluation: list[tuple], k: int = max(metrics.RECALL_KS)) -> dict[str, tf.Tensor]:
    """Most-popular's retrieval metrics for each (user, item, history) eval event: name -> [n]."""
    top = most_popular(train, [(user, history) for user, _, history in evaluation], k)
    top = np.where(top == None, b"", top).astype(bytes)  # noqa: E711 (elementwise)
    truth = np.array([event[1] for event in evaluation], dtype=bytes)
    return metrics.retrieval_metrics(tf.constant(top), tf.constant(truth))


def evaluate(train: list[tuple], evaluation: list[tuple], k: int = max(metrics.RECALL_KS)) -> dict[str, float]:
    """Mean retrieval metrics of most-popular over (user, item, history) eval events."""
    return {name: float(tf.reduce_mean(values)) for name, values in per_example(train, evaluation, k).items()}


@tfx.dsl.components.component
def MostPopularBaseline(
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    evaluation: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.ModelEvaluation],
    code_version: tfx.dsl.components.Parameter[str] = "",
) -> None:
    """Writes the baseline's metrics on the eval split to `metrics.json`.

    `code_version` only keys the cache (see pipeline.code_version).
    """
    train = read_events(artifact_utils.get_split_uri([examples], TRAIN_SPLIT))
    held_out = read_events(artifact_utils.get_split_uri([examples], EVAL_SPLIT))
    result = evaluate(train, held_out)
    result["num_eval"] = len(held_out)
    with tf.io.gfile.GFile(os.path.join(evaluation.uri, METRICS_FILE), "w") as f:
        json.dump(result, f, indent=2)

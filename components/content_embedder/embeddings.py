"""The ContentEmbedder's output read back, and the same embedding for items outside a pipeline run (add-items)."""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import tensorflow as tf

from towers import contract
from towers import features as F


def read_item_embeddings(uri: str) -> dict[str, dict[str, np.ndarray]]:
    """Content modality -> (item id -> embedding), from a ContentEmbedder output folder.

    Only modalities some item has are returned; an item appears under a
    modality only if that content of it could be encoded.
    """
    files = tf.io.gfile.glob(os.path.join(uri, "Split-*", "*"))
    if not files:
        return {}
    spec = {F.ITEM_ID: tf.io.FixedLenFeature([], tf.string)}
    spec.update({feature: tf.io.RaggedFeature(tf.float32) for feature in F.CONTENT_EMBEDDINGS.values()})
    out: dict[str, dict[str, np.ndarray]] = {modality: {} for modality in F.CONTENT_EMBEDDINGS}
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(1024):
        parsed = tf.io.parse_example(batch, spec)
        items = [item.decode() for item in parsed[F.ITEM_ID].numpy()]
        for modality, feature in F.CONTENT_EMBEDDINGS.items():
            for item, vector in zip(items, parsed[feature].to_list()):
                if vector:
                    out[modality][item] = np.asarray(vector, np.float32)
    return {modality: embeddings for modality, embeddings in out.items() if embeddings}


def read_quarantine(uri: str) -> list[dict]:
    """The items (or media of items) a ContentEmbedder output refused, with the reason."""
    path = os.path.join(uri, contract.QUARANTINE_FILE)
    if not tf.io.gfile.exists(path):
        return []
    with tf.io.gfile.GFile(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def embed_records(records: list[bytes], handles: dict[str, str]) -> tuple[dict[str, dict[str, np.ndarray]], list[dict]]:
    """Runs the ContentEmbedder's Beam pipeline (DirectRunner, in process) on serialized catalog tf.Examples.

    -> (modality -> item id -> embedding, quarantined entries), exactly what a pipeline run would produce.
    """
    import apache_beam as beam

    from components.content_embedder import executor

    with tempfile.TemporaryDirectory() as scratch:
        with beam.Pipeline() as pipeline:
            executor.write_outputs(pipeline | beam.Create(records), handles, scratch)
        return read_item_embeddings(scratch), read_quarantine(scratch)

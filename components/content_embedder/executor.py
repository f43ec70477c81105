"""ContentEmbedder executor: a Beam pipeline of parse -> RunInference -> tf.Example per item.

Items whose content cannot be encoded (today: empty text) keep their record
without that embedding and are listed, with item id and reason, in
`quarantine.jsonl` beside the output; the run goes on.
"""
import json
import os
from typing import Any, Iterable, Optional, Sequence

import apache_beam as beam
import numpy as np
import tensorflow as tf
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils

from components.content_embedder import spec
from towers import features as F

SPLIT = "items"
RECORDS_FILE = "item_embeddings"
QUARANTINE_FILE = "quarantine.jsonl"
TEXT = "text"
QUARANTINE_TAG = "quarantine"


class EncoderModelHandler(ModelHandler[str, PredictionResult, Any]):
    """RunInference handler for a TF-Hub-format encoder (string [batch] -> float [batch, dim])."""

    def __init__(self, handle: str, min_batch_size: int = 16, max_batch_size: int = 128):
        self._handle = handle
        self._batching = {"min_batch_size": min_batch_size, "max_batch_size": max_batch_size}

    def load_model(self):
        from towers.encoders import registry

        return registry.load(self._handle)

    def run_inference(self, batch: Sequence[str], model, inference_args: Optional[dict] = None) -> Iterable[PredictionResult]:
        outputs = model(tf.constant(list(batch))).numpy()
        return [PredictionResult(example, output) for example, output in zip(batch, outputs)]

    def batch_elements_kwargs(self):
        return self._batching

    def share_model_across_processes(self) -> bool:
        return False


class ParseItem(beam.DoFn):
    """Serialized catalog tf.Example -> (item_id, text); items with no text go to the quarantine output."""

    def process(self, serialized: bytes):
        example = tf.train.Example.FromString(serialized)
        feature = example.features.feature
        item_id = feature[F.ITEM_ID].bytes_list.value[0].decode()
        texts = feature[F.ITEM_TEXT].bytes_list.value if F.ITEM_TEXT in feature else []
        text = texts[0].decode().strip() if texts else ""
        if not text:
            yield beam.pvalue.TaggedOutput(QUARANTINE_TAG, {"item_id": item_id, "modality": TEXT, "reason": "empty text"})
            return
        yield item_id, text


def to_example(item_id: str, embedding: np.ndarray) -> bytes:
    """(item_id, text embedding [dim]) -> serialized tf.Example."""
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                F.ITEM_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[item_id.encode()])),
                F.TEXT_EMBEDDING: tf.train.Feature(float_list=tf.train.FloatList(value=embedding.tolist())),
            }
        )
    ).SerializeToString()


def embed_items(records, text_handle: str):
    """Beam: serialized catalog records -> (serialized embedding examples, quarantine dicts)."""
    parsed = records | "Parse" >> beam.ParDo(ParseItem()).with_outputs(QUARANTINE_TAG, main="items")
    embedded = (
        parsed.items
        | "EncodeText" >> RunInference(KeyedModelHandler(EncoderModelHandler(text_handle)))
        | "ToExample" >> beam.MapTuple(lambda item_id, result: to_example(item_id, result.inference))
    )
    return embedded, parsed[QUARANTINE_TAG]


class Executor(base_beam_executor.BaseBeamExecutor):
    def Do(self, input_dict: dict, output_dict: dict, exec_properties: dict) -> None:
        handles = json.loads(exec_properties[spec.ENCODER_HANDLES_KEY])
        catalog = artifact_utils.get_single_instance(input_dict[spec.CATALOG_KEY])
        files = [
            os.path.join(uri, "*")
            for split in artifact_utils.decode_split_names(catalog.split_names)
            for uri in [artifact_utils.get_split_uri([catalog], split)]
        ]
        output = artifact_utils.get_single_instance(output_dict[spec.ITEM_EMBEDDINGS_KEY])
        output.split_names = artifact_utils.encode_split_names([SPLIT])
        out_dir = os.path.join(output.uri, f"Split-{SPLIT}")
        with self._make_beam_pipeline() as pipeline:
            records = pipeline | "ReadCatalog" >> beam.Create(files) | beam.io.ReadAllFromTFRecord()
            embedded, quarantined = embed_items(records, handles[TEXT])
            _ = embedded | "Write" >> beam.io.WriteToTFRecord(os.path.join(out_dir, RECORDS_FILE), file_name_suffix=".gz")
            _ = (
                quarantined
                | "QuarantineJson" >> beam.Map(json.dumps)
                | "WriteQuarantine" >> beam.io.WriteToText(os.path.join(output.uri, QUARANTINE_FILE), shard_name_template="")
            )
        with tf.io.gfile.GFile(os.path.join(output.uri, QUARANTINE_FILE)) as f:
            output.set_int_custom_property("num_quarantined", sum(1 for line in f if line.strip()))

"""DatasetGen: ingestion as a TFX component: a data contract's files -> the interactions' and the catalog's Examples.

It builds the dataset with mmdata.registry.build in the Beam pipeline TFX makes
from the pipeline's Beam options (DirectRunner here; Dataflow, Flink or Spark
with a pipeline.beam_profiles profile), into `data_dir` (the run's dataset
folder, which the Trainer's catalog path and `mmtower recommend` also read); an
identical earlier build there is reused (the contract's fingerprint: its file
and its data files' sizes and times). Then it publishes one span's splits
(train / validation / eval) as `examples` and the catalog as `catalog`, in the
layout ImportExampleGen writes (`Split-<name>/`, gzipped tf.Example records),
so that everything downstream reads them as it reads an ExampleGen's.

`mmtower compile --config` puts it at the head of the compiled DAG: the
contract's files (e.g. gs://) are read inside the pipeline, by its runner,
with no build on the compiling machine. Bad rows are quarantined with file,
line, column and reason in `<data_dir>/quarantine.jsonl`; the component's
`num_quarantined` output value counts them.
"""

import os
from typing import TypedDict

import apache_beam as beam
from tfx import v1 as tfx

from towers.contract import CATALOG_FILE, CATALOG_SPLIT, RECORD_FILE, SPLITS

EXAMPLES_FILE_FORMAT = "tfrecords_gzip"


class Counts(TypedDict):
    """DatasetGen's output values: the published span's sizes and the build's quarantined rows."""

    num_train: int
    num_eval: int
    num_quarantined: int


def resolve(dataset: str):
    """A registered dataset's spec from its name, or from a data contract's path (a .yaml/.yml file, local or gs://)."""
    from mmdata import registry

    return registry.from_contract(dataset) if dataset.endswith((".yaml", ".yml")) else registry.get(dataset)


def publish(data_dir: str, span: int, examples, catalog) -> None:
    """Copies span `span`'s splits and the catalog of the dataset in `data_dir` into the two Examples artifacts."""
    import tensorflow as tf
    from tfx.components.util import examples_utils
    from tfx.proto import example_gen_pb2
    from tfx.types import artifact_utils

    from mmdata.records import split_dir

    def copy(source: str, artifact, split: str) -> None:
        target = os.path.join(artifact.uri, f"Split-{split}")
        tf.io.gfile.makedirs(target)
        tf.io.gfile.copy(source, os.path.join(target, os.path.basename(source)), overwrite=True)

    for split in SPLITS:
        copy(os.path.join(split_dir(data_dir, split, span), RECORD_FILE), examples, split)
    copy(os.path.join(data_dir, CATALOG_FILE), catalog, CATALOG_SPLIT)
    for artifact, splits in ((examples, SPLITS), (catalog, (CATALOG_SPLIT,))):
        artifact.split_names = artifact_utils.encode_split_names(list(splits))
        examples_utils.set_payload_format(artifact, example_gen_pb2.FORMAT_TF_EXAMPLE)
        examples_utils.set_file_format(artifact, EXAMPLES_FILE_FORMAT)
    examples.span = span
    examples.set_int_custom_property("span", span)  # where ImportExampleGen records it (components.drift_validator reads it)


@tfx.dsl.components.component(use_beam=True)
def DatasetGen(
    examples: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Examples],
    catalog: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Examples],
    dataset: tfx.dsl.components.Parameter[str],
    data_dir: tfx.dsl.components.Parameter[str],
    span: tfx.dsl.components.Parameter[int] = 0,
    beam_pipeline: tfx.dsl.components.BeamComponentParameter[beam.Pipeline] = None,
) -> Counts:
    """Builds `dataset` (a registered name, or a data contract's path) into `data_dir`; publishes span `span` (0: the latest)."""
    from mmdata import registry

    spec = resolve(dataset)
    manifest = registry.build(spec.name, data_dir, beam_pipeline=beam_pipeline)
    chosen = span or manifest.spans
    publish(data_dir, chosen, examples, catalog)
    train, _, evaluation = manifest.span_sizes[chosen - 1]
    return Counts(num_train=train, num_eval=evaluation, num_quarantined=manifest.num_quarantined)

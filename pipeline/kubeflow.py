"""`mmtower compile --target kubeflow`: the same DAG as a KFP v2 pipeline spec (Kubeflow Pipelines, Vertex AI).

TFX's KubeflowV2DagRunner writes the JSON; every component runs in the
mmtower container image (Dockerfile: the project, its lock and the exported
encoders), Beam stages on the runner a profile names (pipeline.beam_profiles).
Run-time parameters: `examples-dir` (the interactions' train/ and eval/
folders; not with a data contract, whose files DatasetGen reads and builds
inside the pipeline) and `min-recall-at-100` (the RetrievalEvaluator's floor);
everything else comes from the same pipeline.config.Options `mmtower run`
builds from the same flags, fixed at compile time (TFX's Kubeflow V2 compiler
takes run-time parameters only as top-level component parameters, and the
Trainer reads its hyperparameters from `custom_config`). `schedule()` creates a recurring run of a
compiled spec through the `kfp` client.
"""

from __future__ import annotations

import json
import os

from mmdata import registry
from pipeline.config import Options, PipelineConfig, schema_path

IMAGE_ROOT = "/opt/mmtower"  # where the Dockerfile puts the checkout; encoders under <root>/encoders
EXAMPLES_PARAM = "examples-dir"
MIN_RECALL_PARAM = "min-recall-at-100"
RUNTIME_PARAMETERS = (EXAMPLES_PARAM, MIN_RECALL_PARAM)


def pipeline_config(
    dataset: str, data_root: str, pipeline_root: str, serving_dir: str, options: Options, beam_args: list[str], contract: str = ""
) -> PipelineConfig:
    """The PipelineConfig of a compiled pipeline: cloud folders (e.g. gs://...), the image's encoders and schemas.

    Args:
      dataset: registered dataset (its schema, slices and encoders); unused with `contract`.
      data_root: the built dataset (`mmtower run` writes one under <output>/data/<dataset>; copy it up);
        with `contract`, where the pipeline's DatasetGen builds it.
      pipeline_root: component outputs.
      serving_dir: where the Pusher writes the served models (TF Serving reads it).
      options: what the pipeline computes: the same Options `mmtower run` builds from the same flags.
      beam_args: Beam options of the Beam-based components (pipeline.beam_profiles).
      contract: a data contract (e.g. gs://bucket/shop/mmtower.yaml) whose files the pipeline reads and builds
        (components.dataset_gen); its curated schema, schema/schema.pbtxt beside it, must exist: a first
        `mmtower run --config` infers it.

    Raises:
      mmdata.contract.ContractError: the contract does not match its files.
      FileNotFoundError: the contract's schema is missing.
    """
    from towers.encoders import registry as encoders

    schema = None
    if contract:
        spec = registry.from_contract(contract)
        dataset, schema = spec.name, spec.schema_file
        if not _exists(schema):
            raise FileNotFoundError(
                f"{schema} not found: run `mmtower run --config {contract}` once (on a sample of the files, if they are large) "
                "to infer it, curate it, and keep it beside the contract"
            )

    handles = {
        name: encoders.local_handle(name, os.path.join(IMAGE_ROOT, "encoders"))
        for name in encoders.encoders_for(registry.get(dataset).modalities)
    }
    return PipelineConfig(
        dataset=dataset,
        data_root=data_root.rstrip("/"),
        pipeline_root=pipeline_root.rstrip("/"),
        serving_dir=serving_dir.rstrip("/"),
        encoder_handles=handles,
        schema_path=schema or schema_path(dataset, os.path.join(IMAGE_ROOT, "schemas")),
        features=registry.get(dataset).features,
        options=options,
        beam_pipeline_args=tuple(beam_args),
        ingest=contract,
    )


def _exists(path: str) -> bool:
    import tensorflow as tf

    return tf.io.gfile.exists(path)


def build(config: PipelineConfig):
    """The tfx.dsl.Pipeline with run-time parameters (their defaults: the config's values), metadata left to Kubeflow."""
    from tfx import v1 as tfx

    from pipeline.pipeline import create_pipeline

    parameter = tfx.dsl.experimental.RuntimeParameter
    return create_pipeline(
        config,
        examples_dir=None if config.ingest else parameter(name=EXAMPLES_PARAM, ptype=str, default=config.examples_dir),
        min_recall_at_100=parameter(name=MIN_RECALL_PARAM, ptype=float, default=config.options.min_recall_at_100),
    )


SPEC_FILENAME = "mmtower-pipeline.json"


def compile_spec(config: PipelineConfig, image: str, output_path: str) -> str:
    """Writes the KFP v2 pipeline JSON (`output_path`, or SPEC_FILENAME inside it when it is a folder); returns its path."""
    from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner

    if os.path.isdir(output_path):
        output_path = os.path.join(output_path, SPEC_FILENAME)
    output_dir, filename = os.path.split(os.path.abspath(output_path))
    os.makedirs(output_dir, exist_ok=True)
    runner = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
        config=kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=output_dir,
        output_filename=filename,
    )
    runner.run(build(config), write_out=True)
    return os.path.join(output_dir, filename)


def schedule(
    spec_path: str, host: str, cron: str, job_name: str | None = None, parameters: dict | None = None, experiment: str = "mmtower"
):
    """A recurring run of a compiled pipeline on a Kubeflow Pipelines endpoint (`cron`: six fields, with seconds)."""
    import kfp

    client = kfp.Client(host=host)
    experiment_id = client.create_experiment(experiment).experiment_id
    with open(spec_path) as f:
        name = json.load(f)["pipelineSpec"]["pipelineInfo"]["name"]
    return client.create_recurring_run(
        experiment_id=experiment_id,
        job_name=job_name or f"{name}-recurring",
        cron_expression=cron,
        pipeline_package_path=spec_path,
        params=parameters or {},
        max_concurrency=1,
        no_catchup=True,
    )

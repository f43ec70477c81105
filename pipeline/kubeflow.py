"""`mmtower compile --target kubeflow`: the same DAG as a KFP v2 pipeline spec (Kubeflow Pipelines, Vertex AI).

TFX's KubeflowV2DagRunner writes the JSON; every component runs in the
mmtower container image (Dockerfile: the project, its lock and the exported
encoders), Beam stages on the runner a profile names (pipeline.beam_profiles).
Run-time parameters: `examples-dir` (the interactions' train/ and eval/
folders) and `min-recall-at-100` (the RetrievalEvaluator's floor);
hyperparameters (epochs, ...) are fixed at compile time (TFX's Kubeflow V2
compiler takes run-time parameters only as top-level component parameters, and
the Trainer reads them from `custom_config`). `schedule()` creates a recurring run of a
compiled spec through the `kfp` client.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from datasets.records import CATALOG_FILE, EXAMPLES_DIR

IMAGE_ROOT = "/opt/mmtower"  # where the Dockerfile puts the checkout; encoders under <root>/encoders
EXAMPLES_PARAM = "examples-dir"
MIN_RECALL_PARAM = "min-recall-at-100"
RUNTIME_PARAMETERS = (EXAMPLES_PARAM, MIN_RECALL_PARAM)


@dataclass
class KubeflowConfig:
    """Where a compiled pipeline reads and writes (cloud paths, e.g. gs://...), and what it runs on.

    Attributes:
      dataset: registered dataset (its schema, slices and encoders).
      data_root: the built dataset (`mmtower run` writes one under <output>/data/<dataset>; copy it up).
      pipeline_root: component outputs.
      serving_dir: where the Pusher writes the served models (TF Serving reads it).
      image: the container image built from the Dockerfile.
      beam_args: Beam options of the Beam-based components (pipeline.beam_profiles).
      hparams_json: towers.hparams.HParams as JSON.
      warm_start: each run starts from the last blessed model and trains on the events after its data
        (ExampleGen ingests the latest span of `<data_root>/examples/span-{SPAN}/`).
      require_beat_baseline: bless only a model whose served recommend beats the best simple baseline.
    """

    dataset: str
    data_root: str
    pipeline_root: str
    serving_dir: str
    image: str
    beam_args: list[str] = field(default_factory=list)
    hparams_json: str = ""
    warm_start: bool = False
    require_beat_baseline: bool = False


def pipeline_name(dataset: str) -> str:
    """Kubeflow pipeline names are [a-z0-9-]."""
    name = f"mmtower-{dataset}".lower()
    if not all(c.isalnum() or c == "-" for c in name):
        raise ValueError(f"{name!r} is not a valid Kubeflow pipeline name ([a-z0-9-])")
    return name


def build(config: KubeflowConfig):
    """The tfx.dsl.Pipeline with run-time parameters, metadata left to Kubeflow."""
    from tfx import v1 as tfx

    from components.retrieval_evaluator.executor import Thresholds
    from components.trainer import CATALOG_KEY, HPARAMS_KEY, TEXT_ENCODER_KEY
    from datasets import registry
    from pipeline import code_version, eval_config, local_runner
    from pipeline.pipeline import create_pipeline
    from serving.config import RECOMMENDER
    from towers.encoders import registry as encoders

    spec = registry.get(config.dataset)
    handles = {name: encoders.local_handle(name, os.path.join(IMAGE_ROOT, "encoders")) for name in spec.modalities}
    schema = os.path.join(IMAGE_ROOT, "schemas", os.path.relpath(local_runner.schema_path(config.dataset), local_runner.SCHEMAS_DIR))
    parameter = tfx.dsl.experimental.RuntimeParameter
    return create_pipeline(
        pipeline_name=pipeline_name(config.dataset),
        pipeline_root=config.pipeline_root,
        examples_dir=parameter(name=EXAMPLES_PARAM, ptype=str, default=f"{config.data_root}/{EXAMPLES_DIR}"),
        catalog_dir=f"{config.data_root}/{os.path.dirname(CATALOG_FILE)}",
        encoder_handles=handles,
        schema_path=schema,
        trainer_custom_config={
            HPARAMS_KEY: config.hparams_json,
            CATALOG_KEY: f"{config.data_root}/{CATALOG_FILE}",
            TEXT_ENCODER_KEY: handles.get("text", ""),
        },
        code_version=code_version.code_version(),
        eval_config=eval_config.build(0.5, 0.02, spec.slice_features),
        retrieval_thresholds=Thresholds(require_beat_baseline=config.require_beat_baseline),
        serving_model_dir=f"{config.serving_dir}/{RECOMMENDER}",
        metadata_connection_config=None,
        beam_pipeline_args=config.beam_args,
        min_recall_at_100=parameter(name=MIN_RECALL_PARAM, ptype=float, default=Thresholds().min_recall_at_100),
        warm_start=config.warm_start,
    )


SPEC_FILENAME = "mmtower-pipeline.json"


def compile_spec(config: KubeflowConfig, output_path: str) -> str:
    """Writes the KFP v2 pipeline JSON (`output_path`, or SPEC_FILENAME inside it when it is a folder); returns its path."""
    from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner

    if os.path.isdir(output_path):
        output_path = os.path.join(output_path, SPEC_FILENAME)
    output_dir, filename = os.path.split(os.path.abspath(output_path))
    os.makedirs(output_dir, exist_ok=True)
    runner = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
        config=kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(default_image=config.image),
        output_dir=output_dir,
        output_filename=filename,
    )
    runner.run(build(config), write_out=True)
    return os.path.join(output_dir, filename)


def schedule(spec_path: str, host: str, cron: str, job_name: str | None = None, parameters: dict | None = None, experiment: str = "mmtower"):
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

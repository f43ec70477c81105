"""Runs the pipeline on this machine: LocalDagRunner, SQLite ML Metadata, Beam DirectRunner."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from datasets import registry
from datasets.records import CATALOG_FILE, EXAMPLES_DIR, QUARANTINE_FILE, TEMPORAL
from pipeline import eval_config, progress
from pipeline.code_version import code_version
from pipeline.runs import RunPaths
from towers.encoders import registry as encoders
from towers.hparams import HParams

SCHEMAS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "schemas")


@dataclass
class RunConfig:
    """Everything `mmtower run` can be told.

    Attributes:
      dataset: registry name (datasets.registry.DATASETS).
      output: output folder (see pipeline.runs.RunPaths).
      hparams: model hyperparameters.
      max_users: build the dataset from the first N users only (tests, demos).
      cold_item_fraction: share of the eval split's items kept out of training
        entirely, to measure cold-start recommendation from content (None:
        the dataset's default).
      split: records.TEMPORAL (the latest interactions are evaluation data) or
        records.RANDOM (a random share: the TFRS tutorials' protocol).
      eval_fraction: share of interactions held out (None: the dataset's default).
      validation_fraction: share of the training period (its latest part) held out as the
        validation split, on which choices are made (None: the dataset's default).
      min_recall_at_100: blessing floor on retrieval Recall@100.
      max_regression: allowed retrieval Recall@100 drop versus the last blessed model.
      require_beat_baseline: the served recommend must beat the best simple baseline on
        Recall@10 (both 95% intervals of the ratio above 1) to be blessed; default: a warning.
      min_auc: blessing floor on the ranking model's like AUC (TFMA).
      max_auc_regression: allowed AUC drop versus the last blessed model.
      direct_num_workers: Beam DirectRunner processes; 1 runs in memory.
      beam_pipeline_args: Beam options instead of the DirectRunner's (pipeline.beam_profiles: Dataflow, Flink, Spark).
      enable_cache: reuse unchanged components' outputs from ML Metadata.
      encoder_handles: modality -> encoder handle; default: the local exports
        (`mmtower encoders export`). A TF-Hub/Kaggle handle works the same.
      spans: build the dataset as this many cumulative snapshots (examples/span-<k>/).
      span: the span ExampleGen ingests; None: the latest.
      warm_start: train from the last blessed model on the events after its data (incremental).
    """

    dataset: str = registry.DEFAULT_DATASET
    output: str = "output"
    hparams: HParams = field(default_factory=HParams)
    max_users: int | None = None
    cold_item_fraction: float | None = None
    split: str = TEMPORAL
    eval_fraction: float | None = None
    validation_fraction: float | None = None
    min_recall_at_100: float = 0.05
    max_regression: float = 0.02
    require_beat_baseline: bool = False
    min_auc: float = 0.5
    max_auc_regression: float = 0.02
    direct_num_workers: int = 2
    beam_pipeline_args: list[str] | None = None
    enable_cache: bool = True
    encoder_handles: dict[str, str] | None = None
    spans: int = 1
    span: int | None = None
    warm_start: bool = False

    def __post_init__(self):
        if self.spans < 1 or (self.span is not None and not 1 <= self.span <= self.spans):
            raise ValueError(f"--span must be between 1 and --spans ({self.spans}), and --spans at least 1")


def schema_path(dataset: str) -> str:
    return os.path.join(SCHEMAS_DIR, registry.get(dataset).schema_name, "schema.pbtxt")


def beam_args(num_workers: int) -> list[str]:
    if num_workers <= 1:
        return ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
    return ["--direct_running_mode=multi_processing", f"--direct_num_workers={num_workers}"]


def build_pipeline(config: RunConfig, paths: RunPaths):
    from tfx import v1 as tfx

    from components.retrieval_evaluator.executor import Thresholds
    from components.trainer import CATALOG_KEY, HPARAMS_KEY, TEXT_ENCODER_KEY
    from pipeline.pipeline import create_pipeline

    handles = config.encoder_handles or {name: encoders.local_handle(name) for name in registry.get(config.dataset).modalities}
    return create_pipeline(
        pipeline_name=paths.pipeline_name,
        pipeline_root=paths.pipeline_root,
        examples_dir=os.path.join(paths.data_dir, EXAMPLES_DIR),
        catalog_dir=os.path.dirname(os.path.join(paths.data_dir, CATALOG_FILE)),
        encoder_handles=handles,
        schema_path=schema_path(config.dataset),
        trainer_custom_config={
            HPARAMS_KEY: config.hparams.to_json(),
            CATALOG_KEY: os.path.join(paths.data_dir, CATALOG_FILE),
            TEXT_ENCODER_KEY: handles.get("text", ""),
        },
        code_version=code_version(),
        eval_config=eval_config.build(config.min_auc, config.max_auc_regression, registry.get(config.dataset).slice_features),
        retrieval_thresholds=Thresholds(min_recall_at_100=config.min_recall_at_100, max_regression=config.max_regression, require_beat_baseline=config.require_beat_baseline),
        serving_model_dir=paths.serving_model_dir(),
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(paths.metadata_path),
        beam_pipeline_args=config.beam_pipeline_args or beam_args(config.direct_num_workers),
        evaluator_beam_pipeline_args=beam_args(1) if config.hparams.retrieval_index == "scann" else None,
        span=config.span,
        warm_start=config.warm_start,
        enable_cache=config.enable_cache,
    )


def run(config: RunConfig) -> tuple[RunPaths, dict[str, float]]:
    """Builds the dataset if needed and runs the pipeline.

    Returns:
      (paths, wall seconds per step, including 'dataset' and 'total').
    """
    paths = RunPaths(os.path.abspath(config.output), config.dataset)
    os.makedirs(os.path.dirname(paths.log_file), exist_ok=True)
    handler = progress.install(paths.log_file)
    started = time.monotonic()
    handler.say(f"building dataset {config.dataset} -> {paths.data_dir}")
    manifest = registry.build(config.dataset, paths.data_dir, max_users=config.max_users, cold_item_fraction=config.cold_item_fraction, split=config.split, eval_fraction=config.eval_fraction, spans=config.spans, validation_fraction=config.validation_fraction)
    span = config.span or manifest.spans
    train, validation, evaluation = manifest.span_sizes[span - 1]
    handler.say(
        f"✔ dataset: {f'span {span} of {manifest.spans}: ' if manifest.spans > 1 else ''}{train:,} train / {validation:,} validation / {evaluation:,} eval interactions, "
        f"{manifest.num_items:,} items ({manifest.num_cold_items} new in eval, {manifest.num_validation_cold_items} new in validation: no training interactions), {manifest.num_quarantined} source rows with issues ({os.path.join(paths.data_dir, QUARANTINE_FILE)})"
    )
    wall_times = {"dataset": time.monotonic() - started}
    from tfx import v1 as tfx

    if config.hparams.retrieval_index == "scann":
        from towers import scann_index

        scann_index.load_ops()  # the in-process Evaluator loads a ScaNN-indexed model
    tfx.orchestration.LocalDagRunner().run(build_pipeline(config, paths))
    wall_times.update(handler.wall_times)
    wall_times["total"] = time.monotonic() - started
    return paths, wall_times

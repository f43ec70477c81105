"""The mmtower DAG. Builds a tfx.dsl.Pipeline; runners own paths and metadata.

ImportExampleGen (or DatasetGen, which builds the dataset from a data contract inside the pipeline) -> StatisticsGen -> ImportSchemaGen -> ExampleValidator and
DriftValidator (this span's statistics against the last accepted run's, with the
schema's drift comparators, and, given logged requests, the training split against
their statistics with its skew comparators) -> ValidationGate -> Transform -> Trainer (retrieval + ranking) -> Evaluator
(TFMA, ranking) -> RetrievalEvaluator (retrieval; also requires the
Evaluator's blessing) -> Pusher, both evaluators comparing with the last model
the RetrievalEvaluator blessed. Baselines (most-popular, recently popular,
co-occurrence and content kNN; parameters chosen on the validation split) are
scored on the same eval events and compared with the model by the
RetrievalEvaluator. The catalog (CatalogExampleGen) is embedded once per item
by ContentEmbedder for the Trainer and the content kNN. The Trainer validates
on the validation split; only the evaluators read the eval split.
"""

from __future__ import annotations

import os
from typing import Optional

from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx
from tfx.dsl.components.base import executor_spec

from components import content_trainer
from components import pusher as pusher_executor
from components.baselines import Baselines
from components.content_embedder.component import ContentEmbedder
from components.dataset_gen import DatasetGen
from components.drift_validator import DriftValidator
from components.retrieval_evaluator.component import RetrievalEvaluator
from components.validation_gate import ValidationGate
from mmdata.requests import REQUESTS_FILE
from pipeline import eval_config
from pipeline.code_version import code_version
from pipeline.config import PipelineConfig
from towers.contract import (
    CATALOG_SPLIT,
    CODE_VERSION_KEY,
    DRIFT_BASELINE_RESOLVER,
    DRIFT_VALIDATOR,
    EVAL_SPLIT,
    RETRIEVAL_EVALUATOR,
    SERVING_SPLIT,
    SPAN_DIR,
    SPLITS,
    TRAIN_SPLIT,
    VALIDATION_SPLIT,
)
from towers.hparams import SCANN

PREPROCESSING_FN = "components.preprocessing.preprocessing_fn"
RUN_FN = "components.trainer.run_fn"
IN_PROCESS_BEAM_ARGS = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


def create_pipeline(
    config: PipelineConfig,
    metadata_connection_config: Optional[metadata_store_pb2.ConnectionConfig] = None,
    examples_dir=None,
    min_recall_at_100=None,
) -> tfx.dsl.Pipeline:
    """Builds the pipeline a PipelineConfig describes; every component's configuration comes from `config`.

    Args:
      config: options and places (pipeline.config).
      metadata_connection_config: ML Metadata store; None where the orchestrator provides it (Kubeflow).
      examples_dir: a run-time parameter standing for `config.examples_dir` (compiled pipelines).
      min_recall_at_100: a run-time parameter standing for the RetrievalEvaluator's floor (compiled pipelines).
    """
    options = config.options
    examples_dir = examples_dir if examples_dir is not None else config.examples_dir
    min_recall_at_100 = min_recall_at_100 if min_recall_at_100 is not None else options.min_recall_at_100
    code = code_version()
    input_config = tfx.proto.Input(splits=[tfx.proto.Input.Split(name=split, pattern=f"{SPAN_DIR}/{split}/*") for split in SPLITS])
    range_config = None
    span = options.span
    if span is not None:
        range_config = tfx.proto.RangeConfig(static_range=tfx.proto.StaticRange(start_span_number=span, end_span_number=span))
    if config.ingest:  # the dataset is built inside the pipeline, by its Beam runner
        example_gen = DatasetGen(dataset=config.ingest, data_dir=config.data_root, span=span or 0)
        catalog_gen, catalog = None, example_gen.outputs["catalog"]
    else:
        example_gen = tfx.components.ImportExampleGen(input_base=examples_dir, input_config=input_config, range_config=range_config)
        catalog_gen = tfx.components.ImportExampleGen(
            input_base=os.path.dirname(config.catalog_path),
            input_config=tfx.proto.Input(splits=[tfx.proto.Input.Split(name=CATALOG_SPLIT, pattern="*")]),
        ).with_id("CatalogExampleGen")
        catalog = catalog_gen.outputs["examples"]
    content_embedder = ContentEmbedder(catalog=catalog, encoder_handles=dict(config.encoder_handles))
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_gen = tfx.components.ImportSchemaGen(schema_file=config.schema_path)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    # The statistics the last DriftValidator accepted (its `baseline` output): a previous run's, never this
    # run's, since this run's DriftValidator consumes what the resolver resolved and so publishes after it.
    # Kubeflow's V2 compiler queries by artifact type only (the newest live ExampleStatistics), so the resolver
    # also runs before this run's StatisticsGen, which then cannot be the newest one it sees.
    drift_baseline = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestArtifactStrategy,
        statistics=tfx.dsl.Channel(
            type=tfx.types.standard_artifacts.ExampleStatistics, producer_component_id=DRIFT_VALIDATOR, output_key="baseline"
        ),
    ).with_id(DRIFT_BASELINE_RESOLVER)
    statistics_gen.add_upstream_node(drift_baseline)
    requests = []  # logged requests: their statistics, for skew against the training split
    if config.requests_dir:
        requests_gen = tfx.components.ImportExampleGen(
            input_base=config.requests_dir,
            input_config=tfx.proto.Input(splits=[tfx.proto.Input.Split(name=SERVING_SPLIT, pattern=REQUESTS_FILE)]),
            output_config=tfx.proto.Output(  # one split, not ExampleGen's default train/eval hash split of one input
                split_config=tfx.proto.SplitConfig(splits=[tfx.proto.SplitConfig.Split(name=SERVING_SPLIT, hash_buckets=1)])
            ),
        ).with_id("RequestsExampleGen")
        requests = [requests_gen, tfx.components.StatisticsGen(examples=requests_gen.outputs["examples"]).with_id("RequestsStatisticsGen")]
    drift_validator = DriftValidator(
        examples=example_gen.outputs["examples"],
        statistics=statistics_gen.outputs["statistics"],
        schema=schema_gen.outputs["schema"],
        previous=drift_baseline.outputs["statistics"],
        serving=requests[1].outputs["statistics"] if requests else None,
    ).with_id(DRIFT_VALIDATOR)
    validation_gate = ValidationGate(anomalies=example_validator.outputs["anomalies"], drift=drift_validator.outputs["drift"])
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        splits_config=tfx.proto.SplitsConfig(analyze=[TRAIN_SPLIT], transform=list(SPLITS)),
        custom_config={**config.transform_custom_config(), CODE_VERSION_KEY: code},
    )
    transform.add_upstream_node(validation_gate)
    # Only the RetrievalEvaluator's blessing (which includes TFMA's) makes a model "last blessed".
    model_resolver = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(
            type=tfx.types.standard_artifacts.ModelBlessing, producer_component_id=RETRIEVAL_EVALUATOR, output_key="blessing"
        ),
    ).with_id("latest_blessed_model_resolver")
    trainer = content_trainer.Trainer(
        item_embeddings=content_embedder.outputs["item_embeddings"],
        raw_examples=example_gen.outputs["examples"],
        run_fn=RUN_FN,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(splits=[TRAIN_SPLIT]),
        eval_args=tfx.proto.EvalArgs(splits=[VALIDATION_SPLIT]),
        custom_config={**config.trainer_custom_config(), CODE_VERSION_KEY: code},
        base_model=model_resolver.outputs["model"] if options.warm_start else None,
    )
    baselines = Baselines(
        examples=example_gen.outputs["examples"],
        catalog=catalog,
        item_embeddings=content_embedder.outputs["item_embeddings"],
        code_version=code,
    )
    baselines.add_upstream_node(validation_gate)
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=model_resolver.outputs["model"],
        eval_config=eval_config.build(options.min_auc, options.max_auc_regression, config.slice_features()),
        example_splits=[EVAL_SPLIT],
    )
    if options.hparams.retrieval_index == SCANN:  # in process, so that its workers have the Scann ops the model needs
        evaluator = evaluator.with_beam_pipeline_args(IN_PROCESS_BEAM_ARGS)
    retrieval_evaluator = RetrievalEvaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        thresholds=options.thresholds(),
        baseline_model=model_resolver.outputs["model"],
        tfma_blessing=evaluator.outputs["blessing"],
        baselines=baselines.outputs["evaluation"],
        min_recall_at_100=min_recall_at_100,
    ).with_id(RETRIEVAL_EVALUATOR)
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"],
        model_blessing=retrieval_evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=config.serving_model_dir)
        ),
        custom_executor_spec=executor_spec.ExecutorClassSpec(pusher_executor.Executor),
    )
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=[
            example_gen,
            *([catalog_gen] if catalog_gen else []),
            content_embedder,
            statistics_gen,
            schema_gen,
            example_validator,
            drift_baseline,
            *requests,
            drift_validator,
            validation_gate,
            transform,
            trainer,
            baselines,
            model_resolver,
            evaluator,
            retrieval_evaluator,
            pusher,
        ],
        enable_cache=options.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(config.beam_pipeline_args),
    )

"""The mmtower DAG. Builds a tfx.dsl.Pipeline; runners own paths and metadata.

ImportExampleGen -> StatisticsGen -> ImportSchemaGen -> ExampleValidator ->
ValidationGate -> Transform -> Trainer (retrieval + ranking) -> Evaluator
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

from typing import Optional

import tensorflow_model_analysis as tfma
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx
from tfx.dsl.components.base import executor_spec

from components import content_trainer
from components.baselines import Baselines
from components.evaluation import CATALOG_SPLIT, EVAL_SPLIT, TRAIN_SPLIT, VALIDATION_SPLIT
from components import pusher as pusher_executor
from components.content_embedder.component import ContentEmbedder
from components.retrieval_evaluator.component import RetrievalEvaluator
from components.retrieval_evaluator.executor import Thresholds
from components.validation_gate import ValidationGate
from datasets.records import SPAN_DIR

PREPROCESSING_FN = "components.preprocessing.preprocessing_fn"
RUN_FN = "components.trainer.run_fn"
SPLITS = (TRAIN_SPLIT, VALIDATION_SPLIT, EVAL_SPLIT)
CODE_VERSION_KEY = "code_version"
RETRIEVAL_EVALUATOR_ID = "RetrievalEvaluator"


def create_pipeline(
    pipeline_name: str,
    pipeline_root: str,
    examples_dir: str,
    catalog_dir: str,
    encoder_handles: dict[str, str],
    schema_path: str,
    trainer_custom_config: dict,
    code_version: str,
    eval_config: tfma.EvalConfig,
    retrieval_thresholds: Thresholds,
    serving_model_dir: str,
    metadata_connection_config: Optional[metadata_store_pb2.ConnectionConfig] = None,
    beam_pipeline_args: Optional[list[str]] = None,
    evaluator_beam_pipeline_args: Optional[list[str]] = None,
    min_recall_at_100=None,
    span: Optional[int] = None,
    warm_start: bool = False,
    enable_cache: bool = True,
) -> tfx.dsl.Pipeline:
    """Builds the retrieval pipeline.

    Args:
      pipeline_name: name in metadata ([a-z0-9-] to compile for Kubeflow).
      pipeline_root: where component outputs go.
      examples_dir: folder with `span-<N>/{train,validation,eval}/` TFRecords of tf.Example.
      catalog_dir: folder with the item catalog TFRecords (one tf.Example per item).
      encoder_handles: modality -> content encoder handle (local path or TF-Hub/Kaggle).
      schema_path: curated raw schema.pbtxt.
      trainer_custom_config: passed to run_fn (hyperparameters, catalog path).
      code_version: fingerprint of the module code (pipeline.code_version), part
        of the cache key of the components that run it.
      eval_config: TFMA config of the ranking model, with its blessing thresholds.
      retrieval_thresholds: the RetrievalEvaluator's floors and allowed regression.
      serving_model_dir: the recommender's Pusher base directory (`<serving dir>/recommender`); versions
        land in subfolders, the ranker and item encoder beside it, models.config in `<serving dir>`.
      metadata_connection_config: ML Metadata store.
      beam_pipeline_args: Beam options for the Beam-based components.
      evaluator_beam_pipeline_args: extra Beam options for the TFMA Evaluator (e.g. in-process, so that
        its workers have the Scann ops a ScaNN-indexed model needs).
      min_recall_at_100: if set (a float or a RuntimeParameter), the RetrievalEvaluator's floor instead of retrieval_thresholds'.
      span: the span ExampleGen ingests (`<examples_dir>/span-<N>/`); None: the latest one.
      warm_start: the Trainer starts from the last blessed model (its `base_model`) and trains
        only on the events after that model's data (components.trainer); False: from scratch.
      enable_cache: reuse outputs of unchanged components.

    `examples_dir` may be a RuntimeParameter (compiled pipelines take the data root at run time).
    """
    input_config = tfx.proto.Input(
        splits=[tfx.proto.Input.Split(name=split, pattern=f"{SPAN_DIR}/{split}/*") for split in SPLITS]
    )
    range_config = None
    if span is not None:
        range_config = tfx.proto.RangeConfig(static_range=tfx.proto.StaticRange(start_span_number=span, end_span_number=span))
    example_gen = tfx.components.ImportExampleGen(input_base=examples_dir, input_config=input_config, range_config=range_config)
    catalog_gen = tfx.components.ImportExampleGen(
        input_base=catalog_dir,
        input_config=tfx.proto.Input(splits=[tfx.proto.Input.Split(name=CATALOG_SPLIT, pattern="*")]),
    ).with_id("CatalogExampleGen")
    content_embedder = ContentEmbedder(catalog=catalog_gen.outputs["examples"], encoder_handles=encoder_handles)
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_gen = tfx.components.ImportSchemaGen(schema_file=schema_path)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    validation_gate = ValidationGate(anomalies=example_validator.outputs["anomalies"])
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        splits_config=tfx.proto.SplitsConfig(analyze=[TRAIN_SPLIT], transform=list(SPLITS)),
        custom_config={CODE_VERSION_KEY: code_version},
    )
    transform.add_upstream_node(validation_gate)
    # Only the RetrievalEvaluator's blessing (which includes TFMA's) makes a model "last blessed".
    model_resolver = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(
            type=tfx.types.standard_artifacts.ModelBlessing, producer_component_id=RETRIEVAL_EVALUATOR_ID, output_key="blessing"
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
        custom_config={**trainer_custom_config, CODE_VERSION_KEY: code_version},
        base_model=model_resolver.outputs["model"] if warm_start else None,
    )
    baselines = Baselines(
        examples=example_gen.outputs["examples"],
        catalog=catalog_gen.outputs["examples"],
        item_embeddings=content_embedder.outputs["item_embeddings"],
        code_version=code_version,
    )
    baselines.add_upstream_node(validation_gate)
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=model_resolver.outputs["model"],
        eval_config=eval_config,
        example_splits=[EVAL_SPLIT],
    )
    if evaluator_beam_pipeline_args:
        evaluator = evaluator.with_beam_pipeline_args(evaluator_beam_pipeline_args)
    retrieval_evaluator = RetrievalEvaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        thresholds=retrieval_thresholds,
        baseline_model=model_resolver.outputs["model"],
        tfma_blessing=evaluator.outputs["blessing"],
        baselines=baselines.outputs["evaluation"],
        min_recall_at_100=min_recall_at_100,
    ).with_id(RETRIEVAL_EVALUATOR_ID)
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"],
        model_blessing=retrieval_evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_model_dir)
        ),
        custom_executor_spec=executor_spec.ExecutorClassSpec(pusher_executor.Executor),
    )
    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=[
            example_gen,
            catalog_gen,
            content_embedder,
            statistics_gen,
            schema_gen,
            example_validator,
            validation_gate,
            transform,
            trainer,
            baselines,
            model_resolver,
            evaluator,
            retrieval_evaluator,
            pusher,
        ],
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args or [],
    )

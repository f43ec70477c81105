"""PipelineConfig: what the pipeline computes and where it reads and writes, built once, used by every runner.

`mmtower run` (pipeline.local_runner) and `mmtower compile` (pipeline.kubeflow)
both build one PipelineConfig and hand it to pipeline.create_pipeline, which
derives every component's configuration from it (the Trainer's custom_config,
TFMA's EvalConfig, the RetrievalEvaluator's thresholds). A local run and a
compiled one therefore differ only in where they read and write.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from components.retrieval_evaluator.thresholds import Thresholds
from mmdata import registry
from towers import features as F
from towers.contract import (
    CATALOG_FILE,
    CATALOG_PATH_KEY,
    EXAMPLES_DIR,
    FEATURE_ROLES_KEY,
    HPARAMS_KEY,
    RECOMMENDER,
    TEXT_ENCODER_KEY,
    pipeline_name,
)
from towers.hparams import HParams

SCHEMAS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "schemas")


@dataclass(frozen=True)
class Options:
    """What the pipeline computes: the same for every runner (the `mmtower run` and `mmtower compile` flags).

    Attributes:
      hparams: model hyperparameters.
      min_recall_at_100: blessing floor on retrieval Recall@100 (RetrievalEvaluator).
      max_regression: allowed retrieval Recall@100 drop versus the last blessed model.
      require_beat_baseline: the served recommend must beat the best simple baseline on
        Recall@10 (both 95% intervals of the ratio above 1) to be blessed; default: a warning.
      min_auc: blessing floor on the ranking model's like AUC (TFMA).
      max_auc_regression: allowed AUC drop versus the last blessed model.
      warm_start: train from the last blessed model on the events after its data (incremental).
      span: the span ExampleGen ingests; None: the latest.
      enable_cache: reuse unchanged components' outputs from ML Metadata.
    """

    hparams: HParams = field(default_factory=HParams)
    min_recall_at_100: float = Thresholds.min_recall_at_100
    max_regression: float = Thresholds.max_regression
    require_beat_baseline: bool = False
    min_auc: float = 0.5
    max_auc_regression: float = 0.02
    warm_start: bool = False
    span: int | None = None
    enable_cache: bool = True

    def thresholds(self) -> Thresholds:
        return Thresholds(
            min_recall_at_100=self.min_recall_at_100, max_regression=self.max_regression, require_beat_baseline=self.require_beat_baseline
        )


@dataclass(frozen=True)
class PipelineConfig:
    """One pipeline: its options and its places (local paths here, gs:// or the like on Kubeflow).

    Attributes:
      dataset: registered dataset (its schema, slices and encoders).
      data_root: a built dataset (mmdata: `examples/span-<N>/<split>/`, `catalog/`).
      pipeline_root: component outputs.
      serving_dir: where the Pusher publishes the served models (TF Serving's layout).
      encoder_handles: modality -> content encoder handle (a local path, or a TF-Hub/Kaggle handle).
      schema_path: the curated raw schema.pbtxt.
      features: the dataset's declared features (Transform and Trainer read them).
      options: what the pipeline computes.
      beam_pipeline_args: Beam options of the Beam-based components (pipeline.beam_profiles).
      ingest: a data contract's path (local or gs://) that the pipeline's DatasetGen builds into data_root
        with the pipeline's Beam runner (compiled pipelines); empty: data_root is built before the run
        and ImportExampleGen reads it (`mmtower run`).
      requests_dir: a folder of logged requests as tf.Examples (mmdata.requests); their statistics are compared
        with the training split's for skew (DriftValidator); empty: none.
    """

    dataset: str
    data_root: str
    pipeline_root: str
    serving_dir: str
    encoder_handles: dict[str, str]
    schema_path: str
    features: F.FeatureRoles
    options: Options = field(default_factory=Options)
    beam_pipeline_args: tuple[str, ...] = ()
    ingest: str = ""
    requests_dir: str = ""

    @property
    def pipeline_name(self) -> str:
        return pipeline_name(self.dataset)

    @property
    def examples_dir(self) -> str:
        return f"{self.data_root}/{EXAMPLES_DIR}"

    @property
    def catalog_path(self) -> str:
        return f"{self.data_root}/{CATALOG_FILE}"

    @property
    def serving_model_dir(self) -> str:
        """The recommender's base directory; the ranker and the item encoder are published beside it."""
        return f"{self.serving_dir}/{RECOMMENDER}"

    def transform_custom_config(self) -> dict:
        return {FEATURE_ROLES_KEY: self.features.to_json()}

    def trainer_custom_config(self) -> dict:
        return {
            **self.transform_custom_config(),
            HPARAMS_KEY: self.options.hparams.to_json(),
            CATALOG_PATH_KEY: self.catalog_path,
            TEXT_ENCODER_KEY: self.encoder_handles.get("text", ""),
        }

    def slice_features(self) -> tuple[str, ...]:
        return registry.get(self.dataset).slice_features


def schema_path(dataset: str, schemas_dir: str = SCHEMAS_DIR) -> str:
    """The curated schema of a dataset under a schemas folder (this checkout's, or the image's)."""
    spec = registry.get(dataset)
    return spec.schema_file or os.path.join(schemas_dir, spec.schema_name, registry.SCHEMA_FILE)

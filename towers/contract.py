"""The names every layer shares, declared once: splits, folders, files, served models, signatures.

This module sits at the bottom of the import graph beside `towers.features` (the
feature names) and imports nothing of the project. A dataset builder, a
component, a runner, the server and the CLI agree on where things are and what
they are called by importing these names, never by importing each other's
internals or retyping a string.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# --- Splits -------------------------------------------------------------------
TRAIN_SPLIT = "train"
VALIDATION_SPLIT = "validation"  # the latest part of the training period: choices are made on it, never on eval
EVAL_SPLIT = "eval"
SPLITS = (TRAIN_SPLIT, VALIDATION_SPLIT, EVAL_SPLIT)
SERVING_SPLIT = "serving"  # logged requests (mmdata.requests), compared with the training split for skew
CATALOG_SPLIT = "catalog"  # the CatalogExampleGen's input split (its output is hashed into train/eval splits)
ITEMS_SPLIT = "items"  # the ContentEmbedder's output split: one record per catalog item

# --- A dataset build (what ImportExampleGen and the catalog reader read) ---------
EXAMPLES_DIR = "examples"
SPAN_DIR = "span-{SPAN}"  # ExampleGen's span spec: examples/span-<N>/{train,validation,eval}/
RECORD_FILE = "data.tfrecord.gz"
CATALOG_FILE = "catalog/catalog.tfrecord.gz"
USERS_FILE = "users/users.tfrecord.gz"
MANIFEST_FILE = "manifest.json"
COLD_ITEMS_FILE = "cold_items.txt"  # the eval period's new items
VALIDATION_COLD_ITEMS_FILE = "validation_cold_items.txt"  # the validation period's

# --- Files inside artifacts -------------------------------------------------------
QUARANTINE_FILE = "quarantine.jsonl"  # rows, media or items refused, one JSON object per line with the reason
METRICS_FILE = "metrics.json"  # the Baselines' and the RetrievalEvaluator's results
PER_EVENT_FILE = "per_event.npz"  # the Baselines' per eval event metrics ("<baseline>/<metric>")
ITEM_EMBEDDINGS_FILE = "item_embeddings"  # prefix of the ContentEmbedder's TFRecord shards
ANOMALIES_FILE = "SchemaDiff.pb"  # ExampleValidator's anomalies, per split (and the DriftValidator's drift anomalies)
STATISTICS_FILE = "FeatureStats.pb"  # StatisticsGen's statistics, per split (a DatasetFeatureStatisticsList)
DRIFT_FILE = "drift.json"  # the DriftValidator's report: features compared, distance, threshold, verdict
WARM_START_DIR = "warm_start"  # beside Format-Serving in a Model artifact: what the next run can warm-start from
DP_FILE = "differential_privacy.json"  # beside Format-Serving when trained with DP: towers.dp.Budget
ITEM_GRAPH_FILE = "item_graph.json"  # beside Format-Serving: the graph's edges and the weights chosen on validation
TRAINING_COST_FILE = "training_cost.json"  # beside Format-Serving: seconds per epoch of each model and of the Trainer's stages

# --- Components whose outputs the app reads back from ML Metadata (their node ids) ----
CONTENT_EMBEDDER = "ContentEmbedder"
DRIFT_VALIDATOR = "DriftValidator"
DRIFT_BASELINE_RESOLVER = "drift_baseline_resolver"  # the statistics the last DriftValidator accepted
BASELINES = "Baselines"
TRAINER = "Trainer"
EVALUATOR = "Evaluator"
RETRIEVAL_EVALUATOR = "RetrievalEvaluator"
PUSHER = "Pusher"

# --- The Trainer's custom_config keys -----------------------------------------------
HPARAMS_KEY = "hparams"
CATALOG_PATH_KEY = "catalog_path"
FEATURE_ROLES_KEY = "feature_roles"  # the dataset's FeatureRoles as JSON (Transform's and Trainer's custom_config)
TEXT_ENCODER_KEY = "text_encoder_handle"  # read only when hparams.fine_tune_text
CODE_VERSION_KEY = "code_version"  # a fingerprint of the model code: part of every cache key
ITEM_EMBEDDINGS_URI_KEY = "item_embeddings_uri"  # set by the ContentTrainer's executor
RAW_EXAMPLES_URI_KEY = "raw_examples_uri"  # set by the ContentTrainer's executor

# --- Served models: TF Serving's layout <serving dir>/<model>/<version>/ ------------------
RECOMMENDER = "recommender"  # every query signature: recommend, query, rank, embed_*, evaluate*
RANKER = "ranker"  # the ranking model alone: rank
ITEM_ENCODER = "item_encoder"  # the candidate tower alone: embed_candidates (new items, external indexes)
SERVED_MODELS = (RECOMMENDER, RANKER, ITEM_ENCODER)
MODEL_CONFIG_FILE = "models.config"  # TF Serving's --model_config_file, beside the models
PUSH_LOG = "push_log.jsonl"  # one entry per publication (push or add-items), beside the models

# --- Signatures, their inputs and outputs ---------------------------------------------
SERVING_DEFAULT = "serving_default"
RECOMMEND_SIGNATURE = "recommend"
RECOMMEND_DIVERSE_SIGNATURE = "recommend_diverse"  # recommend with MMR diversity and per-category caps
QUERY_SIGNATURE = "query"
RANK_SIGNATURE = "rank"
EMBED_SIGNATURE = "embed_candidates"
EMBED_QUERY_SIGNATURE = "embed_query"
EVALUATE_SIGNATURE = "evaluate"
EVALUATE_RECOMMEND_SIGNATURE = "evaluate_recommend"
RANK_EXAMPLES_SIGNATURE = "rank_examples"
EVALUATION_FEATURES_SIGNATURE = "evaluation_features"
SIGNATURES = (
    SERVING_DEFAULT,
    RECOMMEND_SIGNATURE,
    RECOMMEND_DIVERSE_SIGNATURE,
    QUERY_SIGNATURE,
    RANK_SIGNATURE,
    EMBED_SIGNATURE,
    EMBED_QUERY_SIGNATURE,
    EVALUATE_SIGNATURE,
    EVALUATE_RECOMMEND_SIGNATURE,
    RANK_EXAMPLES_SIGNATURE,
    EVALUATION_FEATURES_SIGNATURE,
)
REQUIRED_SIGNATURES = {RECOMMENDER: (RECOMMEND_SIGNATURE,), RANKER: (RANK_SIGNATURE,), ITEM_ENCODER: (EMBED_SIGNATURE,)}
EXAMPLES_INPUT = "examples"
EXCLUDE_SEEN_INPUT = "exclude_seen"
ITEM_IDS_INPUT = "item_ids"
DIVERSITY_INPUT = "diversity"  # recommend_diverse: MMR's weight on novelty, 0 to 1
MAX_PER_CATEGORY_INPUT = "max_per_category"  # recommend_diverse: items per category, 0 = no cap
# the query signatures' inputs that are not query features
CALLER_INPUTS = (EXCLUDE_SEEN_INPUT, ITEM_IDS_INPUT, DIVERSITY_INPUT, MAX_PER_CATEGORY_INPUT)
ITEM_IDS_OUTPUT = "item_ids"
SCORES_OUTPUT = "scores"
PREDICTED_RATINGS_OUTPUT = "predicted_ratings"
RETRIEVAL_SCORES_OUTPUT = "retrieval_scores"
EMBEDDINGS_OUTPUT = "embeddings"
MODALITY_WEIGHTS_OUTPUT = "modality_weights"
MODALITIES_OUTPUT = "modalities"  # recommend: the names of modality_weights' columns
BECAUSE_ITEMS_OUTPUT = "because_items"  # recommend: the history items nearest each recommended item
BECAUSE_SCORES_OUTPUT = "because_scores"


def trainer_model_dirs(serving_model_dir: str) -> dict[str, str]:
    """Where the Trainer saves each served model: the recommender at its serving_model_dir, the others beside it."""
    parent = os.path.dirname(os.path.normpath(serving_model_dir))
    return {RECOMMENDER: serving_model_dir, RANKER: os.path.join(parent, RANKER), ITEM_ENCODER: os.path.join(parent, ITEM_ENCODER)}


# --- A run's folders --------------------------------------------------------------------
def pipeline_name(dataset: str) -> str:
    """A dataset's pipeline name, in ML Metadata and on Kubeflow (which wants [a-z0-9-])."""
    name = f"mmtower-{dataset}"
    if not all(c.islower() or c.isdigit() or c == "-" for c in name):
        raise ValueError(f"{name!r} is not a valid pipeline name ([a-z0-9-])")
    return name


@dataclass(frozen=True)
class RunPaths:
    """Layout of an output folder.

    <output>/data/<dataset>/            dataset build (ExampleGen input, catalog)
    <output>/requests/<dataset>/        logged requests as tf.Examples (`mmtower run --requests`)
    <output>/forgotten/<dataset>.txt    users to leave out of every build (`mmtower forget`)
    <output>/pipeline/<pipeline_name>/  component outputs (pipeline root)
    <output>/metadata.sqlite            ML Metadata
    <output>/serving/<model_name>/<v>/  pushed SavedModels, TF Serving's layout (SERVED_MODELS)
    <output>/serving/models.config      TF Serving's model config for them
    <output>/logs/run.log               full log of the last run
    """

    output: str
    dataset: str

    @property
    def pipeline_name(self) -> str:
        return pipeline_name(self.dataset)

    @property
    def data_dir(self) -> str:
        return os.path.join(self.output, "data", self.dataset)

    @property
    def forget_file(self) -> str:
        """The users `mmtower forget` named, one stored id (pseudonym) per line: every build leaves them out."""
        return os.path.join(self.output, "forgotten", f"{self.dataset}.txt")

    @property
    def requests_dir(self) -> str:
        """Logged requests as tf.Examples (`mmtower run --requests`), for the skew check."""
        return os.path.join(self.output, "requests", self.dataset)

    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.output, "pipeline", self.pipeline_name)

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.output, "metadata.sqlite")

    @property
    def serving_dir(self) -> str:
        return os.path.join(self.output, "serving")

    def serving_model_dir(self, model_name: str = RECOMMENDER) -> str:
        return os.path.join(self.serving_dir, model_name)

    @property
    def log_file(self) -> str:
        return os.path.join(self.output, "logs", "run.log")


def latest_version_dir(model_dir: str) -> str | None:
    """Newest numeric version folder under a TF Serving model directory, if any."""
    if not os.path.isdir(model_dir):
        return None
    versions = [name for name in os.listdir(model_dir) if name.isdigit()]
    return os.path.join(model_dir, max(versions, key=int)) if versions else None

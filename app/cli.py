"""`mmtower`: run the pipeline, query the pushed model.

Only the standard library is imported at module level: `main()` sets the
environment TensorFlow needs (Keras 2 via TF_USE_LEGACY_KERAS=1) before anything
imports TensorFlow, so a user never has to.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import sys
import warnings

from towers import contract

EPILOG = """examples:
  mmtower run                                  # tuxpaint (the default dataset), output in ./output
  mmtower run --epochs 3 --output /tmp/mmt     # quicker, elsewhere
  mmtower init --items items.csv --events events.csv --media-root media   # draft a contract for your files
  mmtower run --config mmtower.yaml            # your data (docs/your-data.md); recommend/report: --dataset NAME
  mmtower recommend --user u00001              # top 10 (retrieve, then rank) from the pushed model, in process
  mmtower serve                                # TF Serving's gRPC (:8500) and REST (:8501) API on the pushed models
  mmtower recommend --server localhost:8500 --user u00001   # the same over gRPC
  mmtower recommend --user u00001 --history ITEM,ITEM    # after fresh clicks: the list follows them, no retraining
  mmtower recommend --user u00001 --explain    # why each item: nearest history items, modality mix
  mmtower forget --user u00001                 # erase a user from the next build and model (--purge: older artifacts)
  mmtower index add-items new_items.jsonl      # recommend new items from their content, no retraining
  mmtower compile --target kubeflow --image IMG --data-root gs://b/data --pipeline-root gs://b/root \
      --serving-dir gs://b/serving --beam-option project=P --beam-option region=R ...   # KFP v2 JSON
  mmtower report                               # HTML report: metrics per slice, across runs
  mmtower encoders export                      # write the pretrained encoders (done by make setup)
"""


def _prepare_environment() -> None:
    os.environ["TF_USE_LEGACY_KERAS"] = "1"  # TFRS, TFT and the TFX Trainer need Keras 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # CUDA-probe noise on CPU machines
    # Beam worker processes inherit this; the library deprecation chatter is not actionable.
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning,ignore::DeprecationWarning")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    sys.unraisablehook = _ignore_tf_teardown_noise


def _ignore_tf_teardown_noise(unraisable) -> None:
    """TF 2.16 prints 'Exception ignored in AtomicFunction.__del__' for functions
    collected after their graph is gone (harmless; dozens after Transform)."""
    if unraisable.exc_type is TypeError and "AtomicFunction.__del__" in repr(unraisable.object):
        return
    sys.__unraisablehook__(unraisable)


def _parser() -> argparse.ArgumentParser:
    from mmdata.registry import DATASETS, DEFAULT_DATASET
    from towers.hparams import HParams

    defaults = HParams()
    parser = argparse.ArgumentParser(
        prog="mmtower",
        description="mmtower: a two-tower recommender built as a TFX pipeline.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="build the dataset, run the TFX pipeline end to end, print metrics next to the simple baselines",
        description="Builds the dataset (once), then runs ImportExampleGen -> StatisticsGen -> ImportSchemaGen -> "
        "ExampleValidator, DriftValidator -> ValidationGate -> Transform -> Trainer (retrieval + ranking) -> Evaluator (TFMA) -> "
        "RetrievalEvaluator -> Pusher with LocalDagRunner, "
        "SQLite ML Metadata and the Beam DirectRunner. Baselines (most-popular, recently popular, co-occurrence kNN and "
        "content kNN over the history; parameters chosen on the validation split) are scored on the same eval events; "
        "the summary compares the model with the best of them, per event and per user, with 95%% user-bootstrap intervals.",
    )
    run.add_argument(
        "--dataset", default=DEFAULT_DATASET, choices=sorted(DATASETS), help=f"built-in dataset to train on (default: {DEFAULT_DATASET})"
    )
    run.add_argument(
        "--config",
        default=None,
        metavar="mmtower.yaml",
        help="train on your own files instead: the data contract naming them and the role of each column "
        "(`mmtower init` drafts one; docs/your-data.md); the first run infers schema/schema.pbtxt beside it for you to curate",
    )
    run.add_argument("--output", default="output", help="folder for data, pipeline outputs, metadata and pushed models (default: ./output)")
    run.add_argument("--max-users", type=int, default=None, help="use only the first N users' interactions (quick demos, tests)")
    run.add_argument(
        "--cold-items",
        type=float,
        default=None,
        help="share of the eval split's items that are new items: their interactions before the eval period are removed, so they appear in no training example or history (default: the dataset's, 0.1 for tuxpaint, 0 for movielens)",
    )
    run.add_argument("--workers", type=int, default=2, help="Beam DirectRunner worker processes; 1 = in memory (default: 2)")
    _encoder_argument(run)
    run.add_argument(
        "--spans",
        type=int,
        default=1,
        help="build the dataset as N cumulative snapshots examples/span-1..N, for incremental runs (default: 1)",
    )
    run.add_argument(
        "--no-pseudonymize",
        action="store_true",
        help="keep raw user ids (default: each user id is replaced by a keyed hash as the data is read; docs/privacy.md)",
    )
    _key_argument(run)
    run.add_argument(
        "--requests",
        default=None,
        metavar="LOG",
        help="logged requests (JSON lines of REST predict bodies or query objects, or TF Serving's PredictionLog TFRecord): "
        "their statistics are compared with the training split's on every feature the curated schema gives a "
        "skew_comparator, and the run stops before training on skew (docs/orchestration.md)",
    )
    _pipeline_arguments(run, defaults)
    _beam_arguments(run)

    rec = sub.add_parser("recommend", help="top-K items for a user: from the newest pushed model in process, or from a server (--server)")
    rec.add_argument("--user", required=True, help="user id, as in the dataset")
    rec.add_argument(
        "--k",
        type=_list_length(defaults.top_k),
        default=10,
        help=f"number of items, 1 to {defaults.top_k} (the served models return their top {defaults.top_k}) (default: 10)",
    )
    rec.add_argument(
        "--dataset",
        default=DEFAULT_DATASET,
        help=f"dataset the model was trained on: {', '.join(sorted(DATASETS))} or your contract's name",
    )
    rec.add_argument("--output", default="output", help="the --output of the run (default: ./output)")
    rec.add_argument("--include-seen", action="store_true", help="allow items the user already interacted with")
    rec.add_argument("--retrieval-only", action="store_true", help="skip the ranking model: the two towers' top K by dot product")
    rec.add_argument(
        "--server", default=None, help="ask a TF Serving (or `mmtower serve`) endpoint, HOST:PORT (gRPC) or http://HOST:PORT (REST)"
    )
    rec.add_argument("--rest", action="store_true", help="with --server HOST:PORT: use the REST API instead of gRPC")
    rec.add_argument(
        "--in-process",
        action="store_true",
        help="load the model in this process even when a local server (REST on 127.0.0.1:8501) serves this output's "
        "newest model (without --server, such a server is asked: about a second instead of ~8 s)",
    )
    _key_argument(rec)
    rec.add_argument(
        "--diversity",
        type=float,
        default=None,
        metavar="0..1",
        help="re-order the ranked list by maximal marginal relevance: the weight on being unlike the items already "
        "listed, against relevance (0: recommend's order; default: off)",
    )
    rec.add_argument(
        "--max-per-category",
        type=int,
        default=None,
        metavar="N",
        help="at most N items of one category (the dataset's first genre/category value) while others remain (default: no cap)",
    )
    rec.add_argument(
        "--explain",
        action="store_true",
        help="under each item: the history items nearest it in the model's item space and its modality mix "
        "(id, metadata, text, image, audio, video shares of its fused representation)",
    )
    rec.add_argument(
        "--history",
        type=lambda text: [item.strip() for item in text.split(",") if item.strip()],
        default=None,
        metavar="ITEM,ITEM,...",
        help="items the user interacted with since the data was built, oldest first: they join the user's stored history "
        "in the request, so the next list follows a click without retraining (a user the data does not know is then "
        "recommended from these items alone)",
    )
    srv = sub.add_parser(
        "serve",
        help="development server speaking TF Serving's gRPC and REST API over the pushed models (production: deploy/)",
        description="Serves <output>/serving/models.config (recommender, ranker, item_encoder) with TF Serving's "
        "PredictionService (Predict, GetModelMetadata), ModelService (GetModelStatus) and REST API, the newest "
        "version of each model, swapping atomically when a new version is pushed. A development stand-in for the "
        "tensorflow/serving image, which serves the same folder in production (deploy/). Binds to loopback by default.",
    )
    srv.add_argument("--output", default="output", help="the --output of the run (default: ./output)")
    srv.add_argument("--model-config", default=None, help="a models.config to serve instead (default: <output>/serving/models.config)")
    srv.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1; 0.0.0.0 exposes it)")
    srv.add_argument("--port", type=int, default=8500, help="gRPC port (default: 8500, as TF Serving)")
    srv.add_argument("--rest-port", type=int, default=8501, help="REST port (default: 8501, as TF Serving; 0 picks a free one)")
    srv.add_argument("--poll-seconds", type=float, default=1.0, help="how often to look for new model versions (default: 1)")
    srv.add_argument("--max-batch", type=int, default=1024, help="largest batch a request may send (default: 1024)")
    srv.add_argument("--max-message-mib", type=int, default=16, help="largest request or response in MiB (default: 16)")
    srv.add_argument(
        "--batching",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run concurrent requests in batches, as TF Serving's --enable_batching (default: on, with serving/batching.py's "
        "defaults = deploy/batching_parameters.txt: up to 32 requests a call, no waiting for more, so a lone request is not "
        "slowed; measured 1.3-1.9x the throughput at 64 clients, bench/results/serving.md)",
    )
    srv.add_argument(
        "--batching-parameters-file",
        default=None,
        metavar="FILE",
        help="TF Serving's batching_parameters.txt to batch with instead of the defaults",
    )
    srv.add_argument(
        "--pseudonymize",
        action="store_true",
        help="pseudonymise raw user_id inputs at this edge with the run's key before the model sees them "
        "(for callers that send raw ids; values that are pseudonyms already pass unchanged)",
    )
    _key_argument(srv)
    comp = sub.add_parser(
        "compile",
        help="write the pipeline for an orchestrator: a KFP v2 JSON spec for Kubeflow Pipelines / Vertex AI",
        description="Compiles the same DAG with TFX's KubeflowV2DagRunner. Every component runs in --image (built from the "
        "Dockerfile). Run-time parameters: examples-dir, min-recall-at-100. Upload the JSON to Kubeflow/Vertex, or "
        "`mmtower schedule` it.",
    )
    comp.add_argument("--target", default="kubeflow", choices=["kubeflow"], help="orchestrator (default: kubeflow)")
    comp.add_argument("--dataset", default=DEFAULT_DATASET, choices=sorted(DATASETS), help="dataset (schema, slices, encoders)")
    comp.add_argument(
        "--config",
        default=None,
        metavar="gs://.../mmtower.yaml",
        help="your data contract instead of --dataset: the pipeline's DatasetGen reads its files and builds the dataset "
        "into --data-root with the Beam runner (its curated schema/schema.pbtxt must be beside it: a first `mmtower run "
        "--config` writes it); the compiled pipeline does not cache, so that every run reads the files as they are then",
    )
    comp.add_argument("--image", required=True, help="the mmtower container image (see Dockerfile)")
    comp.add_argument(
        "--data-root",
        required=True,
        help="the built dataset, e.g. gs://bucket/mmtower/data/tuxpaint (copy of <output>/data/<dataset>); "
        "with --config, where the pipeline builds it",
    )
    comp.add_argument("--pipeline-root", required=True, help="component outputs, e.g. gs://bucket/mmtower/pipeline")
    comp.add_argument("--serving-dir", required=True, help="where the Pusher writes the served models, e.g. gs://bucket/mmtower/serving")
    comp.add_argument(
        "--output",
        default="mmtower-pipeline.json",
        help="the JSON spec to write, or a folder to write mmtower-pipeline.json in (default: ./mmtower-pipeline.json)",
    )
    _pipeline_arguments(comp, defaults)
    _beam_arguments(comp, default="dataflow")
    init = sub.add_parser(
        "init",
        help="draft a data contract (mmtower.yaml) from your items and events files, for `mmtower run --config`",
        description="Reads the files' columns and a sample of their values and writes a data contract that names each "
        "column's role (ids, timestamp, rating, text, categorical, multi-valued, numeric, image/audio/video paths). "
        "Check it, fill in what is marked TODO, then `mmtower run --config mmtower.yaml`.",
    )
    init.add_argument("--items", required=True, help="the item table: CSV, Parquet, JSON lines or TFRecord (local path or gs://)")
    init.add_argument("--events", required=True, help="the event log: user, item, time (and optionally a rating) per row")
    init.add_argument("--users", default=None, help="optional user table (id + attributes)")
    init.add_argument("--media-root", default=None, help="folder the media path columns are relative to (default: the contract's folder)")
    init.add_argument("--out", default="mmtower.yaml", help="where to write the contract (default: ./mmtower.yaml)")
    init.add_argument("--force", action="store_true", help="overwrite an existing contract")
    fgt = sub.add_parser(
        "forget",
        help="erase a user: left out of every later build and model; --purge deletes older artifacts that hold them",
        description="Records the user (by raw id or pseudonym) in <output>/forgotten/<dataset>.txt: every later build "
        "leaves their events and attributes out, so the next `mmtower run` trains and serves a model without them. "
        "Lists every artifact of the output that still holds them; --purge deletes those (after that run) and marks "
        "them DELETED in ML Metadata. docs/privacy.md",
    )
    fgt.add_argument("--user", required=True, help="the user's id, raw or pseudonymised")
    fgt.add_argument("--dataset", default=DEFAULT_DATASET, help="the dataset (default: tuxpaint)")
    fgt.add_argument("--output", default="output", help="the --output of the runs (default: ./output)")
    fgt.add_argument("--purge", action="store_true", help="delete the older artifacts that still hold the user")
    _key_argument(fgt)
    sch = sub.add_parser("schedule", help="create a recurring run of a compiled pipeline on Kubeflow Pipelines (kfp client)")
    sch.add_argument("--spec", default="mmtower-pipeline.json", help="the compiled JSON (mmtower compile)")
    sch.add_argument("--host", required=True, help="the Kubeflow Pipelines API endpoint")
    sch.add_argument("--cron", default="0 0 3 * * *", help="six-field cron expression, seconds first (default: 03:00 daily)")
    sch.add_argument("--param", action="append", default=[], help="run-time parameter NAME=VALUE (repeatable)")
    idx = sub.add_parser("index", help="change the served catalog without retraining")
    idx_sub = idx.add_subparsers(dest="index_command", required=True)
    add = idx_sub.add_parser(
        "add-items",
        help="embed new items from their content and add them to a new recommender/ranker version",
        description="Reads new catalog items (a TFRecord of catalog tf.Examples, or JSON lines with item_id, title, text, "
        "and image/audio file paths), encodes their content with the pretrained encoders, embeds them with the pushed "
        "item_encoder and writes new recommender and ranker versions that include them (a running server swaps to "
        "them). Items already in the catalog or without an id are quarantined and listed.",
    )
    add.add_argument(
        "file",
        help="new items: JSON lines (.jsonl: item_id and optionally title, item_text, genres [list], year, image and audio paths relative to the file) or a catalog TFRecord (.tfrecord, .tfrecord.gz)",
    )
    add.add_argument("--output", default="output", help="the --output of the run (default: ./output)")
    _encoder_argument(add)
    add.add_argument(
        "--rebuild-index",
        action="store_true",
        help="with a ScaNN index: rebuild it over the whole catalog (default: new items are scored by brute force)",
    )
    rep = sub.add_parser(
        "report",
        help="write a static HTML report of a run folder: checks, metrics per slice, model vs most-popular, runs over time",
    )
    rep.add_argument(
        "--dataset", default=DEFAULT_DATASET, help=f"dataset of the run: {', '.join(sorted(DATASETS))} or your contract's name"
    )
    rep.add_argument("--output", default="output", help="the --output of the run (default: ./output)")
    rep.add_argument("--html", default=None, help="where to write it (default: <output>/report-<dataset>.html)")
    enc = sub.add_parser("encoders", help="pretrained content encoders (TF SavedModels in TF-Hub format)")
    enc_sub = enc.add_subparsers(dest="encoders_command", required=True)
    export = enc_sub.add_parser(
        "export",
        help="build the encoders from their packaged weights and save them as SavedModels (run by `make setup`)",
    )
    export.add_argument("--dir", default=None, help="where to write them (default: <venv>/share/mmtower/encoders)")
    export.add_argument("--force", action="store_true", help="rebuild even if an export exists")
    enc_sub.add_parser("list", help="the encoders, their sources and handles")
    return parser


def _list_length(most: int):
    """argparse type: an integer in [1, most]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not 1 <= value <= most:
            raise argparse.ArgumentTypeError(f"{value} is out of range: from 1 to {most} (the served models return their top {most})")
        return value

    return parse


def _key_argument(parser) -> None:
    parser.add_argument(
        "--pseudonym-key",
        default=None,
        metavar="FILE",
        help="the user-id pseudonymisation key (default: $MMTOWER_PSEUDONYM_KEY, else ~/.config/mmtower/pseudonym.key, "
        "created on first use); it is never written into the data, models or logs",
    )


def _positive_epsilon(text: str) -> float:
    """--dp-epsilon: a number > 0, or inf (the DP recipe without noise)."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"epsilon must be > 0 (or inf), got {text}")
    return value


def _encoder_argument(parser) -> None:
    parser.add_argument(
        "--encoder",
        action="append",
        default=[],
        metavar="MODALITY=HANDLE",
        help="the content encoder of a modality (repeatable): a name from `mmtower encoders list` (e.g. "
        "image=image-float16: the image network as TFLite in float16, 1.6x its speed, half its size), a SavedModel "
        "path or a TF-Hub/Kaggle handle (default: the local exports). `index add-items` must use the run's encoders",
    )


def _encoder_handles(values: list[str]) -> dict[str, str] | None:
    """--encoder MODALITY=HANDLE values -> {modality: handle} (registry names resolved to their local exports)."""
    from towers.encoders import registry

    handles = {}
    for value in values:
        modality, _, handle = value.partition("=")
        if modality not in registry.MODALITY_ENCODERS or not handle:
            raise ValueError(f"--encoder {value!r}: expected MODALITY=HANDLE with MODALITY one of {', '.join(registry.MODALITY_ENCODERS)}")
        handles[modality] = registry.resolve(handle)
    return handles or None


def _pipeline_arguments(parser, defaults) -> None:
    """What the pipeline computes (pipeline.config.Options): the same flags for `run` and `compile`."""
    from pipeline.config import Options
    from towers import hparams

    base = Options()
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help=f"training epochs (default: {defaults.epochs})")
    parser.add_argument(
        "--early-stopping",
        type=int,
        default=defaults.early_stopping_patience,
        metavar="PATIENCE",
        help="stop training when the validation split's loss has not improved for PATIENCE epochs, keeping the best epoch (default: off)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        help=f"training batch size = in-batch negatives (default: {defaults.batch_size})",
    )
    parser.add_argument(
        "--learning-rate", type=float, default=defaults.learning_rate, help=f"Adam learning rate (default: {defaults.learning_rate})"
    )
    parser.add_argument(
        "--embedding-dim",
        type=int,
        default=defaults.embedding_dim,
        help=f"query/candidate embedding size (default: {defaults.embedding_dim})",
    )
    parser.add_argument("--no-logq", action="store_true", help="turn off the sampling-bias (logQ) correction")
    parser.add_argument(
        "--negatives",
        default=defaults.negatives,
        choices=list(hparams.NEGATIVES),
        help="what the retrieval softmax contrasts each item with: the batch's other items, logQ-corrected (in_batch, "
        "any catalog size) or every training item (catalog: the exact softmax, one item-tower pass over the vocabulary "
        f"per step; worse for new items on MovieLens-100K, docs/model.md) (default: {defaults.negatives})",
    )
    parser.add_argument(
        "--history-encoder",
        default=defaults.history_encoder,
        choices=["mean", "attention"],
        help="how the query tower reads the user's recent items: their mean, or also causal self-attention over them in order "
        f"(default: {defaults.history_encoder})",
    )
    parser.add_argument(
        "--fusion",
        default=defaults.fusion,
        choices=["gate", "attention"],
        help=f"how the item tower fuses its modalities: a gate, or cross-modal attention then the gate (default: {defaults.fusion})",
    )
    parser.add_argument(
        "--fine-tune-text",
        action="store_true",
        help="train the text encoder's weights with the item tower (slow on CPU); default: frozen, precomputed text embeddings",
    )
    parser.add_argument(
        "--retrieval-index",
        default=defaults.retrieval_index,
        choices=["brute_force", "scann"],
        help="brute_force: score every item (stock TF Serving image); scann: a ScaNN index in the SavedModel "
        f"(the ScaNN-enabled image; for large catalogs) (default: {defaults.retrieval_index})",
    )
    parser.add_argument(
        "--catalog-precision",
        default=defaults.catalog_precision,
        choices=["float32", "bfloat16"],
        help="how the served recommender stores the catalog's candidate embeddings: bfloat16 halves them on disk and in "
        f"memory (brute-force scores in bfloat16; measured in bench/results/compression.md) (default: {defaults.catalog_precision})",
    )
    parser.add_argument(
        "--dp-epsilon",
        type=_positive_epsilon,
        default=defaults.dp_epsilon,
        metavar="EPSILON",
        help="train the two towers with differential privacy (DP-SGD, per training example): the noise is calibrated so the "
        "whole training is (EPSILON, delta)-DP; the query tower then reads no user id, recommend ranks by the retrieval "
        "score and no co-occurrence graph is built; training steps ~4x slower (4.3x on MovieLens-1M, docs/privacy.md) (default: off)",
    )
    parser.add_argument(
        "--dp-delta",
        type=float,
        default=defaults.dp_delta,
        help="the delta of --dp-epsilon (default: 1 / (10 x training events), rounded down)",
    )
    parser.add_argument(
        "--dp-clip",
        type=float,
        default=defaults.dp_clip,
        help=f"L2 norm each example's gradient is clipped to (default: {defaults.dp_clip})",
    )
    parser.add_argument(
        "--min-recall",
        type=float,
        default=base.min_recall_at_100,
        help=f"blessing floor on retrieval Recall@100, RetrievalEvaluator (default: {base.min_recall_at_100})",
    )
    parser.add_argument(
        "--require-beat-baseline",
        action="store_true",
        help="bless only a model whose served recommend beats the best simple baseline on Recall@10 (both 95%% intervals "
        "of the ratio above 1); default: the check is printed as a warning",
    )
    parser.add_argument(
        "--min-auc",
        type=float,
        default=base.min_auc,
        help=f"blessing floor on the ranking model's like-AUC, TFMA Evaluator (default: {base.min_auc})",
    )
    parser.add_argument("--no-cache", action="store_true", help="re-run every component even if its inputs did not change")
    parser.add_argument("--span", type=int, default=None, help="the span ExampleGen ingests (default: the latest, as a scheduled run does)")
    parser.add_argument(
        "--warm-start",
        action="store_true",
        help="incremental training: start from the last blessed model (its embedding rows mapped to the new vocabularies) "
        "and train only on the events after its data (default: train from scratch on the whole span)",
    )


def _options(args):
    """pipeline.config.Options from the flags _pipeline_arguments added."""
    from pipeline.config import Options
    from towers.hparams import HParams

    hparams = HParams().replace(
        epochs=args.epochs,
        early_stopping_patience=args.early_stopping,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        embedding_dim=args.embedding_dim,
        use_logq=not args.no_logq,
        negatives=args.negatives,
        history_encoder=args.history_encoder,
        fusion=args.fusion,
        fine_tune_text=args.fine_tune_text,
        retrieval_index=args.retrieval_index,
        catalog_precision=args.catalog_precision,
        dp_epsilon=args.dp_epsilon,
        dp_delta=args.dp_delta,
        dp_clip=args.dp_clip,
    )
    return Options(
        hparams=hparams,
        min_recall_at_100=args.min_recall,
        require_beat_baseline=args.require_beat_baseline,
        min_auc=args.min_auc,
        warm_start=args.warm_start,
        span=args.span,
        enable_cache=not args.no_cache,
    )


def _beam_arguments(parser, default: str = "local") -> None:
    from pipeline.beam_profiles import PROFILES

    parser.add_argument(
        "--beam-profile",
        default=default,
        choices=sorted(PROFILES),
        help="where Beam stages run: " + "; ".join(f"{name}: {p.help}" for name, p in PROFILES.items()) + f" (default: {default})",
    )
    parser.add_argument(
        "--beam-option", action="append", default=[], help="Beam option KEY=VALUE for the profile (repeatable), e.g. project=my-project"
    )


def _beam_args(args) -> list[str] | None:
    from pipeline import beam_profiles

    if args.beam_profile == beam_profiles.LOCAL and not args.beam_option:
        return None  # --workers decides
    beam_args = beam_profiles.beam_args(args.beam_profile, beam_profiles.parse_options(args.beam_option))
    beam_profiles.validate(beam_args)
    return beam_args


def _compile(args) -> int:
    from pipeline import kubeflow

    options = _options(args)
    if args.config:  # DatasetGen's parameters do not change when the files do: a cached build would be stale
        options = dataclasses.replace(options, enable_cache=False)
    try:
        beam_args = _beam_args(args) or []
        config = kubeflow.pipeline_config(
            args.dataset, args.data_root, args.pipeline_root, args.serving_dir, options, beam_args, args.config or ""
        )
    except (ValueError, FileNotFoundError) as error:  # a profile's missing option, a contract's mistake (ContractError), no schema
        print(f"mmtower: {error}", file=sys.stderr)
        return 2
    print(f"wrote {kubeflow.compile_spec(config, args.image, args.output)}")
    return 0


def _schedule(args) -> int:
    import urllib3

    from pipeline import beam_profiles, kubeflow

    try:
        run = kubeflow.schedule(args.spec, args.host, args.cron, parameters=beam_profiles.parse_options(args.param))
    except (urllib3.exceptions.HTTPError, ConnectionError) as error:
        print(f"mmtower: cannot reach the Kubeflow Pipelines API at {args.host}: {error}", file=sys.stderr)
        return 2
    print(f"recurring run {getattr(run, 'recurring_run_id', run)} created ({args.cron})")
    return 0


def _encoders(args) -> int:
    from towers.encoders import registry

    for name, spec in registry.ENCODERS.items():
        if args.encoders_command == "export":
            print(f"{name}: {registry.export(name, args.dir, force=args.force)}  ({spec.source})")
        else:
            print(
                f"{name}: {registry.local_handle(name, getattr(args, 'dir', None))}  {spec.input_description} -> [batch, {spec.dim}]  ({spec.source})"
            )
    return 0


def _run(args) -> int:
    from app import report, summary
    from pipeline import local_runner

    if args.config:
        from mmdata import registry

        args.dataset = registry.from_contract(args.config).name
    try:  # options that contradict each other are refused before anything is built
        config = local_runner.RunConfig(
            dataset=args.dataset,
            output=args.output,
            options=_options(args),
            max_users=args.max_users,
            cold_item_fraction=args.cold_items,
            spans=args.spans,
            direct_num_workers=args.workers,
            beam_pipeline_args=_beam_args(args),
            requests=args.requests,
            pseudonymize=not args.no_pseudonymize,
            pseudonym_key=args.pseudonym_key,
            encoder_handles=_encoder_handles(args.encoder),
        )
    except ValueError as error:
        print(f"mmtower: {error}", file=sys.stderr)
        return 2
    paths, wall_times = local_runner.run(config)
    print(report.format_run(summary.read(paths), wall_times))
    return 0


def _init(args) -> int:
    from mmdata import contract

    if os.path.exists(args.out) and not args.force:
        print(f"mmtower: {args.out} exists; pass --force to overwrite it", file=sys.stderr)
        return 2
    text = contract.draft(
        args.items, args.events, users_path=args.users, media_root=args.media_root, contract_dir=os.path.dirname(os.path.abspath(args.out))
    )
    with open(args.out, "w") as f:
        f.write(text)
    todo = text.count("TODO")
    print(f"wrote {args.out}" + (f": {todo} line(s) marked TODO need you" if todo else ""))
    print(f"check each column's role, then: mmtower run --config {args.out}")
    return 0


def _recommend(args) -> int:
    from app import recommend

    return recommend.main(
        args.output,
        args.dataset,
        args.user,
        args.k,
        exclude_seen=not args.include_seen,
        rank=not args.retrieval_only,
        server=args.server,
        protocol="rest" if args.rest else "grpc",
        history=args.history,
        explain=args.explain,
        pseudonym_key=args.pseudonym_key,
        in_process=args.in_process,
        diversity=recommend.Diversity(args.diversity or 0.0, args.max_per_category or 0)
        if args.diversity is not None or args.max_per_category is not None
        else None,
    )


def _forget(args) -> int:
    from app import forget

    return forget.main(args.output, args.dataset, args.user, purge=args.purge, key_file=args.pseudonym_key)


def _serve(args) -> int:
    from serving import batching, predict, server
    from towers import privacy
    from towers.contract import RunPaths

    config_path = args.model_config or os.path.join(RunPaths(os.path.abspath(args.output), "").serving_dir, contract.MODEL_CONFIG_FILE)
    options = server.ServerOptions(
        host=args.host,
        grpc_port=args.port,
        rest_port=args.rest_port,
        poll_seconds=args.poll_seconds,
        max_message_mib=args.max_message_mib,
        limits=predict.Limits(max_batch=args.max_batch, pseudonym_key=privacy.load_key(args.pseudonym_key) if args.pseudonymize else None),
    )
    try:
        if args.batching_parameters_file and not args.batching:
            print("mmtower: --batching-parameters-file needs batching on (drop --no-batching)", file=sys.stderr)
            return 2
        if args.batching:
            parameters = batching.read(args.batching_parameters_file) if args.batching_parameters_file else batching.BatchingParameters()
            options = dataclasses.replace(options, batching=parameters)
        return server.main(config_path, options)
    except (ValueError, OSError) as error:  # a malformed models.config or batching parameters file
        print(f"mmtower: {error}", file=sys.stderr)
        return 2


def _index(args) -> int:
    from app import add_items as index

    try:
        return index.main(args.output, args.file, rebuild_index=args.rebuild_index, encoder_handles=_encoder_handles(args.encoder))
    except ValueError as error:  # a malformed items file or --encoder
        print(f"mmtower: {error}", file=sys.stderr)
        return 2


def _report(args) -> int:
    from app import dashboard

    return dashboard.main(args.output, args.dataset, args.html)


def _environment_missing() -> str | None:
    """Why mmtower cannot run in this interpreter, or None if it can."""
    missing = [name for name in ("tfx", "tensorflow_recommenders", "pandas") if importlib.util.find_spec(name) is None]
    if missing:
        return (
            f"{', '.join(missing)} not installed in {sys.executable}. "
            "Run `make setup` in the mmtower checkout, then use .venv/bin/mmtower."
        )
    return None


def main(argv: list[str] | None = None) -> int:
    _prepare_environment()
    if problem := _environment_missing():
        print(f"mmtower: {problem}", file=sys.stderr)
        return 2
    args = _parser().parse_args(argv)
    if args.command != "recommend":  # recommend may ask a server without importing TensorFlow (app.recommend.local_server)
        # TFX (and with it TensorFlow, Beam) imported first, as the commands always did: `index add-items` ends in a
        # SIGSEGV at interpreter exit when these libraries are first imported in the order its own imports give.
        import tfx.v1  # noqa: F401
    from app.recommend import RequestError, SetupError
    from components.errors import DataValidationError
    from mmdata.contract import ContractError
    from serving.errors import ServingError

    try:
        commands = {
            "run": _run,
            "recommend": _recommend,
            "report": _report,
            "encoders": _encoders,
            "serve": _serve,
            "index": _index,
            "compile": _compile,
            "schedule": _schedule,
            "init": _init,
            "forget": _forget,
        }
        return commands[args.command](args)
    except (DataValidationError, SetupError, RequestError, ContractError, FileNotFoundError, ServingError) as error:
        print(f"mmtower: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

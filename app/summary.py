"""What a run produced, read back from ML Metadata and the artifacts it points to."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from towers import contract
from towers.contract import BASELINES, CONTENT_EMBEDDER, DRIFT_VALIDATOR, EVALUATOR, PUSHER, RETRIEVAL_EVALUATOR, TRAINER, RunPaths


@dataclass
class RunSummary:
    model_metrics: dict[str, float] = field(default_factory=dict)  # retrieval, overall (RetrievalEvaluator)
    recommend_metrics: dict[str, float] = field(default_factory=dict)  # retrieve-then-rank, overall
    ranking_metrics: dict[str, float] = field(default_factory=dict)  # TFMA, overall: "<output>/<metric>"
    baselines: dict = field(default_factory=dict)  # the Baselines' metrics.json: per baseline its parameters, validation and eval metrics
    retrieval_report: dict = field(default_factory=dict)  # the RetrievalEvaluator's metrics.json (with the comparison to the baselines)
    blessed: bool | None = None  # the blessing the Pusher reads (retrieval checks and TFMA's)
    ranking_blessed: bool | None = None  # TFMA's alone
    evaluation_uri: str | None = None  # TFMA output (tfma.load_eval_result)
    pushed_to: str | None = None
    model_uri: str | None = None
    content_quarantined: int | None = None
    content_quarantine_file: str | None = None
    content_items: dict[str, int] = field(default_factory=dict)  # modality -> items with that embedding
    item_graph: dict = field(default_factory=dict)  # the Trainer's item_graph.json: edges, the weights chosen on validation
    training_cost: dict = field(default_factory=dict)  # the Trainer's training_cost.json: seconds per epoch and per stage
    ranking_failures: list[str] = field(default_factory=list)  # TFMA's failed thresholds, readable (ranking_failures)
    drift: dict = field(default_factory=dict)  # the DriftValidator's drift.json: features compared, distance, threshold, verdict
    privacy: dict = field(default_factory=dict)  # pseudonymisation and k-anonymity of the built users (privacy_report)
    differential_privacy: dict = field(default_factory=dict)  # the Trainer's DP budget (towers.dp.Budget); empty: trained without DP


K_ANONYMITY = 5  # the group size under which a combination of user attributes is reported as identifying


def privacy_report(data_dir: str) -> dict:
    """Whether the built users are pseudonymous, and their k-anonymity over the dataset's user attributes (the
    quasi-identifiers): the smallest group of users sharing one combination, and how many users are in groups under
    K_ANONYMITY. {} when there is no build."""
    from collections import Counter

    from mmdata.records import Manifest, read_records

    if not os.path.exists(os.path.join(data_dir, contract.MANIFEST_FILE)):
        return {}
    manifest = Manifest.read(data_dir)
    columns = manifest.roles.user_features
    rows = read_records(os.path.join(data_dir, contract.USERS_FILE))
    groups = Counter(tuple(str(row.get(column)) for column in columns) for row in rows)
    return {
        "pseudonym_key_id": manifest.pseudonym_key_id,
        "quasi_identifiers": list(columns),
        "users": len(rows),
        "k": K_ANONYMITY,
        "smallest_group": min(groups.values()) if columns and groups else None,
        "users_below_k": sum(n for n in groups.values() if n < K_ANONYMITY) if columns else 0,
    }


def _latest(store, type_name: str, component: str, pipeline_name: str):
    """The `type_name` output of the newest execution of `component`, whether it ran or was a cache hit.

    Newest *execution*, not newest artifact: a cached Trainer reuses an older
    Model artifact, and that one is this run's model.
    """
    from ml_metadata.proto import metadata_store_pb2

    context = store.get_context_by_type_and_name("node", f"{pipeline_name}.{component}")
    if context is None:
        return None
    done = (metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED)
    executions = [e for e in store.get_executions_by_context(context.id) if e.last_known_state in done]
    if not executions:
        return None
    latest = max(executions, key=lambda e: e.id)
    outputs = [e.artifact_id for e in store.get_events_by_execution_ids([latest.id]) if e.type == metadata_store_pb2.Event.OUTPUT]
    type_id = store.get_artifact_type(type_name).id
    return next((a for a in store.get_artifacts_by_id(outputs) if a.type_id == type_id), None)


def metric_name(key) -> str:
    """'<output>/<metric>[@k]' for a TFMA MetricKey."""
    name = f"{key.output_name}/{key.name}" if key.output_name else key.name
    if key.HasField("sub_key") and key.sub_key.HasField("top_k"):
        name += f"@{key.sub_key.top_k.value}"
    return name


def ranking_metrics_from_tfma(evaluation_uri: str) -> dict[str, float]:
    """Overall-slice metrics of the candidate model from a TFMA output folder, by metric_name()."""
    import tensorflow_model_analysis as tfma

    out = {}
    for per_slice in tfma.load_metrics(evaluation_uri):
        if per_slice.slice_key.single_slice_keys:
            continue
        for kv in per_slice.metric_keys_and_values:
            if kv.key.model_name in ("", "candidate") and not kv.key.is_diff and kv.value.HasField("double_value"):
                out[metric_name(kv.key)] = kv.value.double_value.value
    return out


def ranking_failures(validation) -> list[str]:
    """TFMA's failed thresholds (a tfma ValidationResult) as lines naming the metric, its value and the bound it missed."""
    lines = []
    for per_slice in validation.metric_validations_per_slice:
        where = (
            ""
            if not per_slice.slice_key.single_slice_keys
            else " on slice "
            + ", ".join(
                f"{key.column}={key.bytes_value.decode() or key.int64_value or key.float_value}"
                for key in per_slice.slice_key.single_slice_keys
            )
        )
        for failure in per_slice.failures:
            value = failure.metric_value.double_value.value if failure.metric_value.HasField("double_value") else float("nan")
            name = ("change in " if failure.metric_key.is_diff else "") + metric_name(failure.metric_key)
            threshold = failure.metric_threshold
            bound = []
            if threshold.HasField("value_threshold"):
                lower, upper = threshold.value_threshold.lower_bound, threshold.value_threshold.upper_bound
                bound += [f"floor {lower.value:g}"] if threshold.value_threshold.HasField("lower_bound") else []
                bound += [f"ceiling {upper.value:g}"] if threshold.value_threshold.HasField("upper_bound") else []
            if threshold.HasField("change_threshold") and threshold.change_threshold.HasField("absolute"):
                bound.append(f"allowed change {threshold.change_threshold.absolute.value:g} vs the last blessed model")
            lines.append(f"{name} {value:.4f}{where} misses its {' / '.join(bound) or 'threshold'}")
    return lines


def read(paths: RunPaths) -> RunSummary:
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    from components.content_embedder import executor as content_executor

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = paths.metadata_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    store = metadata_store.MetadataStore(config)
    summary = RunSummary()
    summary.privacy = privacy_report(paths.data_dir)
    name = paths.pipeline_name
    if drift := _latest(store, "ExampleAnomalies", DRIFT_VALIDATOR, name):
        from components.drift_validator import read_report

        summary.drift = read_report(drift)
    if baselines := _latest(store, "ModelEvaluation", BASELINES, name):
        with open(os.path.join(baselines.uri, contract.METRICS_FILE)) as f:
            summary.baselines = json.load(f)
    if evaluation := _latest(store, "ModelEvaluation", EVALUATOR, name):
        summary.evaluation_uri = evaluation.uri
        summary.ranking_metrics = ranking_metrics_from_tfma(evaluation.uri)
    if blessing := _latest(store, "ModelBlessing", EVALUATOR, name):
        summary.ranking_blessed = bool(blessing.custom_properties["blessed"].int_value)
        if not summary.ranking_blessed and evaluation is not None:
            import tensorflow_model_analysis as tfma

            try:
                summary.ranking_failures = ranking_failures(tfma.load_validation_result(evaluation.uri))
            except (OSError, ValueError) as error:  # an unreadable result still leaves the verdict
                summary.ranking_failures = [f"TFMA's validation result could not be read: {error}"]
    if retrieval := _latest(store, "ModelEvaluation", RETRIEVAL_EVALUATOR, name):
        from components.retrieval_evaluator import executor as retrieval_executor

        with open(os.path.join(retrieval.uri, contract.METRICS_FILE)) as f:
            summary.retrieval_report = json.load(f)
        summary.model_metrics = summary.retrieval_report[retrieval_executor.RETRIEVAL]["overall"]
        summary.recommend_metrics = summary.retrieval_report[retrieval_executor.RECOMMEND]["overall"]
    if blessing := _latest(store, "ModelBlessing", RETRIEVAL_EVALUATOR, name):
        summary.blessed = bool(blessing.custom_properties["blessed"].int_value)
    if content := _latest(store, "Examples", CONTENT_EMBEDDER, name):
        summary.content_quarantined = content.custom_properties[content_executor.NUM_QUARANTINED_PROPERTY].int_value
        summary.content_quarantine_file = os.path.join(content.uri, contract.QUARANTINE_FILE)
        from components.content_embedder.embeddings import read_item_embeddings

        summary.content_items = {modality: len(items) for modality, items in read_item_embeddings(content.uri).items()}
    if model := _latest(store, "Model", TRAINER, name):
        summary.model_uri = model.uri
        from towers.contract import DP_FILE, ITEM_GRAPH_FILE, TRAINING_COST_FILE

        if os.path.exists(graph_file := os.path.join(model.uri, ITEM_GRAPH_FILE)):
            with open(graph_file) as f:
                summary.item_graph = json.load(f)
        if os.path.exists(cost_file := os.path.join(model.uri, TRAINING_COST_FILE)):
            with open(cost_file) as f:
                summary.training_cost = json.load(f)
        if os.path.exists(dp_file := os.path.join(model.uri, DP_FILE)):
            with open(dp_file) as f:
                summary.differential_privacy = json.load(f)
    if pushed := _latest(store, "PushedModel", PUSHER, name):
        if pushed.custom_properties["pushed"].int_value:
            summary.pushed_to = pushed.custom_properties["pushed_destination"].string_value
    return summary

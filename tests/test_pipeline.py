"""Building the DAG (no execution): components, wiring, TFMA thresholds, cache key."""

import json

import pytest
import tensorflow_model_analysis as tfma

from pipeline import code_version, eval_config, local_runner
from pipeline.config import Options
from towers import contract
from towers.contract import RunPaths
from towers.hparams import HParams

pytestmark = pytest.mark.pipeline

EXPECTED_COMPONENTS = [
    "ImportExampleGen",
    "CatalogExampleGen",
    "ContentEmbedder",
    "StatisticsGen",
    "ImportSchemaGen",
    "ExampleValidator",
    "drift_baseline_resolver",
    "DriftValidator",
    "ValidationGate",
    "Transform",
    "Trainer",
    "Baselines",
    "latest_blessed_model_resolver",
    "Evaluator",
    "RetrievalEvaluator",
    "Pusher",
]


@pytest.fixture
def built(tmp_path):
    config = local_runner.RunConfig(output=str(tmp_path), options=Options(hparams=HParams(epochs=1)))
    return local_runner.build_pipeline(config, RunPaths(str(tmp_path), config.dataset))


def test_every_component_is_in_the_dag(built):
    assert sorted(c.id for c in built.components) == sorted(EXPECTED_COMPONENTS)


def test_gate_precedes_transform_and_pusher_needs_blessing(built):
    by_id = {c.id: c for c in built.components}
    assert by_id["ValidationGate"] in by_id["Transform"].upstream_nodes
    assert "model_blessing" in by_id["Pusher"].inputs
    # Pusher reads the RetrievalEvaluator's blessing, which requires the TFMA Evaluator's.
    assert by_id["RetrievalEvaluator"] in by_id["Pusher"].upstream_nodes
    assert by_id["Evaluator"] in by_id["RetrievalEvaluator"].upstream_nodes
    assert "tfma_blessing" in by_id["RetrievalEvaluator"].inputs
    assert by_id["latest_blessed_model_resolver"] in by_id["Evaluator"].upstream_nodes
    assert by_id["latest_blessed_model_resolver"] in by_id["RetrievalEvaluator"].upstream_nodes
    # Only the RetrievalEvaluator's blessings make a model the "last blessed" one.
    blessing_channel = by_id["latest_blessed_model_resolver"].raw_inputs["model_blessing"]
    assert blessing_channel.producer_component_id == "RetrievalEvaluator"
    assert by_id["ContentEmbedder"] in by_id["Trainer"].upstream_nodes
    assert "item_embeddings" in by_id["Trainer"].inputs


def test_drift_is_checked_against_the_last_accepted_baseline_before_the_gate(built):
    by_id = {c.id: c for c in built.components}
    resolver, drift = by_id["drift_baseline_resolver"], by_id["DriftValidator"]
    # The resolver reads the DriftValidator's own earlier outputs, and runs before this run's StatisticsGen and DriftValidator.
    channel = resolver.raw_inputs["statistics"]
    assert (channel.producer_component_id, channel.output_key) == ("DriftValidator", "baseline")
    assert resolver in by_id["StatisticsGen"].upstream_nodes and resolver in drift.upstream_nodes
    assert by_id["StatisticsGen"] in drift.upstream_nodes and by_id["ImportSchemaGen"] in drift.upstream_nodes
    assert drift in by_id["ValidationGate"].upstream_nodes and "drift" in by_id["ValidationGate"].inputs


def test_choices_are_made_on_validation_and_baselines_reach_the_retrieval_evaluator(built):
    by_id = {c.id: c for c in built.components}
    splits = [split["name"] for split in json.loads(by_id["ImportExampleGen"].exec_properties["input_config"])["splits"]]
    assert splits == ["train", "validation", "eval"]
    assert json.loads(by_id["Trainer"].exec_properties["eval_args"])["splits"] == ["validation"]  # the Trainer never reads eval
    assert json.loads(by_id["Evaluator"].exec_properties["example_splits"]) == ["eval"]
    assert by_id["Baselines"] in by_id["RetrievalEvaluator"].upstream_nodes and "baselines" in by_id["RetrievalEvaluator"].inputs
    assert by_id["ContentEmbedder"] in by_id["Baselines"].upstream_nodes  # content kNN


def test_code_change_changes_cache_key(tmp_path):
    (tmp_path / "components").mkdir()
    source = tmp_path / "components" / "m.py"
    source.write_text("x = 1\n")
    before = code_version.code_version(str(tmp_path), ("components",))
    source.write_text("x = 2\n")
    assert code_version.code_version(str(tmp_path), ("components",)) != before


def test_eval_config_ranks_with_slices_and_gates_auc():
    from towers import features as F
    from towers.ranking import LIKE_OUTPUT, RATING_OUTPUT

    config = eval_config.build(min_auc=0.6, max_auc_regression=0.01, slice_features=(F.GENDER,))
    (spec,) = config.model_specs
    assert spec.signature_name == contract.RANK_EXAMPLES_SIGNATURE
    assert list(spec.preprocessing_function_names) == [contract.EVALUATION_FEATURES_SIGNATURE]
    assert dict(spec.label_keys) == {LIKE_OUTPUT: F.LIKED, RATING_OUTPUT: F.RATING}
    sliced = [list(s.feature_keys) for s in config.slicing_specs]
    assert sliced == [[]] + [[name] for name in F.EVAL_SLICE_FEATURES] + [[F.GENDER]]
    metrics_by_output = {}
    for metrics_spec in config.metrics_specs:
        for metric in metrics_spec.metrics:
            metrics_by_output.setdefault(metrics_spec.output_names[0], []).append((metric.class_name, metrics_spec.query_key))
    assert ("NDCG", F.USER_ID) in metrics_by_output[LIKE_OUTPUT]
    assert {"AUC", "Calibration"} <= {name for name, _ in metrics_by_output[LIKE_OUTPUT]}
    assert metrics_by_output[RATING_OUTPUT] == [("RootMeanSquaredError", "")]
    (per_slice,) = next(m.per_slice_thresholds for s in config.metrics_specs for m in s.metrics if m.class_name == "AUC")
    assert [list(s.feature_keys) for s in per_slice.slicing_specs] == [[]]  # overall only
    gate = per_slice.threshold
    assert gate.value_threshold.lower_bound.value == pytest.approx(0.6)
    assert gate.change_threshold.absolute.value == pytest.approx(-0.01)
    assert gate.change_threshold.direction == tfma.MetricDirection.HIGHER_IS_BETTER


def test_pusher_pushes_all_served_models_and_scann_runs_tfma_in_process(built, tmp_path):
    from components import pusher

    by_id = {c.id: c for c in built.components}
    assert by_id["Pusher"].executor_spec.executor_class is pusher.Executor
    assert by_id["Evaluator"].executor_spec.beam_pipeline_args == local_runner.beam_args(2)  # the pipeline's workers
    config = local_runner.RunConfig(output=str(tmp_path), options=Options(hparams=HParams(retrieval_index="scann")))
    scann = {c.id: c for c in local_runner.build_pipeline(config, RunPaths(str(tmp_path), config.dataset)).components}
    # TFMA's worker processes would lack the Scann ops: the Evaluator runs in this process
    assert scann["Evaluator"].executor_spec.beam_pipeline_args[-2:] == local_runner.beam_args(1)  # the last flags win


def test_example_gen_reads_spans_and_only_an_incremental_run_warm_starts(built, tmp_path):
    by_id = {c.id: c for c in built.components}
    example_gen = by_id["ImportExampleGen"]
    splits = json.loads(example_gen.exec_properties["input_config"])["splits"]  # protos are kept as JSON
    assert [s["pattern"] for s in splits] == ["span-{SPAN}/train/*", "span-{SPAN}/validation/*", "span-{SPAN}/eval/*"]
    assert not example_gen.exec_properties.get("range_config")  # the latest span
    # From scratch: no base model, so a re-run with no new data stays a cache hit of the Trainer.
    assert "base_model" not in by_id["Trainer"].inputs
    config = local_runner.RunConfig(output=str(tmp_path), options=Options(hparams=HParams(epochs=1), span=1, warm_start=True))
    incremental = {c.id: c for c in local_runner.build_pipeline(config, RunPaths(str(tmp_path), config.dataset)).components}
    static = json.loads(incremental["ImportExampleGen"].exec_properties["range_config"])["static_range"]
    assert (static["start_span_number"], static["end_span_number"]) == (1, 1)
    assert incremental["latest_blessed_model_resolver"] in incremental["Trainer"].upstream_nodes
    assert "base_model" in incremental["Trainer"].inputs


@pytest.mark.parametrize("spans", [["--spans", "2", "--span", "3"], ["--spans", "0"], ["--span", "0"]])
def test_run_refuses_a_span_the_dataset_cannot_have(spans, tmp_path, capsys):
    from app.cli import main

    assert main(["run", "--output", str(tmp_path)] + spans) == 2
    assert "--span must be between 1 and --spans" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()  # refused before building anything


def test_run_refuses_a_malformed_encoder_and_resolves_registry_names(tmp_path, capsys):
    from app.cli import _encoder_handles, main
    from towers.encoders import registry

    assert main(["run", "--output", str(tmp_path), "--encoder", "picture=image-float16"]) == 2
    assert "expected MODALITY=HANDLE" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()  # refused before building anything
    handles = _encoder_handles(["image=image-float16", "text=https://tfhub.dev/some/encoder/1"])
    assert handles == {"image": registry.local_handle(registry.IMAGE_FLOAT16), "text": "https://tfhub.dev/some/encoder/1"}
    config = local_runner.RunConfig(dataset="tuxpaint", output=str(tmp_path), encoder_handles={"image": handles["image"], "video": "x"})
    chosen = local_runner.pipeline_config(config, RunPaths(str(tmp_path), "tuxpaint")).encoder_handles
    assert chosen == {"text": registry.local_handle("text"), "image": handles["image"], "audio": registry.local_handle("audio")}


@pytest.mark.parametrize("k", ["-5", "0", "1000", "ten"])
def test_recommend_refuses_a_list_length_the_models_cannot_give(k, tmp_path, capsys):
    from app.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["recommend", "--output", str(tmp_path), "--user", "u1", "--k", k])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--k" in err and ("from 1 to 100" in err or "not a whole number" in err)

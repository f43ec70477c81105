"""Kubeflow / Vertex compile and Beam runner profiles (built and checked up to the orchestrator)."""

import json
import subprocess
import sys

import pytest

from pipeline import beam_profiles, kubeflow
from pipeline.config import Options
from towers import contract

pytestmark = pytest.mark.pipeline

DATAFLOW = {
    "project": "my-project",
    "region": "europe-west4",
    "temp_location": "gs://bucket/tmp",
    "sdk_container_image": "gcr.io/my-project/mmtower:1",
}


@pytest.mark.parametrize(
    "profile,options",
    [
        ("local", {}),
        ("dataflow", DATAFLOW),
        ("flink", {"flink_master": "flink:8081", "environment_config": "gcr.io/p/mmtower:1"}),
        ("spark", {"spark_master_url": "spark://spark:7077", "environment_config": "gcr.io/p/mmtower:1"}),
    ],
)
def test_every_profile_is_valid_beam_pipeline_options(profile, options):
    args = beam_profiles.beam_args(profile, options)
    parsed = beam_profiles.validate(args)
    assert parsed["runner"] == beam_profiles.PROFILES[profile].runner
    for key in options:
        assert key in parsed


def test_profiles_name_what_is_missing_or_unknown():
    with pytest.raises(ValueError, match="--beam-option project=..."):
        beam_profiles.beam_args("dataflow", {"region": "r"})
    with pytest.raises(ValueError, match="does not know"):
        beam_profiles.validate(beam_profiles.beam_args("local", {"no_such_option": "1"}))
    with pytest.raises(ValueError, match="unknown Beam profile"):
        beam_profiles.beam_args("mapreduce")
    assert beam_profiles.parse_options(["a=1", "--b=x=y"]) == {"a": "1", "b": "x=y"}


def test_compile_writes_a_kfp_v2_spec_with_every_component_and_runtime_parameters(tmp_path):
    from tests.test_pipeline import EXPECTED_COMPONENTS

    output = tmp_path / "mmtower.json"
    cli = [
        sys.executable,
        "-m",
        "app.cli",
        "compile",
        "--target",
        "kubeflow",
        "--image",
        "gcr.io/p/mmtower:1",
        "--data-root",
        "gs://bucket/data/tuxpaint",
        "--pipeline-root",
        "gs://bucket/root",
        "--serving-dir",
        "gs://bucket/serving",
        "--output",
        str(output),
        "--epochs",
        "5",
    ] + [f"--beam-option={k}={v}" for k, v in DATAFLOW.items()]
    subprocess.run(cli, check=True, capture_output=True, text=True)
    spec = json.loads(output.read_text())["pipelineSpec"]
    assert spec["pipelineInfo"]["name"] == "mmtower-tuxpaint"
    tasks = spec["root"]["dag"]["tasks"]
    assert set(EXPECTED_COMPONENTS) - {"latest_blessed_model_resolver"} <= set(tasks)
    assert any(name.startswith("latest_blessed_model_resolver") for name in tasks)
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert set(parameters) == set(kubeflow.RUNTIME_PARAMETERS)
    executors = spec["deploymentSpec"]["executors"]
    images = {e["container"]["image"] for e in executors.values() if "container" in e}
    assert images == {"gcr.io/p/mmtower:1"}
    assert "components.pusher.Executor" in json.dumps(executors["Pusher_executor"])
    transform = json.dumps(executors["Transform_executor"])
    assert "--runner=DataflowRunner" in transform and "--project=my-project" in transform
    custom_config = json.loads(tasks["Trainer"]["inputs"]["parameters"]["custom_config"]["runtimeValue"]["constantValue"]["stringValue"])
    assert json.loads(custom_config["hparams"])["epochs"] == 5
    assert custom_config["catalog_path"].startswith("gs://bucket/data/tuxpaint/catalog/")
    examples = json.dumps(tasks["ImportExampleGen"])
    assert "examples-dir" in examples and "span-{SPAN}/train/*" in examples  # each run ingests the latest span
    assert "base_model" not in tasks["Trainer"]["inputs"].get("artifacts", {})
    # Drift: the baseline resolver runs before StatisticsGen and feeds the DriftValidator, which the gate reads.
    assert "drift_baseline_resolver" in tasks["StatisticsGen"]["dependentTasks"]
    assert tasks["DriftValidator"]["inputs"]["artifacts"]["previous"]["taskOutputArtifact"]["producerTask"] == "drift_baseline_resolver"
    assert "DriftValidator" in tasks["ValidationGate"]["dependentTasks"]


def test_incremental_spec_feeds_the_last_blessed_model_to_the_trainer(tmp_path):
    config = kubeflow.pipeline_config("tuxpaint", "gs://b/data", "gs://b/root", "gs://b/serving", Options(warm_start=True), [])
    spec = json.loads(open(kubeflow.compile_spec(config, "gcr.io/p/mmtower:1", str(tmp_path / "incremental.json"))).read())["pipelineSpec"]
    trainer = spec["root"]["dag"]["tasks"]["Trainer"]
    assert trainer["inputs"]["artifacts"]["base_model"]["taskOutputArtifact"]["producerTask"].startswith("latest_blessed_model_resolver")


def test_compile_into_a_folder_writes_the_spec_file_there(tmp_path):
    config = kubeflow.pipeline_config("tuxpaint", "gs://b/data", "gs://b/root", "gs://b/serving", Options(), [])
    path = kubeflow.compile_spec(config, "gcr.io/p/mmtower:1", str(tmp_path))
    assert path == str(tmp_path / kubeflow.SPEC_FILENAME)
    assert json.loads(open(path).read())["pipelineSpec"]["pipelineInfo"]["name"] == "mmtower-tuxpaint"


def test_compile_refuses_an_incomplete_profile(tmp_path):
    cli = [
        sys.executable,
        "-m",
        "app.cli",
        "compile",
        "--image",
        "i",
        "--data-root",
        "gs://b/d",
        "--pipeline-root",
        "gs://b/r",
        "--serving-dir",
        "gs://b/s",
        "--output",
        str(tmp_path / "x.json"),
    ]
    result = subprocess.run(cli, capture_output=True, text=True)
    assert result.returncode == 2 and "project=..." in result.stderr and "Traceback" not in result.stderr


def test_pipeline_names_are_kubeflow_safe():
    assert contract.pipeline_name("movielens-100k") == "mmtower-movielens-100k"
    with pytest.raises(ValueError, match="a-z0-9-"):
        contract.pipeline_name("my_data")


def _component_configs(pipeline) -> dict:
    """Component id -> its execution properties, run-time parameters replaced by their defaults."""
    from tfx.orchestration import data_types

    def value(v):
        return v.default if isinstance(v, data_types.RuntimeParameter) else v

    return {
        c.id: {k: value(v) for k, v in c.exec_properties.items()} | {"upstream": sorted(n.id for n in c.upstream_nodes)}
        for c in pipeline.components
    }


def test_local_and_compiled_pipelines_get_identical_component_configs(tmp_path):
    """One PipelineConfig, two runners: every component is configured the same (only metadata differs)."""
    from tfx import v1 as tfx

    from pipeline.config import PipelineConfig
    from pipeline.pipeline import create_pipeline
    from towers.hparams import HParams

    options = Options(hparams=HParams(epochs=7, history_encoder="mean"), min_recall_at_100=0.2, min_auc=0.6, require_beat_baseline=True)
    config = kubeflow.pipeline_config("movielens-100k", "gs://b/data", "gs://b/root", "gs://b/serving", options, ["--runner=DirectRunner"])
    metadata = tfx.orchestration.metadata.sqlite_metadata_connection_config(str(tmp_path / "m.sqlite"))
    local = create_pipeline(config, metadata_connection_config=metadata)
    compiled = kubeflow.build(config)
    assert isinstance(config, PipelineConfig)
    assert _component_configs(local) == _component_configs(compiled)
    assert local.beam_pipeline_args == compiled.beam_pipeline_args == ["--runner=DirectRunner"]
    trainer = json.loads(_component_configs(local)["Trainer"]["custom_config"])
    assert json.loads(trainer["hparams"])["epochs"] == 7 and json.loads(trainer["hparams"])["history_encoder"] == "mean"
    thresholds = json.loads(_component_configs(local)["RetrievalEvaluator"]["thresholds"])
    assert thresholds["min_recall_at_100"] == 0.2 and thresholds["require_beat_baseline"] is True
    assert "0.6" in _component_configs(local)["Evaluator"]["eval_config"]


def test_compile_and_run_take_the_same_pipeline_options():
    """`mmtower compile` and `mmtower run` turn the same flags into the same Options."""
    from app import cli

    flags = [
        "--epochs",
        "4",
        "--history-encoder",
        "mean",
        "--fusion",
        "attention",
        "--min-recall",
        "0.1",
        "--min-auc",
        "0.55",
        "--require-beat-baseline",
        "--warm-start",
        "--no-cache",
        "--retrieval-index",
        "scann",
        "--batch-size",
        "256",
    ]
    compile_args = ["--image", "i", "--data-root", "gs://d", "--pipeline-root", "gs://r", "--serving-dir", "gs://s"]
    parser = cli._parser()
    run = cli._options(parser.parse_args(["run", *flags]))
    compiled = cli._options(parser.parse_args(["compile", *compile_args, *flags]))
    assert run == compiled
    assert run.hparams.epochs == 4 and run.hparams.fusion == "attention" and run.min_auc == 0.55 and not run.enable_cache


def test_schedule_names_an_unreachable_endpoint(tmp_path):
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"pipelineSpec": {"pipelineInfo": {"name": "mmtower-tuxpaint"}}}))
    cli = [sys.executable, "-m", "app.cli", "schedule", "--spec", str(spec), "--host", f"http://127.0.0.1:{port}"]
    done = subprocess.run(cli, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"cannot reach the Kubeflow Pipelines API at http://127.0.0.1:{port}" in done.stderr


def _compile_contract(tmp_path, with_schema: bool):
    from tests.test_beam_build import make_shop

    folder = tmp_path / "shop"
    folder.mkdir()
    path = make_shop(folder, cold=0.1).file
    if with_schema:
        (folder / "schema").mkdir()
        (folder / "schema" / "schema.pbtxt").write_text('feature { name: "user_id" type: BYTES }\n')
    cli = [sys.executable, "-m", "app.cli", "compile", "--config", path, "--image", "gcr.io/p/mmtower:1"]
    cli += ["--data-root", "gs://b/data/shop", "--pipeline-root", "gs://b/root", "--serving-dir", "gs://b/serving"]
    cli += ["--output", str(tmp_path / "shop.json"), "--beam-profile", "local"]
    return path, subprocess.run(cli, capture_output=True, text=True)


def test_compile_with_a_data_contract_builds_the_dataset_inside_the_pipeline(tmp_path):
    path, done = _compile_contract(tmp_path, with_schema=True)
    assert done.returncode == 0, done.stderr[-3000:]
    spec = json.loads((tmp_path / "shop.json").read_text())["pipelineSpec"]
    assert spec["pipelineInfo"]["name"] == "mmtower-beam-shop"
    tasks = spec["root"]["dag"]["tasks"]
    assert "DatasetGen" in tasks and "ImportExampleGen" not in tasks and "CatalogExampleGen" not in tasks
    parameters = tasks["DatasetGen"]["inputs"]["parameters"]
    assert parameters["dataset"]["runtimeValue"]["constantValue"]["stringValue"] == path
    assert parameters["data_dir"]["runtimeValue"]["constantValue"]["stringValue"] == "gs://b/data/shop"
    embedder = tasks["ContentEmbedder"]["inputs"]["artifacts"]["catalog"]["taskOutputArtifact"]
    assert embedder == {"producerTask": "DatasetGen", "outputArtifactKey": "catalog"}
    assert tasks["StatisticsGen"]["inputs"]["artifacts"]["examples"]["taskOutputArtifact"]["producerTask"] == "DatasetGen"
    assert set(spec["root"]["inputDefinitions"]["parameters"]) == {kubeflow.MIN_RECALL_PARAM}
    assert not any(task.get("cachingOptions", {}).get("enableCache") for task in tasks.values())  # files change, parameters do not
    schema = json.dumps(tasks["ImportSchemaGen"])
    assert str(tmp_path / "shop" / "schema" / "schema.pbtxt") in schema


def test_compile_with_a_data_contract_needs_its_curated_schema(tmp_path):
    path, done = _compile_contract(tmp_path, with_schema=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "schema.pbtxt not found" in done.stderr and f"mmtower run --config {path}" in done.stderr

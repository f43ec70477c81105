"""Kubeflow / Vertex compile and Beam runner profiles (built and checked up to the orchestrator)."""
import json
import subprocess
import sys

import pytest

from pipeline import beam_profiles, kubeflow

pytestmark = pytest.mark.pipeline

DATAFLOW = {"project": "my-project", "region": "europe-west4", "temp_location": "gs://bucket/tmp", "sdk_container_image": "gcr.io/my-project/mmtower:1"}


@pytest.mark.parametrize("profile,options", [
    ("local", {}),
    ("dataflow", DATAFLOW),
    ("flink", {"flink_master": "flink:8081", "environment_config": "gcr.io/p/mmtower:1"}),
    ("spark", {"spark_master_url": "spark://spark:7077", "environment_config": "gcr.io/p/mmtower:1"}),
])
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
        sys.executable, "-m", "pipeline.cli", "compile", "--target", "kubeflow", "--image", "gcr.io/p/mmtower:1",
        "--data-root", "gs://bucket/data/tuxpaint", "--pipeline-root", "gs://bucket/root", "--serving-dir", "gs://bucket/serving",
        "--output", str(output), "--epochs", "5",
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


def test_incremental_spec_feeds_the_last_blessed_model_to_the_trainer(tmp_path):
    config = kubeflow.KubeflowConfig(
        dataset="tuxpaint", data_root="gs://b/data", pipeline_root="gs://b/root", serving_dir="gs://b/serving", image="gcr.io/p/mmtower:1", warm_start=True
    )
    spec = json.loads(open(kubeflow.compile_spec(config, str(tmp_path / "incremental.json"))).read())["pipelineSpec"]
    trainer = spec["root"]["dag"]["tasks"]["Trainer"]
    assert trainer["inputs"]["artifacts"]["base_model"]["taskOutputArtifact"]["producerTask"].startswith("latest_blessed_model_resolver")


def test_compile_into_a_folder_writes_the_spec_file_there(tmp_path):
    config = kubeflow.KubeflowConfig(dataset="tuxpaint", data_root="gs://b/data", pipeline_root="gs://b/root", serving_dir="gs://b/serving", image="gcr.io/p/mmtower:1")
    path = kubeflow.compile_spec(config, str(tmp_path))
    assert path == str(tmp_path / kubeflow.SPEC_FILENAME)
    assert json.loads(open(path).read())["pipelineSpec"]["pipelineInfo"]["name"] == "mmtower-tuxpaint"


def test_compile_refuses_an_incomplete_profile(tmp_path):
    cli = [
        sys.executable, "-m", "pipeline.cli", "compile", "--image", "i", "--data-root", "gs://b/d", "--pipeline-root", "gs://b/r",
        "--serving-dir", "gs://b/s", "--output", str(tmp_path / "x.json"),
    ]
    result = subprocess.run(cli, capture_output=True, text=True)
    assert result.returncode == 2 and "project=..." in result.stderr and "Traceback" not in result.stderr


def test_pipeline_names_are_kubeflow_safe():
    assert kubeflow.pipeline_name("movielens-100k") == "mmtower-movielens-100k"
    with pytest.raises(ValueError, match="a-z0-9-"):
        kubeflow.pipeline_name("my_data")


def test_schedule_names_an_unreachable_endpoint(tmp_path):
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"pipelineSpec": {"pipelineInfo": {"name": "mmtower-tuxpaint"}}}))
    cli = [sys.executable, "-m", "pipeline.cli", "schedule", "--spec", str(spec), "--host", f"http://127.0.0.1:{port}"]
    done = subprocess.run(cli, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"cannot reach the Kubeflow Pipelines API at http://127.0.0.1:{port}" in done.stderr

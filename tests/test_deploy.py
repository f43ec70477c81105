"""deploy/: the manifests that run the real TF Serving image are consistent with what mmtower pushes."""

from __future__ import annotations

import os

import pytest
import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving import batching
from serving import config as model_config
from towers import contract

pytestmark = pytest.mark.unit

DEPLOY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "deploy")


def _load(path: str) -> dict:
    with open(os.path.join(DEPLOY, path)) as f:
        return yaml.safe_load(f)


def test_kubernetes_config_map_is_the_pushed_config_at_models():
    parsed = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(_load("kubernetes/configmap.yaml")["data"][contract.MODEL_CONFIG_FILE], parsed)
    assert parsed == model_config.model_server_config({name: f"/models/{name}" for name in contract.SERVED_MODELS})


def test_kubernetes_deployment_serves_that_config_on_tf_serving_ports():
    deployment = _load("kubernetes/deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"].startswith("tensorflow/serving:")
    args = dict(arg.lstrip("-").split("=", 1) for arg in container["args"])
    assert args["port"] == "8500" and args["rest_api_port"] == "8501"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert args["model_config_file"] == os.path.join(mounts["config"], contract.MODEL_CONFIG_FILE)
    assert mounts["models"] == "/models"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == _load("kubernetes/configmap.yaml")["metadata"]["name"]
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == _load("kubernetes/pvc.yaml")["metadata"]["name"]
    assert container["readinessProbe"]["httpGet"]["path"] == f"/v1/models/{contract.RECOMMENDER}"
    service = _load("kubernetes/service.yaml")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert {p["port"] for p in service["spec"]["ports"]} == {8500, 8501}


def test_docker_compose_mounts_the_serving_folder_at_its_own_path():
    service = _load("docker-compose.yml")["services"]["tf-serving"]
    assert "tensorflow/serving" in service["image"]
    assert service["entrypoint"] == ["tensorflow_model_server"]
    args = dict(arg.lstrip("-").split("=", 1) for arg in service["command"])
    assert args["model_config_file"].endswith(f"}}/{contract.MODEL_CONFIG_FILE}")
    source, target, mode = service["volumes"][0].split(":")
    assert source == target == "${MMTOWER_SERVING_DIR}" and mode == "ro"
    assert all(port.startswith("127.0.0.1:") for port in service["ports"])


BATCHING_FILE = "batching_parameters.txt"


def test_both_deployments_batch_with_the_one_batching_parameters_file():
    with open(os.path.join(DEPLOY, BATCHING_FILE)) as f:
        text = f.read()
    # the file `mmtower serve --batching-parameters-file` reads too; its values are `mmtower serve`'s defaults
    assert batching.parse(text, BATCHING_FILE) == batching.BatchingParameters()
    assert _load("kubernetes/configmap.yaml")["data"][BATCHING_FILE] == text
    container = _load("kubernetes/deployment.yaml")["spec"]["template"]["spec"]["containers"][0]
    args = dict(arg.lstrip("-").split("=", 1) for arg in container["args"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert args["enable_batching"] == "true"
    assert args["batching_parameters_file"] == os.path.join(mounts["config"], BATCHING_FILE)
    service = _load("docker-compose.yml")["services"]["tf-serving"]
    args = dict(arg.lstrip("-").split("=", 1) for arg in service["command"])
    assert args["enable_batching"] == "true"
    assert f"./{BATCHING_FILE}:{args['batching_parameters_file']}:ro" in service["volumes"]

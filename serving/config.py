"""TF Serving's model config (`models.config`): the models mmtower pushes and where they live.

The file is a text-format `tensorflow.serving.ModelServerConfig`, the one the
`tensorflow/serving` binary reads with `--model_config_file`; `mmtower serve`
reads the same file. Every model lives in TF Serving's layout,
`<serving dir>/<model name>/<version>/` (a SavedModel; a version is complete
once its `saved_model.pb` exists).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from towers.contract import MODEL_CONFIG_FILE, SERVED_MODELS

if TYPE_CHECKING:  # the protos import TensorFlow (seconds): loaded where a config is built or read
    from tensorflow_serving.config import model_server_config_pb2

VERSIONS_KEPT = 1  # version policy: serve the newest version only


def model_server_config(base_paths: dict[str, str], num_versions: int = VERSIONS_KEPT) -> model_server_config_pb2.ModelServerConfig:
    """A ModelServerConfig serving the newest `num_versions` versions of each model name -> base path."""
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    for name, base_path in base_paths.items():
        model = config.model_config_list.config.add(name=name, base_path=base_path, model_platform="tensorflow")
        model.model_version_policy.latest.num_versions = num_versions
    return config


def write(path: str, config: model_server_config_pb2.ModelServerConfig) -> None:
    """Writes `config` as text, atomically (a server polling the file never reads half of it)."""
    from google.protobuf import text_format

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    partial = f"{path}.partial"
    with open(partial, "w") as f:
        f.write(text_format.MessageToString(config))
    os.replace(partial, path)


def write_for(serving_dir: str, names=SERVED_MODELS) -> str:
    """Writes `<serving_dir>/models.config` for the given models, with absolute base paths; returns its path."""
    serving_dir = os.path.abspath(serving_dir)
    path = os.path.join(serving_dir, MODEL_CONFIG_FILE)
    write(path, model_server_config({name: os.path.join(serving_dir, name) for name in names}))
    return path


def read(path: str) -> model_server_config_pb2.ModelServerConfig:
    """Parses a models.config; a clear error names the file when it is missing or malformed."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"model config {path} does not exist (the Pusher writes it next to the pushed models)")
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    try:
        with open(path) as f:
            text_format.Parse(f.read(), config)
    except text_format.ParseError as error:
        raise ValueError(f"{path} is not a text-format ModelServerConfig: {error}") from error
    if not config.model_config_list.config:
        raise ValueError(f"{path} lists no model (model_config_list is empty)")
    for model in config.model_config_list.config:
        if not model.name or not model.base_path:
            raise ValueError(f"{path}: every model needs a name and a base_path ({text_format.MessageToString(model, as_one_line=True)!r})")
    return config


def ready_versions(base_path: str) -> list[int]:
    """Version folders under a model's base path whose SavedModel is complete, oldest first."""
    if not os.path.isdir(base_path):
        return []
    return sorted(
        int(name) for name in os.listdir(base_path) if name.isdigit() and os.path.exists(os.path.join(base_path, name, "saved_model.pb"))
    )


def wanted_versions(model: model_server_config_pb2.ModelConfig, available: list[int]) -> list[int]:
    """The versions a model's version policy serves, among `available` (TF Serving's semantics)."""
    policy = model.model_version_policy
    kind = policy.WhichOneof("policy_choice")
    if kind == "all":
        return list(available)
    if kind == "specific":
        return [v for v in available if v in set(policy.specific.versions)]
    num = policy.latest.num_versions if kind == "latest" and policy.latest.num_versions > 0 else 1
    return available[-num:]

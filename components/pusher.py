"""Pusher executor that pushes all three served models and writes TF Serving's models.config.

The standard TFX Pusher pushes the Trainer's Format-Serving SavedModel (the
`recommender`) to `<serving dir>/recommender/<version>/` when the model is
blessed. This executor does the same, then pushes the `ranker` and the
`item_encoder` the Trainer exported beside it under the same version number,
and (re)writes `<serving dir>/models.config` listing all three. Each version
folder is written under a scratch name and renamed into place, so a model
server polling the folder never sees half a model.

Pushing is idempotent: `<serving dir>/push_log.jsonl` records which Trainer
model each version came from, and a blessed model that is already the newest
version (a re-run with no new data re-evaluates it against itself) is not
pushed again as another version.
"""
from __future__ import annotations

import json
import os
import shutil

from absl import logging
from tfx.components.pusher import executor as tfx_pusher
from tfx.dsl.io import fileio
from tfx.types import artifact_utils, standard_component_specs

from serving import config as model_config
from towers import exporter

STANDALONE_MODELS = {model_config.RANKER: exporter.RANKER_DIR, model_config.ITEM_ENCODER: exporter.ITEM_ENCODER_DIR}
PUSH_LOG = "push_log.jsonl"


def _push_log(serving_dir: str) -> list[dict]:
    path = os.path.join(serving_dir, PUSH_LOG)
    if not fileio.exists(path):
        return []
    with fileio.open(path) as f:
        return [json.loads(line) for line in f.read().splitlines() if line.strip()]


def record_push(serving_dir: str, version: str, destination: str, model_path: str) -> None:
    """Adds a pushed version and the Trainer model it came from to `<serving dir>/push_log.jsonl`."""
    entries = _push_log(serving_dir) + [{"version": version, "destination": destination, "model": model_path}]
    with fileio.open(os.path.join(serving_dir, PUSH_LOG), "w") as f:  # rewritten whole: object stores cannot append
        f.write("".join(json.dumps(entry) + "\n" for entry in entries))


def newest_push(serving_dir: str) -> dict | None:
    """The last push_log entry whose version folder still exists, or None."""
    return next((e for e in reversed(_push_log(serving_dir)) if fileio.isdir(e["destination"])), None)


def push_version(source: str, base_path: str, version: str) -> str:
    """Copies a SavedModel folder to `<base_path>/<version>` atomically (scratch copy + rename)."""
    target = os.path.join(base_path, version)
    if os.path.exists(target):
        return target
    os.makedirs(base_path, exist_ok=True)
    scratch = os.path.join(base_path, f".partial-{version}")
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(source, scratch)
    os.replace(scratch, target)
    return target


class Executor(tfx_pusher.Executor):
    """TFX's Pusher, plus the ranker and item encoder and models.config (filesystem destinations only)."""

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        pushed = artifact_utils.get_single_instance(output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        base_directory = json.loads(exec_properties[standard_component_specs.PUSH_DESTINATION_KEY])["filesystem"]["base_directory"]
        serving_dir = os.path.dirname(base_directory)
        if self.CheckBlessing(input_dict):
            newest = newest_push(serving_dir)
            if newest and newest["model"] == self.GetModelPath(input_dict):
                logging.info("this model is already served as version %s: not pushed again", newest["version"])
                self._MarkPushed(pushed, pushed_destination=newest["destination"], pushed_version=newest["version"])
                return
        super().Do(input_dict, output_dict, exec_properties)
        if not pushed.get_int_custom_property("pushed"):
            return
        destination = pushed.get_string_custom_property("pushed_destination")  # <serving dir>/recommender/<version>
        version = pushed.get_string_custom_property("pushed_version")
        record_push(serving_dir, version, destination, self.GetModelPath(input_dict))
        sources = exporter.standalone_dirs(self.GetModelPath(input_dict))
        for name, folder in STANDALONE_MODELS.items():
            target = push_version(sources[folder], os.path.join(serving_dir, name), version)
            logging.info("%s pushed to %s", name, target)
        config_path = model_config.write_for(serving_dir)
        logging.info("TF Serving model config written to %s", config_path)

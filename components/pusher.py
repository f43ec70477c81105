"""Pusher executor that pushes all three served models and writes TF Serving's models.config.

The standard TFX Pusher pushes the Trainer's Format-Serving SavedModel (the
`recommender`) to `<serving dir>/recommender/<version>/` when the model is
blessed. This executor does the same, then pushes the `ranker` and the
`item_encoder` the Trainer exported beside it under the same version number,
and (re)writes `<serving dir>/models.config` listing all three. Each version
folder is written under a scratch name and renamed into place, so a model
server polling the folder never sees half a model.
"""
from __future__ import annotations

import os
import shutil

from absl import logging
from tfx.components.pusher import executor as tfx_pusher
from tfx.types import artifact_utils, standard_component_specs

from serving import config as model_config
from towers import exporter

STANDALONE_MODELS = {model_config.RANKER: exporter.RANKER_DIR, model_config.ITEM_ENCODER: exporter.ITEM_ENCODER_DIR}


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
        super().Do(input_dict, output_dict, exec_properties)
        pushed = artifact_utils.get_single_instance(output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        if not pushed.get_int_custom_property("pushed"):
            return
        destination = pushed.get_string_custom_property("pushed_destination")  # <serving dir>/recommender/<version>
        version = pushed.get_string_custom_property("pushed_version")
        serving_dir = os.path.dirname(os.path.dirname(destination))
        sources = exporter.standalone_dirs(self.GetModelPath(input_dict))
        for name, folder in STANDALONE_MODELS.items():
            target = push_version(sources[folder], os.path.join(serving_dir, name), version)
            logging.info("%s pushed to %s", name, target)
        config_path = model_config.write_for(serving_dir)
        logging.info("TF Serving model config written to %s", config_path)

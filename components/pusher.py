"""Pusher executor that pushes all three served models and writes TF Serving's models.config.

TFX's Pusher copies the Trainer's Format-Serving SavedModel (the
`recommender`) to `<serving dir>/recommender/<version>/` when the model is
blessed, in place. This executor pushes it together with the `ranker` and
the `item_encoder` the Trainer exported beside it, under one version number,
and (re)writes `<serving dir>/models.config` listing all three, as one
publication (serving.publish): scratch folders, fsync, renames, an intent
log; a push cut off by a kill is rolled back and the rerun pushes again.

Pushing is idempotent: `<serving dir>/push_log.jsonl` records which Trainer
model each version came from, and a blessed model that is already the newest
push with all three models in place (a re-run with no new data re-evaluates
it against itself) is not pushed again as another version.
"""

from __future__ import annotations

import json
import os

from absl import logging
from tfx.components.pusher import executor as tfx_pusher
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils

from serving import publish
from towers import contract


def push_models(serving_dir: str, model_path: str, pipeline: str | None = None) -> tuple[str, str, bool]:
    """Publishes the Trainer model at `model_path` (recommender + ranker + item_encoder) of `pipeline` (its name,
    recorded: one serving folder serves one dataset's models at a time) unless it is already the newest push.
    -> (version, the recommender's version folder, whether it was pushed now)."""
    publish.recover(serving_dir)
    newest = publish.newest(serving_dir, publish.PUSH)
    if newest and pipeline and newest.get("pipeline") not in (None, pipeline):
        logging.warning(
            "%s serves models of %s; this push of %s replaces them (give each dataset its own --output to serve both)",
            serving_dir,
            newest["pipeline"],
            pipeline,
        )
    if (
        newest
        and newest["model"] == model_path
        and all(os.path.isdir(os.path.join(serving_dir, name, newest["version"])) for name in contract.SERVED_MODELS)
    ):
        return newest["version"], newest["destination"], False
    version = publish.next_version(serving_dir)
    sources = contract.trainer_model_dirs(model_path)
    destination = os.path.join(serving_dir, contract.RECOMMENDER, str(version))
    publish.publish(
        serving_dir,
        version,
        {name: publish.copier(source) for name, source in sources.items()},
        kind=publish.PUSH,
        model=model_path,
        destination=destination,
        pipeline=pipeline,
    )
    return str(version), destination, True


class Executor(tfx_pusher.Executor):
    """TFX's Pusher for the three served models and models.config (filesystem destinations only)."""

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        pushed = artifact_utils.get_single_instance(output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(pushed)
            return
        base_directory = json.loads(exec_properties[standard_component_specs.PUSH_DESTINATION_KEY])["filesystem"]["base_directory"]
        serving_dir = os.path.dirname(base_directory)
        model_path = self.GetModelPath(input_dict)
        pipeline = self._context.pipeline_info.id if self._context and self._context.pipeline_info else None
        version, destination, now = push_models(serving_dir, model_path, pipeline)
        if now:
            logging.info(
                "pushed version %s of %s to %s (models.config: %s)",
                version,
                ", ".join(contract.SERVED_MODELS),
                serving_dir,
                contract.MODEL_CONFIG_FILE,
            )
            io_utils.copy_dir(model_path, pushed.uri)  # the pushed model's archive, as TFX's Pusher keeps it
        else:
            logging.info("this model is already served as version %s: not pushed again", version)
        self._MarkPushed(pushed, pushed_destination=destination, pushed_version=version)

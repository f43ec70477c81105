"""Where a run's files live, derived from --output and --dataset in one place."""
from __future__ import annotations

import os
from dataclasses import dataclass

MODEL_NAME = "recommender"  # serving.config.RECOMMENDER


@dataclass(frozen=True)
class RunPaths:
    """Layout of an output folder.

    <output>/data/<dataset>/            dataset build (ExampleGen input, catalog)
    <output>/pipeline/<pipeline_name>/  component outputs (pipeline root)
    <output>/metadata.sqlite            ML Metadata
    <output>/serving/<model_name>/<v>/  pushed SavedModels, TF Serving's layout (recommender, ranker, item_encoder)
    <output>/serving/models.config      TF Serving's model config for them
    <output>/logs/run.log               full log of the last run
    """

    output: str
    dataset: str

    @property
    def pipeline_name(self) -> str:
        return f"mmtower-{self.dataset}"

    @property
    def data_dir(self) -> str:
        return os.path.join(self.output, "data", self.dataset)

    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.output, "pipeline", self.pipeline_name)

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.output, "metadata.sqlite")

    @property
    def serving_dir(self) -> str:
        return os.path.join(self.output, "serving")

    def serving_model_dir(self, model_name: str = MODEL_NAME) -> str:
        return os.path.join(self.serving_dir, model_name)

    @property
    def log_file(self) -> str:
        return os.path.join(self.output, "logs", "run.log")


def latest_version_dir(model_dir: str) -> str | None:
    """Newest numeric version folder under a TF Serving model directory, if any."""
    if not os.path.isdir(model_dir):
        return None
    versions = [name for name in os.listdir(model_dir) if name.isdigit()]
    return os.path.join(model_dir, max(versions, key=int)) if versions else None

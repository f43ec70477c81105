"""Runs the pipeline on this machine: LocalDagRunner, SQLite ML Metadata, Beam DirectRunner."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from mmdata import registry
from mmdata.records import TEMPORAL
from pipeline import progress
from pipeline.config import Options, PipelineConfig, schema_path
from towers import privacy
from towers.contract import QUARANTINE_FILE, RunPaths
from towers.encoders import registry as encoders
from towers.hparams import SCANN


@dataclass
class RunConfig:
    """Everything `mmtower run` can be told: the pipeline's options, how to build the dataset, where to run it.

    Attributes:
      dataset: registry name (mmdata.registry.DATASETS).
      output: output folder (towers.contract.RunPaths).
      options: what the pipeline computes (pipeline.config.Options: hyperparameters, blessing thresholds, ...).
      max_users: build the dataset from the first N users only (tests, demos).
      cold_item_fraction: share of the eval split's items kept out of training
        entirely, to measure cold-start recommendation from content (None:
        the dataset's default).
      split: records.TEMPORAL (the latest interactions are evaluation data) or
        records.RANDOM (a random share: the TFRS tutorials' protocol).
      eval_fraction: share of interactions held out (None: the dataset's default).
      validation_fraction: share of the training period (its latest part) held out as the
        validation split, on which choices are made (None: the dataset's default).
      spans: build the dataset as this many cumulative snapshots (examples/span-<k>/).
      direct_num_workers: Beam DirectRunner processes; 1 runs in memory.
      beam_pipeline_args: Beam options instead of the DirectRunner's (pipeline.beam_profiles: Dataflow, Flink, Spark).
      encoder_handles: modality -> encoder handle, for the modalities the dataset has; the others: the
        local exports (`mmtower encoders export`). A TF-Hub/Kaggle handle works the same.
      requests: a log of requests (mmdata.requests) to compare with the training split for skew.
      pseudonymize: replace user ids by keyed hashes as the data is read (towers.privacy; default on).
      pseudonym_key: the key's file (None: $MMTOWER_PSEUDONYM_KEY, else the default key file).
    """

    dataset: str = registry.DEFAULT_DATASET
    output: str = "output"
    options: Options = field(default_factory=Options)
    max_users: int | None = None
    cold_item_fraction: float | None = None
    split: str = TEMPORAL
    eval_fraction: float | None = None
    validation_fraction: float | None = None
    spans: int = 1
    direct_num_workers: int = 2
    beam_pipeline_args: list[str] | None = None
    encoder_handles: dict[str, str] | None = None
    requests: str | None = None
    pseudonymize: bool = True
    pseudonym_key: str | None = None

    def __post_init__(self):
        if self.requests and not os.path.exists(self.requests):
            raise ValueError(f"--requests {self.requests}: file not found")
        span = self.options.span
        if self.spans < 1 or (span is not None and not 1 <= span <= self.spans):
            raise ValueError(f"--span must be between 1 and --spans ({self.spans}), and --spans at least 1")


def beam_args(num_workers: int) -> list[str]:
    if num_workers <= 1:
        return ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
    return ["--direct_running_mode=multi_processing", f"--direct_num_workers={num_workers}"]


def pipeline_config(config: RunConfig, paths: RunPaths) -> PipelineConfig:
    """The PipelineConfig of a local run: this machine's folders, encoders and schemas, the DirectRunner."""
    handles = {name: encoders.local_handle(name) for name in encoders.encoders_for(registry.get(config.dataset).modalities)}
    handles.update({name: handle for name, handle in (config.encoder_handles or {}).items() if name in handles})
    return PipelineConfig(
        dataset=config.dataset,
        data_root=paths.data_dir,
        pipeline_root=paths.pipeline_root,
        serving_dir=paths.serving_dir,
        encoder_handles=handles,
        schema_path=schema_path(config.dataset),
        features=registry.get(config.dataset).features,
        options=config.options,
        beam_pipeline_args=tuple(config.beam_pipeline_args or beam_args(config.direct_num_workers)),
        requests_dir=paths.requests_dir if config.requests else "",
    )


def build_pipeline(config: RunConfig, paths: RunPaths):
    from tfx import v1 as tfx

    from pipeline.pipeline import create_pipeline

    metadata = tfx.orchestration.metadata.sqlite_metadata_connection_config(paths.metadata_path)
    return create_pipeline(pipeline_config(config, paths), metadata_connection_config=metadata)


def run(config: RunConfig) -> tuple[RunPaths, dict[str, float]]:
    """Builds the dataset if needed and runs the pipeline.

    Returns:
      (paths, wall seconds per step, including 'dataset' and 'total').
    """
    paths = RunPaths(os.path.abspath(config.output), config.dataset)
    os.makedirs(os.path.dirname(paths.log_file), exist_ok=True)
    handler = progress.install(paths.log_file)
    started = time.monotonic()
    handler.say(f"building dataset {config.dataset} -> {paths.data_dir}")
    key = privacy.load_key(config.pseudonym_key) if config.pseudonymize else None
    manifest = registry.build(
        config.dataset,
        paths.data_dir,
        max_users=config.max_users,
        cold_item_fraction=config.cold_item_fraction,
        split=config.split,
        eval_fraction=config.eval_fraction,
        spans=config.spans,
        validation_fraction=config.validation_fraction,
        # A profile's runner (Dataflow, Flink, Spark) builds it there; the local DirectRunner builds it in memory: its
        # worker processes would only add their start-up (it keeps every PCollection in memory in either mode).
        beam_args=config.beam_pipeline_args or beam_args(1),
        privacy_key=key,
        forgotten=forgotten_users(paths),
    )
    span = config.options.span or manifest.spans
    spec = registry.get(config.dataset)
    if spec.schema_file and not os.path.exists(spec.schema_file):
        from mmdata import schema
        from mmdata.records import span_dir

        schema.infer(config.dataset, span_dir(paths.data_dir, span), manifest.roles, spec.schema_file)
        handler.say(f"✔ schema inferred by TFDV and written to {spec.schema_file}: curate it; later runs import it")
    train, validation, evaluation = manifest.span_sizes[span - 1]
    handler.say(
        f"✔ dataset: {f'span {span} of {manifest.spans}: ' if manifest.spans > 1 else ''}{train:,} train / {validation:,} validation / {evaluation:,} eval interactions, "
        f"{manifest.num_items:,} items ({manifest.num_cold_items} new in eval, {manifest.num_validation_cold_items} new in validation: no training interactions), {manifest.num_quarantined} source rows with issues ({os.path.join(paths.data_dir, QUARANTINE_FILE)})"
    )
    if config.requests:
        _write_requests(config.requests, paths, manifest.roles, handler, key)
    wall_times = {"dataset": time.monotonic() - started}
    from tfx import v1 as tfx

    if config.options.hparams.retrieval_index == SCANN:
        from towers import scann_index

        scann_index.load_ops()  # the in-process Evaluator loads a ScaNN-indexed model
    with progress.stderr_to(paths.log_file):
        tfx.orchestration.LocalDagRunner().run(build_pipeline(config, paths))
    wall_times.update(handler.wall_times)
    wall_times["total"] = time.monotonic() - started
    return paths, wall_times


def forgotten_users(paths: RunPaths) -> frozenset:
    """The stored ids `mmtower forget` listed for this output and dataset (none: empty)."""
    if not os.path.exists(paths.forget_file):
        return frozenset()
    with open(paths.forget_file) as f:
        return frozenset(line.strip() for line in f if line.strip())


def _write_requests(log: str, paths: RunPaths, roles, handler, key: bytes | None) -> None:
    """The log's query rows -> paths.requests_dir (RequestsExampleGen's input); its bad lines quarantined beside them."""
    import json
    import shutil
    from dataclasses import asdict

    from mmdata import requests

    shutil.rmtree(paths.requests_dir, ignore_errors=True)
    count, quarantined = requests.write_requests(log, paths.requests_dir, roles, key)
    with open(os.path.join(paths.requests_dir, QUARANTINE_FILE), "w") as f:
        f.writelines(json.dumps(asdict(row)) + "\n" for row in quarantined)
    handler.say(
        f"✔ logged requests: {count:,} queries from {log} for the skew check, {len(quarantined)} values or lines with issues "
        f"({os.path.join(paths.requests_dir, QUARANTINE_FILE)})"
    )

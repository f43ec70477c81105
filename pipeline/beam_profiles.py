"""Named Beam runner profiles -> `beam_pipeline_args` for the Beam-based components.

`local` (the default) is the DirectRunner with worker processes; `dataflow`,
`flink` and `spark` move Transform, StatisticsGen, the ContentEmbedder, TFMA
and the other Beam stages to a cluster when the data outgrows one machine.
Remote workers run a container with mmtower installed (the Dockerfile), so
that `components.preprocessing` and the encoders import there.

    mmtower run --beam-profile dataflow --beam-option project=my-project \\
        --beam-option temp_location=gs://my-bucket/tmp --beam-option region=europe-west4
"""

from __future__ import annotations

from dataclasses import dataclass

LOCAL, DATAFLOW, FLINK, SPARK = "local", "dataflow", "flink", "spark"


@dataclass(frozen=True)
class Profile:
    """A runner and the options it needs (each required one must be given; defaults may be overridden)."""

    runner: str
    defaults: dict
    required: tuple[str, ...] = ()
    help: str = ""


PROFILES = {
    LOCAL: Profile(
        "DirectRunner", {"direct_running_mode": "multi_processing", "direct_num_workers": "2"}, help="this machine, worker processes"
    ),
    DATAFLOW: Profile(
        "DataflowRunner",
        {"experiments": "use_runner_v2", "max_num_workers": "20", "disk_size_gb": "50"},
        required=("project", "region", "temp_location", "sdk_container_image"),
        help="Google Cloud Dataflow; the container image carries mmtower (Dockerfile)",
    ),
    FLINK: Profile(
        "FlinkRunner",
        {"environment_type": "DOCKER", "parallelism": "8"},
        required=("flink_master", "environment_config"),
        help="a Flink cluster (environment_config: the mmtower image)",
    ),
    SPARK: Profile(
        "SparkRunner",
        {"environment_type": "DOCKER"},
        required=("spark_master_url", "environment_config"),
        help="a Spark cluster (environment_config: the mmtower image)",
    ),
}


def beam_args(profile: str, options: dict[str, str] | None = None) -> list[str]:
    """`--runner=...` plus the profile's defaults overridden by `options`; errors name what is missing."""
    if profile not in PROFILES:
        raise ValueError(f"unknown Beam profile {profile!r}; profiles: {', '.join(PROFILES)}")
    spec = PROFILES[profile]
    values = {**spec.defaults, **(options or {})}
    missing = [name for name in spec.required if not values.get(name)]
    if missing:
        raise ValueError(f"Beam profile {profile!r} needs {', '.join('--beam-option ' + m + '=...' for m in missing)}")
    return [f"--runner={spec.runner}"] + [f"--{name}={value}" for name, value in values.items()]


def parse_options(pairs: list[str]) -> dict[str, str]:
    """["key=value", ...] -> {key: value}."""
    options = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--beam-option takes KEY=VALUE, got {pair!r}")
        options[key.lstrip("-")] = value
    return options


def validate(args: list[str]) -> dict:
    """Parses `args` with Beam's PipelineOptions; every option must be one Beam knows. -> the parsed options."""
    from apache_beam.options.pipeline_options import PipelineOptions

    parsed = PipelineOptions(args).get_all_options(drop_default=True, retain_unknown_options=False)
    unknown = [arg for arg in args if arg.lstrip("-").split("=", 1)[0] not in parsed]
    if unknown:
        raise ValueError(f"Beam does not know these options: {unknown}")
    return parsed

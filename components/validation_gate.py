"""ValidationGate: stops the pipeline before Transform/Trainer when ExampleValidator found anomalies or the DriftValidator drift.

ExampleValidator and DriftValidator record what they found but do not stop a
run; this component fails with a message naming each split, feature and
anomaly (for drift: the measured distance and the threshold), so that nothing
downstream trains on data that broke the curated schema or drifted past its
`drift_comparator` thresholds.
"""

import os

import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import v1 as tfx
from tfx.types import artifact_utils

from components import drift_validator
from components.errors import DataValidationError  # noqa: F401 - raised here, imported from here by callers
from towers.contract import ANOMALIES_FILE


def describe_anomalies(anomalies_by_split: dict[str, anomalies_pb2.Anomalies]) -> list[str]:
    """One line per (split, feature) anomaly: 'split 'train': feature 'age': <description>'."""
    lines = []
    for split, anomalies in sorted(anomalies_by_split.items()):
        for feature, info in sorted(anomalies.anomaly_info.items()):
            reasons = "; ".join(reason.description or reason.short_description for reason in info.reason) or info.description
            lines.append(f"split '{split}': feature '{feature}': {reasons}")
        if anomalies.HasField("dataset_anomaly_info"):
            lines.append(f"split '{split}': dataset: {anomalies.dataset_anomaly_info.description}")
    return lines


def read_anomalies(artifact) -> dict[str, anomalies_pb2.Anomalies]:
    out = {}
    for split in artifact_utils.decode_split_names(artifact.split_names):
        path = os.path.join(artifact.uri, f"Split-{split}", ANOMALIES_FILE)
        with tf.io.gfile.GFile(path, "rb") as f:
            out[split] = anomalies_pb2.Anomalies.FromString(f.read())
    return out


def check(anomalies_by_split: dict[str, anomalies_pb2.Anomalies], drift: dict | None = None) -> None:
    """Raises DataValidationError naming every schema anomaly and every drift or skew measurement above its threshold.

    `drift`: the DriftValidator's report (drift.json); None where there is none.
    """
    schema_lines = describe_anomalies(anomalies_by_split)
    drift_lines = drift_validator.describe_failures(drift or {})
    found = []
    if schema_lines:
        found.append("ExampleValidator found anomalies against the curated schema")
    if any("drift since" in line for line in drift_lines):
        found.append(f"DriftValidator found drift since {drift_validator.since(drift)} beyond the schema's drift_comparator thresholds")
    if any("skew between" in line for line in drift_lines):
        found.append("DriftValidator found skew between training and the logged requests beyond the schema's skew_comparator thresholds")
    if found:
        raise DataValidationError(
            " and ".join(found) + "; stopping before Transform and Trainer:\n  " + "\n  ".join(schema_lines + drift_lines)
        )


@tfx.dsl.components.component
def ValidationGate(
    anomalies: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleAnomalies],
    drift: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleAnomalies],
) -> None:
    """Fails the run if `anomalies` holds any anomaly or `drift` (the DriftValidator's) any measurement above its threshold."""
    check(read_anomalies(anomalies), drift_validator.read_report(drift))

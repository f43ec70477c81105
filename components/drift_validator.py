"""DriftValidator: this run's statistics against the statistics the last run accepted, per split.

TFX 1.16's ExampleValidator compares statistics with the schema only. This
component calls `tfdv.validate_statistics(current, schema,
previous_statistics=baseline)` on each split, so TFDV measures every feature
whose curated schema declares a `drift_comparator` (L-infinity distance for
categorical features, Jensen-Shannon divergence for numeric ones), and writes:

- `drift`: an ExampleAnomalies artifact, `Split-<split>/SchemaDiff.pb` holding
  the drift anomalies only (schema anomalies are the ExampleValidator's), and
  `drift.json` (features compared, distance, threshold, verdict), which the
  ValidationGate and the run summary read;
- `baseline`: the statistics the next run compares with: a copy of this run's
  statistics when nothing drifted, otherwise a copy of the baseline it was
  compared with, so that running the same drifted span again fails again
  (loosen the threshold in the schema, or fix the data, to move on).

The baseline comes from the `drift_baseline_resolver` (pipeline.pipeline): the
newest `baseline` this component published, i.e. a previous run's; the first
run has none, compares nothing and says so.

Skew against logged requests: given `serving` (the statistics of the requests
a user logged, mmdata.requests), the training split's statistics are compared
with them on every feature whose schema declares a `skew_comparator`
(`tfdv.validate_statistics(train, schema, serving_statistics=serving)`); the
result is `skew` in drift.json, its anomalies `Split-serving/SchemaDiff.pb`,
and the ValidationGate stops on it as on drift. Skew does not change the
drift baseline.
"""

import json
import os

from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2
from tfx import v1 as tfx

from towers.contract import ANOMALIES_FILE, DRIFT_FILE, SERVING_SPLIT, STATISTICS_FILE, TRAIN_SPLIT

MEASURES = {
    "L_INFTY": "L-infinity distance",
    "JENSEN_SHANNON_DIVERGENCE": "Jensen-Shannon divergence",
    "NORMALIZED_ABSOLUTE_DIFFERENCE": "normalized absolute difference",
}
SHORT = {"L-infinity distance": "L-inf", "Jensen-Shannon divergence": "JS", "normalized absolute difference": "NAD"}


def measure(
    current: statistics_pb2.DatasetFeatureStatisticsList,
    previous: statistics_pb2.DatasetFeatureStatisticsList,
    schema: schema_pb2.Schema,
    skew: bool = False,
) -> tuple[list[dict], anomalies_pb2.Anomalies]:
    """TFDV's drift measurements of one split: one row per (feature, comparator), and the drift anomalies alone.

    `skew`: `previous` holds serving statistics (logged requests): the schema's skew comparators are measured instead.

    Returns:
      ([{"feature", "measure", "distance", "threshold", "passed"}], anomalies holding only comparator reasons).
    """
    import tensorflow_data_validation as tfdv

    other = {"serving_statistics": previous} if skew else {"previous_statistics": previous}
    found = tfdv.validate_statistics(current, schema, **other)
    rows = []
    for info in found.drift_skew_info:
        feature = ".".join(info.path.step)
        for m in info.skew_measurements if skew else info.drift_measurements:
            kind = anomalies_pb2.DriftSkewInfo.Measurement.Type.Name(m.type)
            distance, threshold = float(m.value), float(m.threshold)
            rows.append(
                {
                    "feature": feature,
                    "measure": MEASURES.get(kind, kind),
                    "distance": distance,
                    "threshold": threshold,
                    "passed": distance <= threshold,
                }
            )
    drift = anomalies_pb2.Anomalies()
    drift.baseline.CopyFrom(found.baseline)
    drift.anomaly_name_format = found.anomaly_name_format
    drift.drift_skew_info.extend(found.drift_skew_info)
    for feature, info in found.anomaly_info.items():
        reasons = [r for r in info.reason if anomalies_pb2.AnomalyInfo.Type.Name(r.type).startswith("COMPARATOR_")]
        if reasons:
            kept = drift.anomaly_info[feature]
            kept.CopyFrom(info)
            del kept.reason[:]
            kept.reason.extend(reasons)
    return sorted(rows, key=lambda r: (r["feature"], r["measure"])), drift


def compare(
    current_by_split: dict[str, statistics_pb2.DatasetFeatureStatisticsList],
    previous_by_split: dict[str, statistics_pb2.DatasetFeatureStatisticsList] | None,
    schema: schema_pb2.Schema,
) -> tuple[dict, dict[str, anomalies_pb2.Anomalies]]:
    """The drift report of a run (what drift.json holds, less the spans) and its drift anomalies per split.

    `previous_by_split` None: a first run, nothing to compare, passes.
    """
    if previous_by_split is None:
        return {"compared": False, "passed": True, "measurements": []}, {}
    measurements, anomalies = [], {}
    for split in sorted(set(current_by_split) & set(previous_by_split)):
        rows, anomalies[split] = measure(current_by_split[split], previous_by_split[split], schema)
        measurements += [{"split": split, **row} for row in rows]
    return {"compared": True, "passed": all(m["passed"] for m in measurements), "measurements": measurements}, anomalies


def compare_skew(
    training: statistics_pb2.DatasetFeatureStatisticsList,
    serving: statistics_pb2.DatasetFeatureStatisticsList | None,
    schema: schema_pb2.Schema,
) -> tuple[dict, anomalies_pb2.Anomalies | None]:
    """drift.json's `skew`: the training split against logged requests (None: none logged, nothing compared)."""
    if serving is None:
        return {"compared": False, "passed": True, "measurements": []}, None
    rows, anomalies = measure(training, serving, schema, skew=True)
    return {"compared": True, "passed": all(r["passed"] for r in rows), "measurements": rows}, anomalies


def since(report: dict) -> str:
    span = report.get("previous_span")
    return f"span {span}" if span else "the last accepted statistics"


def describe_failures(report: dict) -> list[str]:
    """One line per measurement above its threshold: split, feature, distance and threshold (drift, then skew)."""
    drift = [
        f"split '{m['split']}': feature '{m['feature']}': drift since {since(report)}: "
        f"{m['measure']} {m['distance']:.4g} above the threshold {m['threshold']:g}"
        for m in report.get("measurements", [])
        if not m["passed"]
    ]
    skew = [
        f"feature '{m['feature']}': skew between the training split and the logged requests: "
        f"{m['measure']} {m['distance']:.4g} above the threshold {m['threshold']:g}"
        for m in report.get("skew", {}).get("measurements", [])
        if not m["passed"]
    ]
    return drift + skew


def skew_line(report: dict) -> str:
    """The run summary's skew line: the training split against the logged requests, each distance against its threshold."""
    skew = report.get("skew") or {}
    if not skew.get("compared"):
        return "Skew: no logged requests given (mmtower run --requests LOG compares them with the training split)"
    verdict = "PASS" if skew["passed"] else "FAIL"
    if not skew["measurements"]:
        return (
            f"Skew: {verdict}, training vs {skew.get('requests', 0):,} logged requests: no feature of the schema declares a skew_comparator"
        )
    rows = ", ".join(
        f"{m['feature']} {SHORT.get(m['measure'], m['measure'])} {m['distance']:.4g} {'<=' if m['passed'] else '>'} {m['threshold']:g}"
        for m in skew["measurements"]
    )
    return f"Skew: {verdict}, training vs {skew.get('requests', 0):,} logged requests: {rows}"


def summary_line(report: dict) -> str:
    """The run summary's line: what was compared with what, each distance against its threshold."""
    if not report:
        return "Drift: no drift check recorded"
    if not report.get("compared"):
        return "Drift: PASS, first run: no previous statistics to compare with (this run's become the baseline)"
    verdict = "PASS" if report["passed"] else "FAIL"
    now = f"span {report['current_span']}" if report.get("current_span") else "this run"
    if not report["measurements"]:
        return f"Drift: {verdict}, {now} vs {since(report)}: no feature of the schema declares a drift_comparator"
    rows = ", ".join(
        f"{m['split']}/{m['feature']} {SHORT.get(m['measure'], m['measure'])} {m['distance']:.4g} {'<=' if m['passed'] else '>'} {m['threshold']:g}"
        for m in report["measurements"]
    )
    return f"Drift: {verdict}, {now} vs {since(report)}: {rows}"


def _read_statistics(artifact, splits) -> dict[str, statistics_pb2.DatasetFeatureStatisticsList]:
    import tensorflow as tf

    out = {}
    for split in splits:
        with tf.io.gfile.GFile(os.path.join(artifact.uri, f"Split-{split}", STATISTICS_FILE), "rb") as f:
            out[split] = statistics_pb2.DatasetFeatureStatisticsList.FromString(f.read())
    return out


def read_report(artifact) -> dict:
    import tensorflow as tf

    with tf.io.gfile.GFile(os.path.join(artifact.uri, DRIFT_FILE)) as f:
        return json.load(f)


def _span(artifact) -> int | None:
    """The artifact's span (a property of statistics, a custom property of Examples); None where unset or 0."""
    if artifact.has_property("span"):
        return int(artifact.span) or None
    if artifact.has_custom_property("span"):
        return int(artifact.get_int_custom_property("span")) or None
    return None


@tfx.dsl.components.component
def DriftValidator(
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    statistics: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleStatistics],
    schema: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Schema],
    drift: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.ExampleAnomalies],
    baseline: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.ExampleStatistics],
    previous: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleStatistics] = None,
    serving: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleStatistics] = None,
) -> None:
    """Measures drift of `statistics` (of `examples`, whose span it names) against `previous` (the last accepted
    baseline; none on a first run), and skew of its training split against `serving` (logged requests), if given."""
    import tensorflow as tf
    import tensorflow_data_validation as tfdv
    from tfx.types import artifact_utils
    from tfx.utils import io_utils

    splits = artifact_utils.decode_split_names(statistics.split_names)
    current = _read_statistics(statistics, splits)
    before = None
    if previous is not None:
        before = _read_statistics(previous, artifact_utils.decode_split_names(previous.split_names))
    curated = tfdv.load_schema_text(io_utils.get_only_uri_in_dir(schema.uri))
    report, anomalies = compare(current, before, curated)
    span = _span(examples)  # StatisticsGen leaves its own span property 0: ImportExampleGen records the span as a custom property
    requests = None
    if serving is not None:
        requests = _read_statistics(serving, [SERVING_SPLIT])[SERVING_SPLIT]
    report["skew"], skew_anomalies = compare_skew(current[TRAIN_SPLIT], requests, curated)
    if requests is not None:
        report["skew"]["requests"] = sum(d.num_examples for d in requests.datasets)
        anomalies[SERVING_SPLIT] = skew_anomalies
    report.update(
        current_span=span,
        previous_span=_span(previous) if previous is not None else None,
        previous_statistics=previous.uri if previous is not None else None,
    )

    drift.split_names = artifact_utils.encode_split_names(sorted(anomalies))
    if span is not None:
        drift.span = span
    for split, found in anomalies.items():
        io_utils.write_bytes_file(os.path.join(drift.uri, f"Split-{split}", ANOMALIES_FILE), found.SerializeToString())
    tf.io.gfile.makedirs(drift.uri)
    with tf.io.gfile.GFile(os.path.join(drift.uri, DRIFT_FILE), "w") as f:
        json.dump(report, f, indent=1)

    # The next run compares with this run's statistics only if they were accepted (drift; skew aside).
    source, source_span = (statistics, span) if report["passed"] else (previous, report["previous_span"])
    source_splits = artifact_utils.decode_split_names(source.split_names)
    baseline.split_names = artifact_utils.encode_split_names(source_splits)
    if source_span is not None:
        baseline.span = source_span
    for split in source_splits:
        target = os.path.join(baseline.uri, f"Split-{split}")
        tf.io.gfile.makedirs(target)
        tf.io.gfile.copy(os.path.join(source.uri, f"Split-{split}", STATISTICS_FILE), os.path.join(target, STATISTICS_FILE), overwrite=True)

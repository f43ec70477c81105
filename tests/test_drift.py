"""Drift between spans: TFDV's drift comparators, declared in the curated schema, measured by the DriftValidator and enforced by the gate."""

import json
import os

import pandas as pd
import pytest
import tensorflow_data_validation as tfdv

from components import drift_validator, validation_gate

pytestmark = pytest.mark.unit

EVEN = pd.DataFrame({"genre": ["drama"] * 50 + ["comedy"] * 50, "age": list(range(100))})
SHIFTED = pd.DataFrame({"genre": ["drama"] * 85 + ["comedy"] * 15, "age": list(range(100))})


def _schema():
    schema = tfdv.infer_schema(tfdv.generate_statistics_from_dataframe(EVEN))
    tfdv.get_feature(schema, "genre").drift_comparator.infinity_norm.threshold = 0.1
    return schema


def _stats(frame):
    return tfdv.generate_statistics_from_dataframe(frame)


def test_a_shifted_categorical_distribution_fails_naming_the_feature_distance_and_threshold():
    report, anomalies = drift_validator.compare({"train": _stats(SHIFTED)}, {"train": _stats(EVEN)}, _schema())
    assert report["compared"] and not report["passed"]
    [row] = report["measurements"]  # only the feature that declares a comparator is measured
    assert row == {
        "split": "train",
        "feature": "genre",
        "measure": "L-infinity distance",
        "distance": pytest.approx(0.35),
        "threshold": 0.1,
        "passed": False,
    }
    assert list(anomalies["train"].anomaly_info) == ["genre"]
    report["previous_span"] = 1
    with pytest.raises(validation_gate.DataValidationError) as error:
        validation_gate.check({"train": tfdv.validate_statistics(_stats(SHIFTED), _schema())}, report)
    message = str(error.value)
    assert "split 'train': feature 'genre': drift since span 1: L-infinity distance 0.35 above the threshold 0.1" in message
    assert "ExampleValidator found" not in message and "stopping before Transform and Trainer" in message


def test_an_equal_distribution_passes_and_a_first_run_compares_nothing():
    report, anomalies = drift_validator.compare({"train": _stats(EVEN)}, {"train": _stats(EVEN)}, _schema())
    assert report["passed"] and report["measurements"][0]["distance"] == 0.0
    assert not anomalies["train"].anomaly_info
    validation_gate.check({}, report)  # does not raise
    first, anomalies = drift_validator.compare({"train": _stats(SHIFTED)}, None, _schema())
    assert first == {"compared": False, "passed": True, "measurements": []} and anomalies == {}
    validation_gate.check({}, first)
    assert "first run: no previous statistics" in drift_validator.summary_line(first)


def _artifact(kind, uri, splits=(), stats=None):
    from tfx.types import artifact_utils, standard_artifacts

    artifact = getattr(standard_artifacts, kind)()
    artifact.uri = str(uri)
    os.makedirs(artifact.uri, exist_ok=True)
    if kind in ("ExampleStatistics", "ExampleAnomalies"):
        artifact.split_names = artifact_utils.encode_split_names(list(splits))
    for split in splits:
        os.makedirs(os.path.join(artifact.uri, f"Split-{split}"))
        with open(os.path.join(artifact.uri, f"Split-{split}", "FeatureStats.pb"), "wb") as f:
            f.write(stats.SerializeToString())
    return artifact


def _run(tmp_path, name, span, current, previous):
    examples = _artifact("Examples", tmp_path / name / "examples")
    examples.set_int_custom_property("span", span)  # as ImportExampleGen records it (StatisticsGen's span property stays 0)
    schema = _artifact("Schema", tmp_path / name / "schema")
    tfdv.write_schema_text(_schema(), os.path.join(schema.uri, "schema.pbtxt"))
    drift = _artifact("ExampleAnomalies", tmp_path / name / "drift")
    baseline = _artifact("ExampleStatistics", tmp_path / name / "baseline")
    drift_validator.DriftValidator.test_call(
        examples=examples, statistics=current, schema=schema, drift=drift, baseline=baseline, previous=previous
    )
    return drift_validator.read_report(drift), baseline


def test_a_drifted_span_keeps_the_old_baseline_so_running_it_again_fails_again(tmp_path):
    span_1 = _artifact("ExampleStatistics", tmp_path / "s1", ["train"], stats=_stats(EVEN))
    span_2 = _artifact("ExampleStatistics", tmp_path / "s2", ["train"], stats=_stats(SHIFTED))
    first, baseline_1 = _run(tmp_path, "run1", 1, span_1, None)
    assert not first["compared"] and first["passed"] and baseline_1.span == 1
    second, baseline_2 = _run(tmp_path, "run2", 2, span_2, baseline_1)
    assert not second["passed"] and second["previous_span"] == 1 and second["current_span"] == 2
    assert baseline_2.span == 1  # drifted: the next run still compares with span 1
    line = drift_validator.summary_line(second)
    assert "FAIL, span 2 vs span 1" in line and "train/genre L-inf 0.35 > 0.1" in line
    again, _ = _run(tmp_path, "run3", 2, span_2, baseline_2)
    assert not again["passed"]
    with open(os.path.join(tmp_path, "run2", "drift", "drift.json")) as f:
        assert json.load(f)["measurements"][0]["feature"] == "genre"


def test_the_run_summary_shows_the_drift_check():
    from app import report, summary

    result = summary.RunSummary(
        drift={
            "compared": True,
            "passed": True,
            "previous_span": 1,
            "current_span": 2,
            "measurements": [
                {"split": "train", "feature": "genre", "measure": "L-infinity distance", "distance": 0.02, "threshold": 0.1, "passed": True}
            ],
        }
    )
    assert "Drift: PASS, span 2 vs span 1: train/genre L-inf 0.02 <= 0.1" in report.format_run(result, {})

"""The run summary's words for a model that was not blessed: which check failed, by how much, what to change."""

import pytest
from tensorflow_model_analysis.proto import validation_result_pb2

from app import report, summary

pytestmark = pytest.mark.unit


def _failed_auc(value: float, floor: float) -> validation_result_pb2.ValidationResult:
    result = validation_result_pb2.ValidationResult(validation_ok=False)
    failure = result.metric_validations_per_slice.add().failures.add()
    failure.metric_key.name, failure.metric_key.output_name = "auc", "liked"
    failure.metric_value.double_value.value = value
    failure.metric_threshold.value_threshold.lower_bound.value = floor
    return result


def test_a_failed_tfma_threshold_is_named_with_its_value_and_floor():
    assert summary.ranking_failures(_failed_auc(0.47, 0.5)) == ["liked/auc 0.4700 misses its floor 0.5"]


def test_an_unblessed_run_says_what_failed_and_how_to_run_a_quick_demo():
    result = summary.RunSummary(blessed=False, ranking_blessed=False, ranking_failures=summary.ranking_failures(_failed_auc(0.47, 0.5)))
    printed = report.format_run(result, {})
    assert "FAIL  ranking (TFMA): liked/auc 0.4700 misses its floor 0.5" in printed
    assert "--min-auc" in printed and "Pushed to: nothing pushed" in printed
    assert "--min-auc" not in report.format_run(summary.RunSummary(blessed=True, ranking_blessed=True, pushed_to="/x"), {})


def test_recommend_after_runs_that_pushed_nothing_says_why(tmp_path):
    from app.recommend import SetupError, load_model
    from towers.contract import RunPaths

    paths = RunPaths(str(tmp_path), "tuxpaint")
    with pytest.raises(SetupError, match="run `mmtower run"):
        load_model(paths)
    (tmp_path / "metadata.sqlite").write_bytes(b"")  # a run happened, and pushed nothing
    with pytest.raises(SetupError, match="no blessed model.*--min-auc"):
        load_model(paths)

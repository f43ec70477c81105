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


def test_the_run_summary_prints_missing_and_nan_metrics_as_n_a_never_nan():
    from components import evaluation as ev
    from towers import metrics

    r10, r50 = metrics.recall_name(10), metrics.recall_name(50)
    nan = float("nan")
    freshness = {ev.COLD: {"count": 3, r10: nan, r50: 0.5}, ev.WARM: {"count": 0}}
    baselines = {
        "best": "most_popular",
        "num_validation": 10,
        "baselines": {
            "most_popular": {
                "params": {},
                "validation": {r10: nan},
                "overall": {r10: 0.1},
                "by_freshness": freshness,
                "among_own_kind": freshness,
            }
        },
    }
    interval, missing = {"mean": 0.2, "ci": [0.1, 0.3]}, {"mean": nan, "ci": [nan, nan]}
    ratio = {"per_event": {"ratio": nan, "ci": [nan, 1.5]}, "per_user": {"ratio": 1.2, "ci": [1.0, 1.4]}}
    retrieval_report = {
        "num_eval_records": 20,
        "baselines": baselines,
        "retrieval": {"by_freshness": freshness, "among_own_kind": freshness},
        "recommend": {"by_freshness": freshness},
        "comparison": {
            r10: {
                "users": 5,
                "per_event": {"retrieval": interval, "recommend": missing, "most_popular": interval},
                "per_user": {"retrieval": interval, "recommend": missing, "most_popular": interval},
                "ratios": {"retrieval": {"most_popular": ratio}, "recommend": {"most_popular": ratio}},
            }
        },
    }
    result = summary.RunSummary(
        model_metrics={r10: nan, r50: 0.4},
        recommend_metrics={r10: 0.3},
        baselines=baselines,
        retrieval_report=retrieval_report,
        ranking_metrics={"like/auc": nan, "like/ndcg@10": 0.5},
        blessed=True,
        pushed_to="/x",
    )
    printed = report.format_run(result, {})
    assert "nan" not in printed.lower(), printed
    assert "n/a" in printed and "0.4000" in printed and "1.20x [1.00-1.40] per user" in printed
    assert "vs most_popular n/a [n/a-1.50] per event" in printed and "like/auc n/a, like/ndcg@10 0.5000" in printed
    assert "two-tower n/a/0.5000" in printed  # cold items: Recall@10 missing, Recall@50 present


def test_attribution_line_names_the_mix_overall_and_for_new_items():
    from app.report import format_attribution

    report = {
        "recommend": {
            "attribution": {
                "modalities": ["id", "metadata", "image"],
                "overall": [0.5, 0.3, 0.2],
                "by_slice": {
                    "item_freshness": {
                        "cold": {"items": 12, "weights": [0.0, 0.4, 0.6]},
                        "warm": {"items": 988, "weights": [0.5, 0.3, 0.2]},
                    }
                },
            }
        }
    }
    line = format_attribution(report)
    assert line.startswith("Why (modality mix of recommend's top-10 items): id 50%, metadata 30%, image 20%")
    assert "cold items (12): image 60%, metadata 40%" in line and "cold items (12): image 60%, metadata 40%, id" not in line
    assert format_attribution({}) == ""


def test_privacy_line_reports_pseudonyms_and_k_anonymity(tmp_path):
    from app.report import format_privacy
    from app.summary import privacy_report
    from mmdata import registry

    registry.build("movielens-100k", str(tmp_path), max_users=30, privacy_key=b"k" * 32)
    found = privacy_report(str(tmp_path))
    assert found["users"] == 943 and found["quasi_identifiers"] == ["gender", "occupation", "zip_code", "age"]
    assert found["smallest_group"] == 1 and 0 < found["users_below_k"] <= 943  # zip prefix x age x occupation: often unique
    line = format_privacy(found)
    assert line.startswith(f"Privacy: user ids pseudonymised (key id {found['pseudonym_key_id']}); k-anonymity over gender")
    assert "of 943 users in groups under 5" in line
    assert format_privacy({}) == "" and privacy_report(str(tmp_path / "none")) == {}


def test_training_cost_line_gives_seconds_per_epoch_after_the_first_and_each_stage():
    cost = {
        "two_towers": {
            "epochs": 3,
            "steps_per_epoch": 76,
            "seconds_per_epoch": [30.0, 20.0, 22.0],
            "mean_seconds_per_epoch": 21.0,
            "ms_per_step": 276.3,
        },
        "ranker": {"epochs": 0, "steps_per_epoch": 0, "seconds_per_epoch": [], "mean_seconds_per_epoch": 0.0, "ms_per_step": 0.0},
        "stage_seconds": {"two_towers": 75.2, "item_graph": 1.25},
    }
    line = report.format_training_cost(cost)
    assert line.startswith("Training cost: two towers 3 epochs of 76 steps, 21.0 s/epoch (276 ms/step; the first epoch 30.0 s")
    assert "ranker not trained" in line and line.endswith("Trainer stages: two towers 75.2 s, item graph 1.2 s")
    assert report.format_training_cost({}) == ""

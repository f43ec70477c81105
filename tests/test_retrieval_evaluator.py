"""RetrievalEvaluator: metric summaries and blessing checks against hand-computed values."""

import numpy as np
import pytest

from components.retrieval_evaluator import executor
from components.retrieval_evaluator.executor import RECOMMEND, RETRIEVAL, Thresholds
from towers import contract, metrics

pytestmark = pytest.mark.unit


def _per_example(hits_at_10, hits_at_100, top_ids):
    return {
        metrics.recall_name(10): np.array(hits_at_10, np.float32),
        metrics.recall_name(50): np.array(hits_at_100, np.float32),
        metrics.recall_name(100): np.array(hits_at_100, np.float32),
        metrics.ndcg_name(10): np.array(hits_at_10, np.float32) * 0.5,
        contract.ITEM_IDS_OUTPUT: np.array(top_ids, dtype=object).astype(bytes),
    }


def test_coverage_counts_distinct_items_over_the_catalog():
    assert executor.coverage(np.array([[b"a", b"b"], [b"b", b""]]), catalog_size=4) == pytest.approx(0.5)


def test_summarize_and_slices_hand_computed():
    per_example = _per_example([1, 0, 0, 1], [1, 1, 0, 1], [[b"a"], [b"b"], [b"a"], [b"c"]])
    overall = executor.summarize(per_example, catalog_size=10)
    assert overall[metrics.recall_name(10)] == pytest.approx(0.5)
    assert overall[metrics.recall_name(100)] == pytest.approx(0.75)
    assert overall[executor.COVERAGE] == pytest.approx(0.3)
    assert overall["count"] == 4
    sliced = executor.by_slice(per_example, {"item_freshness": np.array([b"warm", b"cold", b"warm", b"warm"])}, 10)
    assert sliced["item_freshness"]["cold"][metrics.recall_name(100)] == pytest.approx(1.0)
    assert sliced["item_freshness"]["cold"]["count"] == 1
    assert sliced["item_freshness"]["warm"][metrics.recall_name(10)] == pytest.approx(2 / 3)


def _result(recall_at_10, recall_at_100):
    overall = {metrics.recall_name(10): recall_at_10, metrics.recall_name(100): recall_at_100}
    return {RETRIEVAL: {"overall": overall}, RECOMMEND: {"overall": overall}}


def test_checks_floors_regression_tfma_and_unreadable_records():
    thresholds = Thresholds(min_recall_at_100=0.2, min_recall_at_10=0.05, max_regression=0.02)
    good = executor.checks(_result(0.1, 0.30), _result(0.1, 0.31), thresholds, tfma_blessed=True, problems=[])
    assert all(check["passed"] for check in good)
    regressed = executor.checks(_result(0.1, 0.28), _result(0.1, 0.31), thresholds, tfma_blessed=True, problems=[])
    assert [c["passed"] for c in regressed if "last blessed" in c["check"]] == [False]
    below_floor = executor.checks(_result(0.01, 0.30), None, thresholds, tfma_blessed=None, problems=[])
    assert [c["passed"] for c in below_floor] == [True, False, True]  # R@100 floor, R@10 floor, records
    tfma_refused = executor.checks(_result(0.1, 0.30), None, thresholds, tfma_blessed=False, problems=[])
    assert not all(c["passed"] for c in tfma_refused)
    unreadable = executor.checks(_result(0.1, 0.30), None, thresholds, tfma_blessed=True, problems=["eval record 3: ..."])
    assert unreadable[-1] == {"check": "every eval record readable", "passed": False, "detail": "1 unreadable", "gate": True}


def _comparison(model_hits, baseline_hits, users):
    per_event = {
        name: {metric: np.asarray(hits, float) for metric in metrics.METRIC_NAMES}
        for name, hits in (
            (RETRIEVAL, model_hits),
            (RECOMMEND, model_hits),
            ("cooccurrence_knn", baseline_hits),
            ("most_popular", np.zeros(len(users))),
        )
    }
    return executor.compare(per_event, np.asarray(users), best="cooccurrence_knn")


def test_beat_the_best_baseline_needs_both_intervals_above_one_and_gates_only_when_asked():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(300), 4).astype(bytes)
    strong, weak = (rng.random(1200) < 0.4).astype(float), (rng.random(1200) < 0.1).astype(float)
    clearly = executor.beats_baseline_check(_comparison(strong, weak, users), "cooccurrence_knn", "cooccurrence_knn (last_n=5)", gate=False)
    assert (
        clearly["passed"] and not clearly["gate"] and "per user" in clearly["detail"] and "cooccurrence_knn (last_n=5)" in clearly["check"]
    )
    tied = executor.beats_baseline_check(_comparison(strong, strong, users), "cooccurrence_knn", "cooccurrence_knn", gate=True)
    assert not tied["passed"]  # a ratio of 1.0 exactly: the interval's lower end is not above 1
    ratios = _comparison(strong, weak, users)[metrics.recall_name(10)]["ratios"][RECOMMEND]
    assert set(ratios) == {"cooccurrence_knn", "most_popular"}
    # a failed warning does not block the blessing; a failed gate does
    assert executor.blessed([{"passed": True, "gate": True}, {**tied, "gate": False}])
    assert not executor.blessed([{"passed": True, "gate": True}, tied])


def test_thresholds_round_trip():
    thresholds = Thresholds(min_recall_at_100=0.1, min_recall_at_10=0.01, max_regression=0.03, require_beat_baseline=True)
    assert Thresholds.from_json(thresholds.to_json()) == thresholds

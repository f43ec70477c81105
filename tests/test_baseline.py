"""Most-popular baseline: ranking, exclusion of seen items, scoring."""
import pytest

from components import baseline

pytestmark = pytest.mark.unit

TRAIN = [("u1", "a", ()), ("u2", "a", ()), ("u3", "a", ()), ("u1", "b", ()), ("u2", "b", ()), ("u3", "c", ())]


def test_ranks_by_count_and_skips_seen_items():
    top = baseline.most_popular(TRAIN, [("u1", ()), ("u3", ()), ("new", ()), ("new", ("a",))], k=3)
    assert list(top[0]) == ["c", None, None]  # u1 saw a and b
    assert list(top[1]) == ["b", None, None]  # u3 saw a and c
    assert list(top[2]) == ["a", "b", "c"]  # unknown user: global order (a:3, b:2, c:1)
    assert list(top[3]) == ["b", "c", None]  # the query's history is excluded too


def test_evaluate_hand_computed():
    # u1's held-out item c is ranked first (hit, ndcg 1); "new" holding out c ranks it third.
    result = baseline.evaluate(TRAIN, [("u1", "c", ()), ("new", "c", ())], k=100)
    assert result["recall_at_10"] == pytest.approx(1.0)
    assert result["ndcg_at_10"] == pytest.approx((1.0 + 0.5) / 2)  # 1/log2(3+1) = 0.5

"""Retrieval metrics against values computed by hand."""

import math

import numpy as np
import pytest
import tensorflow as tf

from towers import metrics

pytestmark = pytest.mark.unit


def _ranked(true_rank: int | None, length: int = 100) -> list[str]:
    """A list of `length` ids with the true id 't' at 0-based `true_rank` (or absent)."""
    ids = [f"x{i}" for i in range(length)]
    if true_rank is not None:
        ids[true_rank] = "t"
    return ids


def test_hit_and_ndcg_by_rank():
    ranks = [0, 3, 9, 10, 49, 50, 99, None]
    out = metrics.retrieval_metrics(tf.constant([_ranked(r) for r in ranks]), tf.constant(["t"] * len(ranks)))
    out = {k: v.numpy() for k, v in out.items()}
    np.testing.assert_array_equal(out["recall_at_10"], [1, 1, 1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(out["recall_at_50"], [1, 1, 1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(out["recall_at_100"], [1, 1, 1, 1, 1, 1, 1, 0])
    # NDCG@10 with one relevant item: 1 / log2(rank + 2).
    expected = [1.0, 1 / math.log2(5), 1 / math.log2(11), 0, 0, 0, 0, 0]
    np.testing.assert_allclose(out["ndcg_at_10"], expected, rtol=1e-6)


def test_metric_names_cover_every_output():
    out = metrics.retrieval_metrics(tf.constant([_ranked(0)]), tf.constant(["t"]))
    assert set(out) == set(metrics.METRIC_NAMES) == {"recall_at_10", "recall_at_50", "recall_at_100", "ndcg_at_10"}

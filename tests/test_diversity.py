"""Diversity control (towers.diversity): MMR re-ordering and per-category caps of recommend's ranked candidates."""

import numpy as np
import pytest
import tensorflow as tf

from towers.catalog import UNKNOWN_CATEGORY
from towers.diversity import rerank

pytestmark = pytest.mark.unit

# Candidates 0-2 are near copies of each other (category 0), 3 and 4 differ (categories 1 and 2).
EMBEDDINGS = [[1.0, 0.0, 0.0], [0.99, 0.1, 0.0], [0.98, 0.0, 0.1], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
LOGITS = [3.0, 2.9, 2.8, 1.0, 0.5]
CATEGORIES = [0, 0, 0, 1, 2]


def _order(diversity, cap, logits=LOGITS, categories=CATEGORIES, k=4):
    order = rerank(
        tf.constant([logits], tf.float32),
        tf.constant([EMBEDDINGS], tf.float32),
        tf.constant([categories], tf.int64),
        k,
        tf.constant([diversity], tf.float32),
        tf.constant([cap], tf.int64),
    )
    return order.numpy()[0].tolist()


def test_off_keeps_the_relevance_order():
    assert _order(0.0, 0) == [0, 1, 2, 3]


def test_mmr_moves_a_different_item_above_near_copies():
    diverse = _order(0.5, 0)
    assert diverse[0] == 0 and diverse[1] in (3, 4)  # the best item first, then something unlike it
    assert diverse.index(3) < diverse.index(1)


def test_weight_one_is_pure_novelty_after_the_first_item():
    assert _order(1.0, 0)[:3] == [0, 3, 4]


def test_a_category_cap_holds_while_other_items_remain():
    assert _order(0.0, 1) == [0, 3, 4, 1]  # one per category, then capped items only when nothing else is left
    assert _order(0.0, 2) == [0, 1, 3, 4]


def test_unknown_categories_count_towards_no_cap_and_excluded_items_come_last():
    unknown = [UNKNOWN_CATEGORY] * 5
    assert _order(0.0, 1, categories=unknown) == [0, 1, 2, 3]
    assert _order(0.3, 1, logits=[-np.inf, 2.9, 2.8, 1.0, 0.5], k=5)[-1] == 0


def test_rows_of_one_batch_are_reordered_independently():
    order = rerank(
        tf.constant([LOGITS, LOGITS], tf.float32),
        tf.constant([EMBEDDINGS, EMBEDDINGS], tf.float32),
        tf.constant([CATEGORIES, CATEGORIES], tf.int64),
        3,
        tf.constant([0.0, 1.0]),
        tf.constant([0, 0], tf.int64),
    ).numpy()
    assert order[0].tolist() == [0, 1, 2] and order[1].tolist() == [0, 3, 4]

"""Seen-item exclusion (towers.exclusions): (row, catalog position) pairs, masks and index-candidate tests."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from towers.exclusions import EXCLUDED_SCORE, SeenItems, for_rows, is_excluded, item_pairs, mask_scores

pytestmark = pytest.mark.unit

MIN = np.finfo(np.float32).min


def test_seen_items_give_each_query_row_its_users_training_items():
    seen = SeenItems([[0, 2], [1], [], []])  # users 0, 1, 2 and the OOV row
    assert seen.longest == 2
    pairs = seen.pairs(tf.constant([1, 0, 3, 0], tf.int64)).numpy()
    assert pairs.tolist() == [[0, 1], [1, 0], [1, 2], [3, 0], [3, 2]]


def test_seen_items_of_a_catalog_nobody_interacted_with():
    seen = SeenItems([[], []])
    assert seen.longest == 0
    assert seen.pairs(tf.constant([0, 1], tf.int64)).numpy().shape == (0, 2)


def test_item_pairs_leave_out_items_not_in_the_catalog():
    history = tf.sparse.from_dense(tf.constant([["a", "x", ""], ["", "", "b"]]))  # '' is padding
    positions = tf.constant([4, -1, 7], tf.int64)  # a, x (unknown), b
    assert item_pairs(history, positions).numpy().tolist() == [[0, 4], [1, 7]]


def test_for_rows_keeps_the_pairs_of_the_chosen_rows():
    pairs = tf.constant([[0, 4], [1, 7], [2, 1], [0, 5]], tf.int64)
    assert for_rows(pairs, tf.constant([True, False, True])).numpy().tolist() == [[0, 4], [2, 1], [0, 5]]


def test_mask_scores_sets_each_pair_to_the_lowest_score_even_if_repeated():
    scores = tf.constant([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    pairs = tf.constant([[0, 2], [1, 0], [0, 2]], tf.int64)
    np.testing.assert_array_equal(mask_scores(scores, pairs).numpy(), np.array([[0.1, 0.2, MIN], [MIN, 0.5, 0.6]], np.float32))
    assert EXCLUDED_SCORE == MIN


def test_is_excluded_matches_each_row_against_its_own_pairs():
    positions = tf.constant([[5, 1, 7], [1, 2, 3], [9, 9, 0]], tf.int64)
    exclude = tf.constant([[0, 7], [2, 0], [0, 5], [1, 9], [2, 9]], tf.int64)  # unsorted (row, position) pairs
    got = is_excluded(positions, exclude, tf.constant(10, tf.int64)).numpy()
    assert got.tolist() == [[True, False, True], [False, False, False], [True, True, True]]
    nothing = is_excluded(positions, tf.zeros([0, 2], tf.int64), tf.constant(10, tf.int64)).numpy()
    assert not nothing.any()

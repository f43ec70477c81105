"""Why each recommended item (towers.explanations): the nearest history items and the modality mix."""

import numpy as np
import pytest
import tensorflow as tf

from tests.tiny_serving import catalog_tables
from towers.catalog import Catalog
from towers.contract import BECAUSE_ITEMS_OUTPUT, BECAUSE_SCORES_OUTPUT, MODALITIES_OUTPUT, MODALITY_WEIGHTS_OUTPUT
from towers.explanations import EXPLAIN_ITEMS, explain

pytestmark = pytest.mark.unit

# i0, i1 point one way ("one category"), i2, i3 another; i4 is new (no id representation).
EMBEDDINGS = [[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.7, 0.7]]
WEIGHTS = [[0.6, 0.4], [0.5, 0.5], [0.2, 0.8], [0.3, 0.7], [0.0, 1.0]]


def _explain(positions, history, weights=WEIGHTS):
    catalog = Catalog(catalog_tables(EMBEDDINGS, new=(4,), modality_weights=None if weights is None else np.array(weights)))
    history = tf.constant(history, tf.string) if any(history) else tf.zeros([len(history), 0], tf.string)
    out = explain(catalog, tf.constant(["id", "text"]), tf.constant(positions, tf.int64), history)
    return {name: value.numpy().tolist() for name, value in out.items()}


def test_the_history_items_nearest_each_recommended_item_come_first():
    out = _explain([[1, 3, 4]], [["i0", "i2", "zz", ""]])  # "zz": not in the catalog; "": padding
    assert out[BECAUSE_ITEMS_OUTPUT] == [[[b"i0", b"i2", b""], [b"i2", b"i0", b""], [b"i0", b"i2", b""]]]
    scores = out[BECAUSE_SCORES_OUTPUT][0]
    assert scores[0] == pytest.approx([0.9, 0.1, 0.0]) and scores[1] == pytest.approx([0.9, 0.1, 0.0])
    assert len(scores[2]) == EXPLAIN_ITEMS


def test_a_history_of_one_category_explains_items_of_that_category_by_it():
    out = _explain([[1], [3]], [["i0", "i0", ""], ["i2", "i3", "i2"]])
    assert out[BECAUSE_ITEMS_OUTPUT][0][0][:2] == [b"i0", b"i0"]
    assert set(out[BECAUSE_ITEMS_OUTPUT][1][0]) <= {b"i2", b"i3"}


def test_modality_weights_are_the_items_and_a_new_item_has_no_id_share():
    out = _explain([[4, 0]], [[]])
    assert out[MODALITY_WEIGHTS_OUTPUT] == [[WEIGHTS[4], pytest.approx(WEIGHTS[0])]]
    assert out[MODALITY_WEIGHTS_OUTPUT][0][0][0] == 0.0  # new item: id weight exactly 0
    assert out[MODALITIES_OUTPUT] == [[b"id", b"text"]]
    assert out[BECAUSE_ITEMS_OUTPUT] == [[[b""] * EXPLAIN_ITEMS] * 2]  # an empty history explains nothing


def test_a_catalog_without_weights_explains_by_history_only():
    out = _explain([[0]], [["i1"]], weights=None)
    assert set(out) == {BECAUSE_ITEMS_OUTPUT, BECAUSE_SCORES_OUTPUT}
    catalog = Catalog(catalog_tables(EMBEDDINGS, modality_weights=np.array(WEIGHTS)))
    catalog.append(
        {
            "item_ids": tf.constant(["i5"]),
            "embeddings": tf.constant([[0.5, 0.5]]),
            MODALITY_WEIGHTS_OUTPUT: tf.constant([[0.0, 1.0]]),
            "item_popularity": tf.constant(["none"]),
        }
    )
    assert catalog.modality_weights.numpy()[-1].tolist() == [0.0, 1.0]

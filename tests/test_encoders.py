"""Pretrained encoders exported as TF SavedModels match their source framework.

The reference fixture was computed once with PyTorch + transformers
(tests/fixtures/encoders/make_minilm_reference.py); these tests need neither.
"""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from towers.encoders import text_minilm

pytestmark = pytest.mark.unit

REFERENCE = os.path.join(os.path.dirname(__file__), "fixtures", "encoders", "minilm_reference.json")
TOLERANCE = 1e-5  # max abs difference per embedding component (float32, different kernels)


@pytest.fixture(scope="module")
def reference():
    with open(REFERENCE) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("minilm") / "text")
    tf.saved_model.save(text_minilm.build(), path)
    return path


def test_tokens_match_hf_tokenizer(reference):
    encoder = text_minilm.build()
    for sentence, expected in zip(reference["sentences"], reference["token_ids"]):
        ids = encoder.token_ids(tf.constant([sentence])).numpy()[0]
        assert ids[ids != text_minilm.PAD_ID].tolist() == expected, sentence[:40]


def test_hub_keras_layer_matches_pytorch(reference, exported):
    import tensorflow_hub as hub

    layer = hub.KerasLayer(exported)  # the same call takes a TF-Hub/Kaggle handle in production
    got = layer(tf.constant(reference["sentences"])).numpy()
    want = np.array(reference["embeddings"], np.float32)
    assert got.shape == (len(reference["sentences"]), text_minilm.DIM)
    assert np.abs(got - want).max() < TOLERANCE
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)

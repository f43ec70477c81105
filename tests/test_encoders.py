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


IMAGES = os.path.join(os.path.dirname(__file__), "fixtures", "encoders", "efficientnet_images")
IMAGE_REFERENCE = os.path.join(os.path.dirname(__file__), "fixtures", "encoders", "efficientnet_reference.json")
IMAGE_TOLERANCE = 5e-5  # max abs difference; features range to about 5


def test_efficientnet_lite0_matches_pytorch(tmp_path):
    import tensorflow_hub as hub

    from towers.encoders import image_efficientnet

    with open(IMAGE_REFERENCE) as f:
        reference = json.load(f)["features"]
    path = str(tmp_path / "image")
    tf.saved_model.save(image_efficientnet.build(), path)
    layer = hub.KerasLayer(path)
    names = sorted(reference)
    encoded = [open(os.path.join(IMAGES, f"{name}.png"), "rb").read() for name in names]
    got = layer(tf.constant(encoded)).numpy()
    want = np.array([reference[name] for name in names], np.float32)
    assert got.shape == (len(names), image_efficientnet.DIM)
    assert np.abs(got - want).max() < IMAGE_TOLERANCE


def test_image_decoding_composites_transparency_on_white():
    from towers.encoders import image_efficientnet

    transparent = tf.io.encode_png(tf.zeros([10, 20, 4], tf.uint8))  # fully transparent, 2:1 aspect
    pixels = image_efficientnet.decode_image(transparent).numpy()
    assert pixels.shape == (image_efficientnet.IMAGE_SIZE, image_efficientnet.IMAGE_SIZE, 3)
    np.testing.assert_allclose(pixels, 255.0, atol=1e-3)
    red = tf.io.encode_jpeg(tf.fill([16, 16, 3], tf.constant(200, tf.uint8)))
    np.testing.assert_allclose(image_efficientnet.decode_image(red).numpy(), 200.0, atol=3.0)

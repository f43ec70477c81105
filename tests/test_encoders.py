"""Pretrained encoders exported as TF SavedModels match their source framework.

The reference fixture was computed once with PyTorch + transformers
(tests/fixtures/encoders/make_minilm_reference.py); these tests need neither.
"""

import json
import os
import struct

import numpy as np
import pytest
import tensorflow as tf

from towers.encoders import safetensors_io, text_minilm

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
    tf.saved_model.save(text_minilm.build_reusable(), path)  # what `mmtower encoders export` writes
    return path


def _write_safetensors(path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """A .safetensors file written by hand: 8-byte little-endian header length, JSON header, raw buffers."""
    header, buffers, offset = {"__metadata__": metadata}, [], 0
    codes = {np.float32: "F32", np.float16: "F16", np.int64: "I64", np.int32: "I32"}
    for name, array in tensors.items():
        raw = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": codes[array.dtype.type], "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        buffers.append(raw)
        offset += len(raw)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)  # the format pads the header to 8 bytes
    data = struct.pack("<Q", len(encoded)) + encoded + b"".join(buffers)
    path.write_bytes(data)
    return data


def test_safetensors_load_returns_every_tensor_with_its_dtype_and_shape(tmp_path):
    tensors = {
        "encoder.weight": np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
        "half": np.array([[0.5, -2.0]], np.float16),
        "position_ids": np.arange(5, dtype=np.int64)[None],
        "counts": np.array([3, -1, 7], np.int32),
        "scalar": np.array(2.5, np.float32),
    }
    path = tmp_path / "model.safetensors"
    _write_safetensors(path, tensors, {"format": "pt"})
    loaded = safetensors_io.load(str(path))
    assert sorted(loaded) == sorted(tensors)  # __metadata__ is not a tensor
    for name, want in tensors.items():
        assert loaded[name].dtype == want.dtype and loaded[name].shape == want.shape, name
        np.testing.assert_array_equal(loaded[name], want)
    loaded["encoder.weight"][0, 0] = 1.0  # writable arrays, as tf.Variable initial values
    assert loaded["encoder.weight"][0, 0] == 1.0


def test_safetensors_load_names_a_missing_or_corrupt_file(tmp_path):
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        safetensors_io.load(str(missing))
    data = _write_safetensors(tmp_path / "good.safetensors", {"w": np.ones([4, 4], np.float32)}, {})
    for name, content in (
        ("truncated.safetensors", data[:-8]),
        ("garbage.safetensors", b"this is not a safetensors file"),
        ("empty.safetensors", b""),
        ("bad_json.safetensors", struct.pack("<Q", 8) + b"{not js}"),
    ):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=f"{name} is not a readable .safetensors file"):
            safetensors_io.load(str(tmp_path / name))


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


def test_text_encoder_is_frozen_by_default_and_fine_tunes_on_request(exported):
    from towers.encoders import registry

    frozen, tuned = registry.load(exported), registry.load(exported, trainable=True)
    assert frozen.trainable_weights == [] and len(tuned.trainable_weights) > 50
    text = tf.constant(["A blackbird. animals, birds", "A frog."])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tuned(text)[:, 0])
    gradients = tape.gradient(loss, tuned.trainable_weights)
    assert all(g is not None for g in gradients)
    np.testing.assert_allclose(tuned(text).numpy(), frozen(text).numpy(), atol=1e-6)  # same weights before training


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


def test_image_float16_variant_exports_loads_and_matches_pytorch(tmp_path):
    """`image-float16` (the image network as TFLite, float16 weights): exported by registry.export, loaded by
    registry.load from its folder, called like the SavedModel; close to the PyTorch reference (float16 weights)."""
    from towers.encoders import registry

    with open(IMAGE_REFERENCE) as f:
        reference = json.load(f)["features"]
    handle = registry.export(registry.IMAGE_FLOAT16, str(tmp_path))
    assert handle == registry.resolve(registry.IMAGE_FLOAT16, str(tmp_path))
    assert sorted(os.listdir(handle)) == ["encoder.json", "encoder.tflite"]
    assert os.path.getsize(os.path.join(handle, "encoder.tflite")) < 8 * 2**20  # float32 weights: 13 MiB
    encoder = registry.load(handle)
    names = sorted(reference)
    encoded = [open(os.path.join(IMAGES, f"{name}.png"), "rb").read() for name in names]
    got = encoder(tf.constant(encoded)).numpy()
    want = np.array([reference[name] for name in names], np.float32)
    assert got.shape == (len(names), registry.ENCODERS["image"].dim)
    cosine = np.sum(got * want, axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cosine.min() > 0.999 and np.abs(got - want).max() > IMAGE_TOLERANCE  # close, and not the float32 network
    assert encoder(tf.constant(encoded[:1])).numpy() == pytest.approx(got[:1], abs=1e-5)  # another batch shape
    with pytest.raises(ValueError, match="cannot be fine-tuned"):
        registry.load(handle, trainable=True)


def test_image_decoding_composites_transparency_on_white():
    from towers.encoders import image_efficientnet

    transparent = tf.io.encode_png(tf.zeros([10, 20, 4], tf.uint8))  # fully transparent, 2:1 aspect
    pixels = image_efficientnet.decode_image(transparent).numpy()
    assert pixels.shape == (image_efficientnet.IMAGE_SIZE, image_efficientnet.IMAGE_SIZE, 3)
    np.testing.assert_allclose(pixels, 255.0, atol=1e-3)
    red = tf.io.encode_jpeg(tf.fill([16, 16, 3], tf.constant(200, tf.uint8)))
    np.testing.assert_allclose(image_efficientnet.decode_image(red).numpy(), 200.0, atol=3.0)


MUSICNN_REFERENCE = os.path.join(os.path.dirname(__file__), "fixtures", "encoders", "musicnn_reference.json")
LOGMEL_REFERENCE = os.path.join(os.path.dirname(__file__), "fixtures", "encoders", "logmel_reference.json")


@pytest.fixture(scope="module")
def musicnn_encoder():
    from towers.encoders import audio_musicnn

    return audio_musicnn.build()


def test_musicnn_tf2_export_matches_the_tf1_graph(musicnn_encoder, tmp_path):
    """The original TF1 graph + Saver.restore (make_musicnn_reference.py) vs the TF2 SavedModel, same input patches."""
    with open(MUSICNN_REFERENCE) as f:
        reference = json.load(f)
    patches = (np.random.RandomState(reference["seed"]).rand(*reference["shape"]) * reference["scale"]).astype(np.float32)
    path = str(tmp_path / "audio")
    tf.saved_model.save(musicnn_encoder, path)
    loaded = tf.saved_model.load(path)  # keep a reference: its variables live as long as it does
    out = loaded.embed_patches(tf.constant(patches))
    assert np.abs(out["penultimate"].numpy() - np.array(reference["penultimate"])).max() < 1e-5
    assert np.abs(out["taggram"].numpy() - np.array(reference["taggram"])).max() < 1e-6


def test_log_mel_front_end_matches_librosa():
    from towers.encoders import audio_musicnn

    with open(LOGMEL_REFERENCE) as f:
        reference = json.load(f)
    sr, seconds = reference["sr"], reference["seconds"]
    t = np.arange(int(sr * seconds)) / sr
    chirp = 0.4 * np.sin(2 * np.pi * (220 * t + (3520 - 220) / (2 * seconds) * t**2))
    signal = (chirp + 0.05 * np.random.RandomState(reference["seed"]).randn(len(t))).astype(np.float32)
    got = audio_musicnn.log_mel(tf.constant(signal), tf.constant(audio_musicnn.mel_filterbank())).numpy()
    assert got.shape == (1 + len(signal) // audio_musicnn.HOP, audio_musicnn.N_MELS)
    assert np.abs(got - np.array(reference["log_mel"])).max() < 1e-4


def test_musicnn_embeds_waveforms_of_any_length(musicnn_encoder):
    short = np.zeros([1, 8000], np.float32)  # 0.5 s: repeated to fill one 3 s patch
    t = np.arange(16000 * 7) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]  # 7 s: two patches
    for waveform in (short, tone):
        features = musicnn_encoder(tf.constant(waveform)).numpy()
        assert features.shape == (1, 200) and np.isfinite(features).all()

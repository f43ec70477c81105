"""ContentEmbedder: the Beam stage (assert_that) and the executor through Do() on a tiny catalog."""

import json
import os

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from tfx.types import artifact_utils, standard_artifacts

from components.content_embedder import executor, spec
from mmdata.records import to_example
from towers import contract
from towers import features as F
from towers.encoders import registry

pytestmark = pytest.mark.unit

ITEMS = [
    {F.ITEM_ID: "1", F.TITLE: "Toy Story", F.YEAR: 1995, F.GENRES: ["Animation"], F.ITEM_TEXT: "Toy Story (1995). Animation"},
    {F.ITEM_ID: "2", F.TITLE: "Heat", F.YEAR: 1995, F.GENRES: ["Crime"], F.ITEM_TEXT: "   "},
    {F.ITEM_ID: "3", F.TITLE: "Fargo", F.YEAR: 1996, F.GENRES: ["Crime"], F.ITEM_TEXT: "Fargo (1996). Crime, Drama"},
]


def _handle(name: str, tmp_path_factory) -> str:
    handle = registry.local_handle(name)
    if os.path.exists(os.path.join(handle, "saved_model.pb")):
        return handle
    return registry.export(name, str(tmp_path_factory.mktemp("encoders")))


@pytest.fixture(scope="module")
def text_handle(tmp_path_factory):
    return _handle("text", tmp_path_factory)


@pytest.fixture(scope="module")
def image_handle(tmp_path_factory):
    return _handle("image", tmp_path_factory)


def _records() -> list[bytes]:
    return [to_example(item).SerializeToString() for item in ITEMS]


def _records_with(feature: str, contents: dict) -> list[bytes]:
    """One catalog record per item id with some text and, unless None, `feature` = the content."""
    records = []
    for item_id, data in contents.items():
        row = {F.ITEM_ID: item_id, F.ITEM_TEXT: f"item {item_id}"}
        if data is not None:
            row[feature] = data
        records.append(to_example(row).SerializeToString())
    return records


def _by_item(serialized) -> dict:
    """Embedding records -> item id -> their tf.train.Feature map."""
    features = (tf.train.Example.FromString(record).features.feature for record in serialized)
    return {feature[F.ITEM_ID].bytes_list.value[0].decode(): feature for feature in features}


def _direct(handle: str, texts: list[str]) -> np.ndarray:
    return registry.load(handle)(tf.constant(texts)).numpy()


def test_beam_stage_embeds_each_item_once_and_quarantines_empty_text(text_handle):
    expected = dict(zip(["1", "3"], _direct(text_handle, [ITEMS[0][F.ITEM_TEXT], ITEMS[2][F.ITEM_TEXT]])))

    def check_embeddings(serialized):
        got = {item: np.array(feature[F.TEXT_EMBEDDING].float_list.value) for item, feature in _by_item(serialized).items()}
        assert sorted(got) == ["1", "3"]
        for item_id, embedding in got.items():
            np.testing.assert_allclose(embedding, expected[item_id], atol=1e-6)

    with TestPipeline() as p:
        embedded, quarantined = executor.embed_items(p | beam.Create(_records()), {"text": text_handle})
        assert_that(embedded, check_embeddings, label="embeddings")
        assert_that(quarantined, equal_to([{"item_id": "2", "modality": "text", "reason": "empty text"}]), label="quarantine")


def test_executor_do_on_a_tiny_catalog(tmp_path, text_handle):
    catalog = standard_artifacts.Examples()
    catalog.uri = str(tmp_path / "catalog")
    catalog.split_names = artifact_utils.encode_split_names(["catalog"])
    os.makedirs(catalog.uri + "/Split-catalog")
    with tf.io.TFRecordWriter(catalog.uri + "/Split-catalog/data.gz", options="GZIP") as writer:
        for record in _records():
            writer.write(record)
    output = standard_artifacts.Examples()
    output.uri = str(tmp_path / "out")
    executor.Executor().Do(
        {spec.CATALOG_KEY: [catalog]},
        {spec.ITEM_EMBEDDINGS_KEY: [output]},
        {spec.ENCODER_HANDLES_KEY: json.dumps({"text": text_handle})},
    )
    files = tf.io.gfile.glob(os.path.join(output.uri, "Split-items", "*"))
    ids = [
        tf.train.Example.FromString(r).features.feature[F.ITEM_ID].bytes_list.value[0]
        for r in tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator()
    ]
    assert sorted(ids) == [b"1", b"3"]
    assert output.get_int_custom_property("num_quarantined") == 1
    assert "empty text" in open(os.path.join(output.uri, contract.QUARANTINE_FILE)).read()


PNG = tf.io.encode_png(tf.fill([40, 30, 3], tf.constant(90, tf.uint8))).numpy()
IMAGE_ITEMS = {
    "ok": PNG,
    "truncated": PNG[: len(PNG) // 2],
    "not-an-image": b"this is text, not a picture",
    "empty-image": b"",
    "no-image": None,
}


def test_broken_images_are_quarantined_and_items_keep_their_text(text_handle, image_handle):
    records = _records_with(F.IMAGE, IMAGE_ITEMS)
    expected_image = registry.load(image_handle)(tf.constant([PNG])).numpy()[0]

    def check(serialized):
        got = _by_item(serialized)
        assert sorted(got) == sorted(IMAGE_ITEMS)  # every item kept
        assert all(F.TEXT_EMBEDDING in f for f in got.values())
        assert [k for k, f in got.items() if F.IMAGE_EMBEDDING in f] == ["ok"]
        np.testing.assert_allclose(got["ok"][F.IMAGE_EMBEDDING].float_list.value, expected_image, atol=1e-4)

    def check_quarantine(rows):
        reasons = {row["item_id"]: row["reason"] for row in rows}
        assert sorted(reasons) == ["empty-image", "not-an-image", "truncated"], rows  # no image at all is not an error
        assert reasons["empty-image"] == "no image"
        assert reasons["truncated"].startswith("undecodable image")
        assert all(row["modality"] == "image" for row in rows)

    with TestPipeline() as p:
        embedded, quarantined = executor.embed_items(p | beam.Create(records), {"text": text_handle, "image": image_handle})
        assert_that(embedded, check, label="embeddings")
        assert_that(quarantined, check_quarantine, label="quarantine")


@pytest.fixture(scope="module")
def audio_handle(tmp_path_factory):
    return _handle("audio", tmp_path_factory)


def _wav(rate: int, seconds: float) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return tf.audio.encode_wav((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[:, None], rate).numpy()


def test_decode_audio_resamples_to_16k_mono():
    waveform = executor.decode_audio(_wav(22050, 1.0))
    assert waveform.dtype == np.float32 and abs(len(waveform) - 16000) <= 1
    assert 0.25 < np.abs(waveform).max() < 0.35  # amplitude kept through int16 and resampling
    for data, reason in [(b"", "no audio"), (b"GIF89a...", "unsupported audio format"), (_wav(16000, 1.0)[:30], "undecodable audio")]:
        with pytest.raises(executor.AudioError, match=reason):
            executor.decode_audio(data)


def test_sounds_are_embedded_and_broken_ones_quarantined(text_handle, audio_handle):
    sounds = {"wav-22k": _wav(22050, 2.0), "garbage": b"RIFF but not really a wave file", "empty-bytes": b"", "silent-item": None}
    records = _records_with(F.AUDIO, sounds)

    def check(serialized):
        features = _by_item(serialized)
        assert sorted(features) == sorted(sounds)
        assert [k for k, f in features.items() if F.AUDIO_EMBEDDING in f] == ["wav-22k"]
        assert len(features["wav-22k"][F.AUDIO_EMBEDDING].float_list.value) == 200

    def check_quarantine(rows):
        assert sorted(row["item_id"] for row in rows) == ["empty-bytes", "garbage"], rows  # an item without sound is fine
        assert all(row["modality"] == "audio" for row in rows)

    with TestPipeline() as p:
        embedded, quarantined = executor.embed_items(p | beam.Create(records), {"text": text_handle, "audio": audio_handle})
        assert_that(embedded, check, label="embeddings")
        assert_that(quarantined, check_quarantine, label="quarantine")


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels in its header (and holds none): what a decompression bomb shows first."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def _wav_claiming(rate: int) -> bytes:
    import struct

    data = bytearray(_wav(16000, 0.1))
    data[24:28] = struct.pack("<I", rate)  # sample rate
    data[28:32] = struct.pack("<I", min(rate * 4, 2**32 - 1))  # byte rate
    return bytes(data)


def test_hostile_media_is_refused_from_its_header_and_named():
    assert "over the 40,000,000-pixel limit" in executor.check_image(_png_header(14000, 14000))
    assert "over the 40,000,000-pixel limit" in executor.check_image(_png_header(100_000, 100_000))  # past Pillow's own bomb limit
    assert executor.check_image(_png_header(64, 64)).startswith("undecodable image")  # a sane header, no pixel data
    with pytest.raises(executor.AudioError, match="sample rate 2,147,483,647 Hz is outside"):
        executor.decode_audio(_wav_claiming(2_147_483_647))
    from towers.encoders import media

    with pytest.raises(executor.AudioError, match="over the .*-byte limit"):
        executor.decode_audio(b"RIFF" + bytes(media.MAX_MEDIA_BYTES))


def _latin1_text_record(item_id: str) -> bytes:
    example = to_example({F.ITEM_ID: item_id})
    example.features.feature[F.ITEM_TEXT].bytes_list.value.append("café crème".encode("latin-1"))  # not UTF-8
    return example.SerializeToString()


def test_one_hostile_item_costs_its_own_media_only(text_handle, image_handle, audio_handle):
    records = [
        to_example({F.ITEM_ID: "bomb", F.ITEM_TEXT: "big", F.IMAGE: _png_header(14000, 14000)}).SerializeToString(),
        to_example({F.ITEM_ID: "fast-wav", F.ITEM_TEXT: "loud", F.AUDIO: _wav_claiming(2_147_483_647)}).SerializeToString(),
        _latin1_text_record("latin1"),
        to_example({F.ITEM_ID: "fine", F.ITEM_TEXT: "a sound", F.AUDIO: _wav(22050, 1.0)}).SerializeToString(),
    ]

    def check(serialized):
        got = _by_item(serialized)
        assert sorted(got) == ["bomb", "fast-wav", "fine", "latin1"]  # every item kept, with its text
        assert all(F.TEXT_EMBEDDING in f for f in got.values())
        assert [k for k, f in got.items() if F.AUDIO_EMBEDDING in f] == ["fine"]

    def check_quarantine(rows):
        reasons = {(row["item_id"], row["modality"]): row["reason"] for row in rows}
        assert sorted(reasons) == [("bomb", "image"), ("fast-wav", "audio"), ("latin1", "text")], rows
        assert "not UTF-8" in reasons[("latin1", "text")]

    with TestPipeline() as p:
        embedded, quarantined = executor.embed_items(
            p | beam.Create(records), {"text": text_handle, "image": image_handle, "audio": audio_handle}
        )
        assert_that(embedded, check, label="embeddings")
        assert_that(quarantined, check_quarantine, label="quarantine")

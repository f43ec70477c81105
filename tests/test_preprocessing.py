"""Golden test of preprocessing_fn: AnalyzeAndTransform on a fixture, transformed schema vs the checked-in pbtxt."""

import functools
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx_bsl.public import tfxio

from components import preprocessing
from mmdata import movielens
from mmdata.records import add_history, write_records
from mmdata.registry import MOVIELENS_FEATURES
from towers import features as F
from towers.contract import FEATURE_ROLES_KEY

pytestmark = pytest.mark.unit

ROOT = os.path.dirname(os.path.dirname(__file__))
RAW_SCHEMA = os.path.join(ROOT, "schemas", "movielens", "schema.pbtxt")
GOLDEN = os.path.join(ROOT, "schemas", "movielens", "transformed_schema.pbtxt")
FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "ml-mini")


@pytest.fixture(scope="module")
def transform_output(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tft")
    interactions, *_ = movielens.load(root=FIXTURE)
    path = str(tmp / "data.tfrecord.gz")
    write_records(add_history(interactions, F.HISTORY_LENGTH), path)
    schema = text_format.Parse(open(RAW_SCHEMA).read(), schema_pb2.Schema())
    source = tfxio.TFExampleRecord(file_pattern=path, schema=schema)
    with tft_beam.Context(temp_dir=str(tmp / "tmp")):
        import apache_beam as beam

        with beam.Pipeline() as p:
            raw = p | source.BeamSource()
            transform_fn = (raw, source.TensorAdapterConfig()) | tft_beam.AnalyzeDataset(
                functools.partial(preprocessing.preprocessing_fn, custom_config={FEATURE_ROLES_KEY: MOVIELENS_FEATURES.to_json()})
            )
            _ = transform_fn | tft_beam.WriteTransformFn(str(tmp / "transform_fn"))
    return tft.TFTransformOutput(str(tmp / "transform_fn"))


def test_transformed_schema_matches_golden(transform_output):
    actual = transform_output.transformed_metadata.schema
    if os.environ.get("UPDATE_GOLDEN"):
        with open(GOLDEN, "w") as f:
            f.write(text_format.MessageToString(actual))
    expected = text_format.Parse(open(GOLDEN).read(), schema_pb2.Schema())
    assert actual == expected, "preprocessing_fn output changed; rerun with UPDATE_GOLDEN=1 if intended"


def test_vocabularies_come_from_the_data(transform_output):
    # Fixture: users 1, 2; items 1, 2, 3 (item 4 quarantined); both genders.
    assert transform_output.vocabulary_size_by_name(F.VOCAB_USER) == 2
    assert transform_output.vocabulary_size_by_name(F.VOCAB_ITEM) == 3
    assert transform_output.vocabulary_size_by_name(F.GENDER) == 2


def test_query_features_alone_transform(transform_output):
    """Serving passes only query features; the Transform layer must not need item features."""
    layer = transform_output.transform_features_layer()
    raw = {
        F.USER_ID: tf.constant([[b"1"], [b"unknown"]]),
        F.TIMESTAMP: tf.constant([[0], [6 * 3600]], tf.int64),
        F.AGE: tf.constant([[24.0], [53.0]], tf.float32),
        F.GENDER: tf.constant([[b"M"], [b"F"]]),
        F.OCCUPATION: tf.constant([[b"technician"], [b"other"]]),
        F.ZIP_CODE: tf.constant([[b"85711"], [b"94043"]]),
        F.HISTORY: tf.sparse.from_dense(tf.constant([[b"1", b"2"], [b"3", b""]])),
    }
    out = layer(raw)
    history = out[F.HISTORY_TOKENS].numpy()
    assert history.shape == (2, F.HISTORY_LENGTH)
    assert (history[0, :2] > 0).all() and (history[0, 2:] == 0).all() and (history[1, 1:] == 0).all()
    assert out[F.USER_INDEX].numpy()[1] == 2  # unknown user -> the OOV bucket, index = vocab size
    # 1970-01-01 00:00 was a Thursday: hour angle 0; 06:00 -> quarter day.
    np.testing.assert_allclose(out[F.TIME_CONTEXT].numpy()[0], [0, 1, 0, 1], atol=1e-6)
    np.testing.assert_allclose(out[F.TIME_CONTEXT].numpy()[1][:2], [1, 0], atol=1e-6)
    assert F.ITEM_INDEX not in out


def test_title_tokens():
    tokens = preprocessing.title_tokens(tf.constant(["Star Wars: Episode IV", "Schindler's List"]))
    assert tokens.to_list() == [[b"star", b"wars", b"episode", b"iv"], [b"schindler's", b"list"]]

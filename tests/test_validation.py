"""The curated schema catches out-of-schema rows, and the gate stops the run naming the feature."""

import os

import pytest
import tensorflow_data_validation as tfdv

from components import validation_gate
from mmdata import movielens
from mmdata.records import add_history, write_records
from towers import features as F

pytestmark = pytest.mark.unit

SCHEMA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "schemas", "movielens", "schema.pbtxt")
FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "ml-mini")


def _interactions():
    interactions, *_ = movielens.load(root=FIXTURE)
    return add_history(interactions, F.HISTORY_LENGTH)


def _anomalies(frame, tmp_path):
    path = str(tmp_path / "data.tfrecord.gz")
    write_records(frame, path)
    stats = tfdv.generate_statistics_from_tfrecord(data_location=path)
    return tfdv.validate_statistics(stats, tfdv.load_schema_text(SCHEMA))


def test_clean_rows_pass(tmp_path):
    anomalies = _anomalies(_interactions(), tmp_path)
    assert validation_gate.describe_anomalies({"train": anomalies}) == []
    validation_gate.check({"train": anomalies})  # does not raise


def test_corrupted_rows_stop_the_run_naming_each_feature(tmp_path):
    corrupted = _interactions()
    corrupted.loc[0, F.GENDER] = "X"  # outside the curated domain
    corrupted.loc[1, F.AGE] = 300  # outside [1, 120]
    anomalies = _anomalies(corrupted, tmp_path)
    with pytest.raises(validation_gate.DataValidationError) as error:
        validation_gate.check({"train": anomalies})
    message = str(error.value)
    assert "split 'train': feature 'gender'" in message
    assert "split 'train': feature 'age'" in message
    assert "stopping before Transform and Trainer" in message

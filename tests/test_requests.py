"""Logged requests (mmdata.requests) and the skew check on them (components.drift_validator)."""

import json

import pytest

from mmdata import requests
from mmdata.records import read_records
from mmdata.registry import MOVIELENS_FEATURES
from towers import features as F

pytestmark = pytest.mark.unit


def _log(tmp_path, lines) -> str:
    path = tmp_path / "requests.jsonl"
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return str(path)


def test_json_lines_of_rest_bodies_and_queries_give_query_rows(tmp_path):
    path = _log(
        tmp_path,
        [
            {"instances": [{"user_id": "1", "history": ["5", 7], "gender": "F", "age": 30, "exclude_seen": True}, {"user_id": "2"}]},
            {"inputs": {"user_id": ["3", "4"], "gender": ["M", "F"], "item_ids": [["1"], ["2"]]}},
            {"user_id": "5", "timestamp": 1700000000, "occupation": "writer", "age": [41]},
            "",
            "not json",
            {"user_id": "6", "age": "old", "gender": ["F", "M"]},
            {"instances": "no"},
            [1, 2],
            {"inputs": {"user_id": ["7"], "gender": ["F", "M"]}},
        ],
    )
    rows, quarantined = requests.read_requests(path, MOVIELENS_FEATURES)
    assert rows == [
        {F.USER_ID: "1", F.HISTORY: ["5", "7"], F.GENDER: "F", F.AGE: 30.0},
        {F.USER_ID: "2"},
        {F.USER_ID: "3", F.GENDER: "M"},
        {F.USER_ID: "4", F.GENDER: "F"},
        {F.USER_ID: "5", F.TIMESTAMP: 1700000000, F.OCCUPATION: "writer", F.AGE: 41.0},
        {F.USER_ID: "6"},
    ]
    reasons = {(row.line, row.field): row.reason for row in quarantined}
    assert reasons[(5, "*")].startswith("not JSON")
    assert reasons[(6, F.AGE)] == "a number expected; the value left out"
    assert reasons[(6, F.GENDER)] == "one value expected, got 2; the value left out"
    assert reasons[(7, "instances")] == "a list of objects is expected"
    assert reasons[(8, "*")] == "a request is a JSON object"
    assert "all of one length" in reasons[(9, "*")]


def test_tf_serving_prediction_logs_are_read(tmp_path):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = str(tmp_path / "log.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        log = prediction_log_pb2.PredictionLog()
        inputs = log.predict_log.request.inputs
        inputs[F.USER_ID].CopyFrom(tf.make_tensor_proto([b"9", b"10"]))
        inputs[F.GENDER].CopyFrom(tf.make_tensor_proto([b"M", b"F"]))
        inputs[F.AGE].CopyFrom(tf.make_tensor_proto([20.0, 50.0]))
        writer.write(log.SerializeToString())
        writer.write(b"\x00garbage")
    rows, quarantined = requests.read_requests(path, MOVIELENS_FEATURES)
    assert rows == [{F.USER_ID: "9", F.GENDER: "M", F.AGE: 20.0}, {F.USER_ID: "10", F.GENDER: "F", F.AGE: 50.0}]
    assert [(row.line, row.field) for row in quarantined] == [(2, "*")] and "PredictionLog" in quarantined[0].reason


def test_written_requests_leave_out_what_a_request_did_not_carry(tmp_path):
    path = _log(tmp_path, [{"user_id": "1", "gender": "F"}, {"user_id": "2", "age": 33}])
    count, _ = requests.write_requests(path, str(tmp_path / "out"), MOVIELENS_FEATURES)
    written = read_records(str(tmp_path / "out" / requests.REQUESTS_FILE))
    assert count == 2 and written == [{F.USER_ID: "1", F.GENDER: "F"}, {F.USER_ID: "2", F.AGE: 33.0}]
    with pytest.raises(ValueError, match="no request could be read"):
        requests.write_requests(_log(tmp_path, ["nope"]), str(tmp_path / "none"), MOVIELENS_FEATURES)


def _statistics(genders):
    import pandas as pd
    import tensorflow_data_validation as tfdv

    return tfdv.generate_statistics_from_dataframe(pd.DataFrame({F.GENDER: genders}))


def test_skew_is_measured_on_the_features_the_schema_gives_a_skew_comparator():
    import tensorflow_data_validation as tfdv

    from components import drift_validator, validation_gate

    training = _statistics(["M"] * 70 + ["F"] * 30)
    schema = tfdv.infer_schema(training)
    tfdv.get_feature(schema, F.GENDER).skew_comparator.infinity_norm.threshold = 0.1

    same, _ = drift_validator.compare_skew(training, _statistics(["M"] * 7 + ["F"] * 3), schema)
    assert same["compared"] and same["passed"] and same["measurements"][0]["distance"] == pytest.approx(0.0)
    skewed, anomalies = drift_validator.compare_skew(training, _statistics(["F"] * 10), schema)
    (row,) = skewed["measurements"]
    assert not skewed["passed"] and row["feature"] == F.GENDER and row["distance"] == pytest.approx(0.7)
    assert F.GENDER in anomalies.anomaly_info
    report = {"compared": False, "passed": True, "measurements": [], "skew": {**skewed, "requests": 10}}
    assert drift_validator.skew_line(report) == "Skew: FAIL, training vs 10 logged requests: gender L-inf 0.7 > 0.1"
    with pytest.raises(validation_gate.DataValidationError, match=r"skew between training and the logged requests.*\n.*gender.*0\.7"):
        validation_gate.check({}, report)
    assert drift_validator.compare_skew(training, None, schema)[0] == {"compared": False, "passed": True, "measurements": []}

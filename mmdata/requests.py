"""Logged requests -> the query rows they carried, as tf.Examples: what training-serving skew is measured on.

Two formats of log are read:

- JSON lines (.jsonl / .json): one line per request, either a TF Serving REST
  predict body ({"instances": [query, ...]} or {"inputs": {feature: [values]}})
  or one query object ({"user_id": "42", "history": ["1", "7"], "age": 31});
- TF Serving's own request log (TFRecord of tensorflow_serving PredictionLog:
  `logging_config` in models.config writes it): each predict request's inputs.

Only the query features count (F.QUERY_BASE and the dataset's user
attributes); other inputs (exclude_seen, item_ids) are ignored. A line or
record that cannot be read, or a value of the wrong type, is quarantined with
its line and field and the rest is kept.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

from mmdata.contract import short
from mmdata.records import QuarantinedRow, to_example
from towers import features as F
from towers import privacy

REQUESTS_FILE = "requests.tfrecord.gz"
JSON_SUFFIXES = (".jsonl", ".json")


def read_requests(path: str, roles: F.FeatureRoles, key: bytes | None = None) -> tuple[list[dict], list[QuarantinedRow]]:
    """The query rows of a request log (see the module), each holding the query features it carried.

    `key`: raw user ids become their pseudonyms (towers.privacy), as in the dataset build; unreadable lines
    are quarantined without their text.
    """
    import tensorflow as tf

    quarantined: list[QuarantinedRow] = []
    source = os.path.basename(path)
    rows = []
    if path.endswith(JSON_SUFFIXES):
        with tf.io.gfile.GFile(path) as f:
            for line, text in enumerate(f, start=1):
                if text.strip():
                    rows += _rows_of(source, line, text, roles, quarantined)
    else:
        from tensorflow_serving.apis import prediction_log_pb2

        for number, record in enumerate(tf.data.TFRecordDataset(path, compression_type=_compression(path)), start=1):
            try:
                log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
                inputs = {name: tf.make_ndarray(tensor).tolist() for name, tensor in log.predict_log.request.inputs.items()}
            except Exception as error:  # a damaged record: protobuf and TensorFlow raise several kinds
                quarantined.append(QuarantinedRow(source, number, "*", f"not a PredictionLog: {error}", ""))
                continue
            rows += _columns_to_rows(source, number, inputs, roles, quarantined)
    if key is not None:
        for row in rows:
            if row.get(F.USER_ID) and not privacy.is_pseudonym(row[F.USER_ID]):
                row[F.USER_ID] = privacy.pseudonym(key, row[F.USER_ID])
        quarantined = [dataclasses.replace(row, raw="") for row in quarantined]
    return rows, quarantined


def write_requests(path: str, out_dir: str, roles: F.FeatureRoles, key: bytes | None = None) -> tuple[int, list[QuarantinedRow]]:
    """Writes the log's query rows to `out_dir`/REQUESTS_FILE (ImportExampleGen's input); -> (rows, quarantined)."""
    rows, quarantined = read_requests(path, roles, key)
    if not rows:
        raise ValueError(f"{path}: no request could be read ({len(quarantined)} quarantined); skew needs at least one")
    import tensorflow as tf

    os.makedirs(out_dir, exist_ok=True)
    with tf.io.TFRecordWriter(os.path.join(out_dir, REQUESTS_FILE), options="GZIP") as writer:
        for row in rows:  # a feature a request did not carry is absent (not NaN), as in a sparse log
            writer.write(to_example(row).SerializeToString())
    return len(rows), quarantined


def _compression(path: str) -> str:
    return "GZIP" if path.endswith(".gz") else ""


def _rows_of(source: str, line: int, text: str, roles: F.FeatureRoles, quarantined: list[QuarantinedRow]) -> list[dict]:
    try:
        body = json.loads(text)
    except json.JSONDecodeError as error:
        quarantined.append(QuarantinedRow(source, line, "*", f"not JSON: {error.msg}", short(text)))
        return []
    if not isinstance(body, dict):
        quarantined.append(QuarantinedRow(source, line, "*", "a request is a JSON object", short(text)))
        return []
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list) or not all(isinstance(i, dict) for i in instances):
            quarantined.append(QuarantinedRow(source, line, "instances", "a list of objects is expected", short(instances)))
            return []
        return [row for row in (_query(source, line, i, roles, quarantined) for i in instances) if row]
    if "inputs" in body:
        inputs = body["inputs"]
        if not isinstance(inputs, dict):
            quarantined.append(QuarantinedRow(source, line, "inputs", "an object of input -> values is expected", short(inputs)))
            return []
        return _columns_to_rows(source, line, inputs, roles, quarantined)
    row = _query(source, line, body, roles, quarantined)
    return [row] if row else []


def _columns_to_rows(source: str, line: int, columns: dict, roles: F.FeatureRoles, quarantined: list[QuarantinedRow]) -> list[dict]:
    """Columnar inputs (input -> a value per query) -> one query per position."""
    names = [name for name in roles.query_features if name in columns]
    if not names:
        quarantined.append(QuarantinedRow(source, line, "*", f"none of the query features {list(roles.query_features)}", ""))
        return []
    sizes = {len(columns[name]) if isinstance(columns[name], list) else -1 for name in names}
    if len(sizes) != 1 or -1 in sizes:
        quarantined.append(QuarantinedRow(source, line, "*", "inputs must be lists of one value per query, all of one length", ""))
        return []
    queries = [{name: columns[name][k] for name in names} for k in range(sizes.pop())]
    return [row for row in (_query(source, line, query, roles, quarantined) for query in queries) if row]


def _query(source: str, line: int, query: dict, roles: F.FeatureRoles, quarantined: list[QuarantinedRow]) -> dict | None:
    """One query object -> its query features typed as the training examples hold them; None when it has none."""
    row = {}
    for name in roles.query_features:
        if name not in query or query[name] is None:
            continue
        value, problem = _typed(name, _text_of(query[name]), roles)
        if problem:
            quarantined.append(QuarantinedRow(source, line, name, f"{problem}; the value left out", short(query[name]), True))
        else:
            row[name] = value
    return row or None


def _text_of(value):
    """bytes (a PredictionLog's strings) as text, inside lists too."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return [_text_of(v) for v in value]
    return value


def _typed(name: str, value, roles: F.FeatureRoles):
    """(the value as the training examples hold it, None) or (None, why not)."""
    if isinstance(value, list) and name != F.HISTORY:
        if len(value) != 1:
            return None, f"one value expected, got {len(value)}"
        value = value[0]
    if name == F.HISTORY:
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str | int) for v in values):
            return None, "a list of item ids is expected"
        return [str(v) for v in values], None
    if name == F.TIMESTAMP:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return None, "unix seconds expected"
        return int(value), None
    if name in roles.user_numeric:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None, "a number expected"
        return float(value), None
    if not isinstance(value, str | int):
        return None, "a text expected"
    return str(value), None

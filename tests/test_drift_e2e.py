"""Drift between spans: span 1 passes (nothing to compare), span 2, whose gender distribution moved past the
schema's drift_comparator threshold, stops in the ValidationGate naming the feature, the distance and the threshold."""

import os

import pytest

from components.validation_gate import DataValidationError
from mmdata import registry
from mmdata.records import split_dir
from pipeline import local_runner
from pipeline.config import Options, schema_path
from tests.test_e2e import executed_nodes
from towers import features as F
from towers.contract import RECORD_FILE, SPLITS, RunPaths
from towers.hparams import HParams

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _set_feature(path: str, name: str, value: bytes) -> None:
    """Rewrites every tf.Example of a gzipped TFRecord file with `name` set to `value`, all else untouched."""
    import tensorflow as tf

    examples = [tf.train.Example.FromString(raw) for raw in tf.data.TFRecordDataset(path, compression_type="GZIP").as_numpy_iterator()]
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for example in examples:
            example.features.feature[name].bytes_list.value[:] = [value]
            writer.write(example.SerializeToString())


def test_a_drifted_span_stops_the_pipeline_naming_the_feature(tmp_path, monkeypatch):
    import tensorflow_data_validation as tfdv
    from tfx import v1 as tfx
    from tfx.orchestration.pipeline import RunOptions

    from app import summary

    dataset = "movielens-100k"
    paths = RunPaths(str(tmp_path), dataset)
    registry.build(dataset, paths.data_dir, max_users=40, spans=2)
    for split in SPLITS:  # span 2: every event's user is now "F" (span 1 has both genders)
        _set_feature(os.path.join(split_dir(paths.data_dir, split, span=2), RECORD_FILE), F.GENDER, b"F")
    schema = tfdv.load_schema_text(schema_path(dataset))
    tfdv.get_feature(schema, F.GENDER).drift_comparator.infinity_norm.threshold = 0.1
    curated = str(tmp_path / "schema.pbtxt")
    tfdv.write_schema_text(schema, curated)
    monkeypatch.setattr(local_runner, "schema_path", lambda _: curated)

    def pipeline(span):
        options = Options(hparams=HParams(epochs=1), span=span)
        return local_runner.build_pipeline(
            local_runner.RunConfig(dataset=dataset, output=str(tmp_path), options=options, spans=2, direct_num_workers=1), paths
        )

    # Span 1, up to the gate: the first DriftValidator has no baseline, passes and makes span 1 the baseline.
    tfx.orchestration.LocalDagRunner().run(pipeline(1), run_options=RunOptions(to_nodes=["ValidationGate"]))
    first = summary.read(paths).drift
    assert first["compared"] is False and first["passed"] and first["current_span"] == 1

    with pytest.raises(
        DataValidationError, match=r"feature 'gender': drift since span 1: L-infinity distance [0-9.]+ above the threshold 0\.1"
    ):
        tfx.orchestration.LocalDagRunner().run(pipeline(2))
    second = summary.read(paths).drift
    assert second["previous_span"] == 1 and second["current_span"] == 2 and not second["passed"]
    assert {(m["split"], m["feature"]) for m in second["measurements"]} == {(split, F.GENDER) for split in SPLITS}
    assert any(m["split"] == "train" and m["distance"] > 0.1 and not m["passed"] for m in second["measurements"])
    ran = executed_nodes(paths)
    assert {"StatisticsGen", "ExampleValidator", "DriftValidator"} <= ran
    assert not ran & {"Transform", "Trainer", "Evaluator", "Pusher"}


def test_logged_requests_skewed_from_training_stop_the_pipeline_naming_the_feature(tmp_path, monkeypatch):
    """`mmtower run --requests LOG`: the training split against the requests' statistics, with the schema's skew comparator."""
    import json

    import tensorflow_data_validation as tfdv
    from tfx import v1 as tfx
    from tfx.orchestration.pipeline import RunOptions

    from app import summary

    dataset = "movielens-100k"
    schema = tfdv.load_schema_text(schema_path(dataset))
    tfdv.get_feature(schema, F.GENDER).skew_comparator.infinity_norm.threshold = 0.1
    curated = str(tmp_path / "schema.pbtxt")
    tfdv.write_schema_text(schema, curated)
    monkeypatch.setattr(local_runner, "schema_path", lambda _: curated)
    log = tmp_path / "requests.jsonl"  # every logged query is from a woman; training has both genders
    queries = [{"user_id": str(k), "gender": "F", "age": 30 + k, "history": ["1", "2"]} for k in range(30)]
    log.write_text(json.dumps({"instances": queries[:10]}) + "\n" + "".join(json.dumps(q) + "\n" for q in queries[10:]) + "{broken\n")

    config = local_runner.RunConfig(
        dataset=dataset,
        output=str(tmp_path),
        options=Options(hparams=HParams(epochs=1)),
        max_users=40,
        direct_num_workers=1,
        requests=str(log),
    )
    paths = RunPaths(str(tmp_path), dataset)
    monkeypatch.setattr(tfx.orchestration.LocalDagRunner, "run", _up_to_the_gate(tfx.orchestration.LocalDagRunner.run, RunOptions))
    with pytest.raises(DataValidationError, match=r"feature 'gender': skew between the training split and the logged requests: L-infinity"):
        local_runner.run(config)
    skew = summary.read(paths).drift["skew"]
    assert skew["compared"] and not skew["passed"] and skew["requests"] == 30
    assert [m["feature"] for m in skew["measurements"]] == [F.GENDER]
    with open(os.path.join(paths.requests_dir, "quarantine.jsonl")) as f:
        assert [json.loads(line)["line"] for line in f] == [22]
    assert {"RequestsExampleGen", "RequestsStatisticsGen", "DriftValidator"} <= executed_nodes(paths)


def _up_to_the_gate(run, run_options):
    """LocalDagRunner.run stopping after the ValidationGate (the skew check needs nothing downstream)."""

    def bounded(self, pipeline, run_options_=None, **kwargs):
        return run(self, pipeline, run_options=run_options(to_nodes=["ValidationGate"]), **kwargs)

    return bounded

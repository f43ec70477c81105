"""The development server speaks TF Serving's API: protos, status codes, limits, fuzzing, hot swaps.

The served model here is a small SavedModel with the `recommend` signature's
input and output names (the pipeline's own model is served in test_e2e), so
these tests run in seconds. Everything talks over loopback to a real server.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

from serving import batching
from serving import config as model_config
from serving.client import GrpcClient, RestClient
from serving.errors import ServingError
from serving.predict import Limits
from serving.server import Server, ServerOptions
from towers import contract

pytestmark = pytest.mark.serving

ITEMS = [b"a", b"b", b"c", b"d"]
MODEL = contract.RECOMMENDER


class ToyRecommender(tf.Module):
    """recommend(user_id [batch], history [batch, None], exclude_seen [batch]) -> the K items, scored `version`."""

    def __init__(self, version: int):
        super().__init__()
        self.version = tf.Variable(float(version), trainable=False)
        self.items = tf.constant(ITEMS)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="user_id"),
            tf.TensorSpec([None, None], tf.string, name="history"),
            tf.TensorSpec([None], tf.bool, name="exclude_seen"),
        ]
    )
    def recommend(self, user_id, history, exclude_seen):
        batch = tf.shape(user_id)[0]
        tf.debugging.assert_equal(batch, tf.shape(exclude_seen)[0], message="user_id and exclude_seen batch sizes differ")
        scores = tf.fill([batch, len(ITEMS)], self.version) - tf.range(len(ITEMS), dtype=tf.float32)
        scores += tf.cast(tf.strings.length(user_id), tf.float32)[:, None] * 0.0 + tf.cast(tf.shape(history)[1], tf.float32) * 0.0
        return {"item_ids": tf.tile(self.items[None, :], [batch, 1]), "scores": scores}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id"), tf.TensorSpec([None, None], tf.string, name="history")])
    def echo(self, user_id, history):
        """Per-row outputs that name their row (user_id, its history's length) and one unbatched output."""
        length = tf.reduce_sum(tf.cast(tf.strings.length(history) > 0, tf.int64), axis=1)
        return {"user_id": user_id, "history_length": length, "version": self.version}


def push(base_path: str, version: int) -> str:
    """Saves a version as the Pusher does: complete in a scratch folder, then renamed into place."""
    module = ToyRecommender(version)
    scratch = os.path.join(base_path, f".partial-{version}")
    tf.saved_model.save(
        module, scratch, signatures={"recommend": module.recommend, "serving_default": module.recommend, "echo": module.echo}
    )
    os.replace(scratch, os.path.join(base_path, str(version)))
    return os.path.join(base_path, str(version))


def recommend_inputs(batch: int = 2) -> dict[str, np.ndarray]:
    return {
        "user_id": np.array([b"u%d" % i for i in range(batch)], dtype=object),
        "history": np.array([[b"a", b""]] * batch, dtype=object),
        "exclude_seen": np.ones([batch], bool),
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("serving"))
    os.makedirs(os.path.join(root, MODEL))
    push(os.path.join(root, MODEL), 1)
    config_path = model_config.write_for(root, names=[MODEL])
    options = ServerOptions(grpc_port=0, rest_port=0, poll_seconds=0.2, max_message_mib=1, limits=Limits(max_batch=64, max_elements=10_000))
    with Server(config_path, options) as server:
        server.models.wait_for(MODEL, 1)
        yield server, root


@pytest.fixture
def grpc_client(served):
    client = GrpcClient(f"127.0.0.1:{served[0].grpc_port}")
    yield client
    client.close()


@pytest.fixture
def rest_client(served):
    client = RestClient(f"http://127.0.0.1:{served[0].rest_port}")
    yield client
    client.close()


def test_model_config_round_trips_through_tf_serving_protos(tmp_path):
    path = model_config.write_for(str(tmp_path))
    parsed = model_server_config_pb2.ModelServerConfig()
    from google.protobuf import text_format

    text_format.Parse(open(path).read(), parsed)
    configs = {c.name: c for c in parsed.model_config_list.config}
    assert list(configs) == list(contract.SERVED_MODELS)
    for name, config in configs.items():
        assert config.base_path == os.path.join(str(tmp_path), name)
        assert config.model_platform == "tensorflow"
        assert config.model_version_policy.latest.num_versions == 1
    assert model_config.read(path) == parsed


def test_model_config_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="models.config"):
        model_config.read(str(tmp_path / "models.config"))
    (tmp_path / "bad.config").write_text("model_config_list { config { name: 'x' ")
    with pytest.raises(ValueError, match="bad.config"):
        model_config.read(str(tmp_path / "bad.config"))


def test_version_policies():
    model = model_server_config_pb2.ModelConfig(name="m", base_path="/x")
    assert model_config.wanted_versions(model, [1, 2, 3]) == [3]
    model.model_version_policy.latest.num_versions = 2
    assert model_config.wanted_versions(model, [1, 2, 3]) == [2, 3]
    model.model_version_policy.specific.versions.extend([1, 5])
    assert model_config.wanted_versions(model, [1, 2, 3]) == [1]
    model.model_version_policy.all.SetInParent()
    assert model_config.wanted_versions(model, [1, 2, 3]) == [1, 2, 3]


def test_grpc_predict_metadata_and_status(grpc_client):
    outputs = grpc_client.predict(MODEL, recommend_inputs(), signature="recommend")
    assert outputs["item_ids"].tolist() == [ITEMS, ITEMS]
    np.testing.assert_allclose(outputs["scores"][0], [1, 0, -1, -2])
    signatures = grpc_client.metadata(MODEL)
    assert set(signatures) == {"recommend", "serving_default", "echo"}
    assert set(signatures["recommend"].inputs) == {"user_id", "history", "exclude_seen"}
    assert grpc_client.status(MODEL) == [(1, "AVAILABLE")]


def test_rest_predict_columns_and_rows(served, rest_client):
    outputs = rest_client.predict(MODEL, recommend_inputs(), signature="recommend")
    assert outputs["item_ids"].tolist() == [ITEMS, ITEMS]
    url = f"http://127.0.0.1:{served[0].rest_port}/v1/models/{MODEL}:predict"
    rows = {"signature_name": "recommend", "instances": [{"user_id": "u1", "history": ["a"], "exclude_seen": True}]}
    predictions = requests.post(url, data=json.dumps(rows), timeout=10).json()["predictions"]
    assert predictions[0]["item_ids"] == [i.decode() for i in ITEMS]
    b64 = {"signature_name": "recommend", "inputs": {"user_id": [{"b64": "dTE="}], "history": [["a"]], "exclude_seen": [False]}}
    assert requests.post(url, data=json.dumps(b64), timeout=10).status_code == 200
    assert rest_client.status(MODEL) == [(1, "AVAILABLE")]
    assert "recommend" in rest_client.metadata(MODEL)
    # TF Serving's JSON: proto field names, as its REST API writes them (what a client of the real server reads)
    raw = requests.get(f"http://127.0.0.1:{served[0].rest_port}/v1/models/{MODEL}/metadata", timeout=10).json()
    recommend = raw["metadata"]["signature_def"]["signature_def"]["recommend"]
    assert recommend["method_name"] == "tensorflow/serving/predict" and "tensor_shape" in recommend["inputs"]["user_id"]


def _code(call) -> grpc.StatusCode:
    with pytest.raises(ServingError) as error:
        call()
    return error.value.code


def test_grpc_status_codes(grpc_client):
    good = recommend_inputs()
    assert _code(lambda: grpc_client.predict("nope", good, "recommend")) == grpc.StatusCode.NOT_FOUND
    assert _code(lambda: grpc_client.predict(MODEL, good, "recommend", version=7)) == grpc.StatusCode.NOT_FOUND
    assert _code(lambda: grpc_client.predict(MODEL, good, "nope")) == grpc.StatusCode.NOT_FOUND
    assert _code(lambda: grpc_client.status("nope")) == grpc.StatusCode.NOT_FOUND
    assert _code(lambda: grpc_client.metadata(MODEL, version=7)) == grpc.StatusCode.NOT_FOUND
    missing = {k: v for k, v in good.items() if k != "history"}
    assert _code(lambda: grpc_client.predict(MODEL, missing, "recommend")) == grpc.StatusCode.INVALID_ARGUMENT
    assert _code(lambda: grpc_client.predict(MODEL, {**good, "extra": np.ones(2)}, "recommend")) == grpc.StatusCode.INVALID_ARGUMENT
    assert _code(lambda: grpc_client.predict(MODEL, {**good, "user_id": np.array([1, 2])}, "recommend")) == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        _code(lambda: grpc_client.predict(MODEL, {**good, "history": np.array([b"a", b"b"], dtype=object)}, "recommend"))
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    assert (
        _code(lambda: grpc_client.predict(MODEL, {**good, "exclude_seen": np.ones([3], bool)}, "recommend"))
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    assert _code(lambda: grpc_client.predict(MODEL, recommend_inputs(65), "recommend")) == grpc.StatusCode.INVALID_ARGUMENT  # max_batch 64
    assert _code(lambda: grpc_client.predict(MODEL, good, "recommend", output_filter=["nope"])) == grpc.StatusCode.INVALID_ARGUMENT
    huge = {**good, "user_id": np.array([b"x" * (2 << 20)] * 2, dtype=object)}  # 4 MiB > max_message_mib 1
    assert _code(lambda: grpc_client.predict(MODEL, huge, "recommend")) == grpc.StatusCode.RESOURCE_EXHAUSTED
    # still serving
    assert grpc_client.predict(MODEL, good, "recommend", output_filter=["scores"]).keys() == {"scores"}


def test_rest_status_codes(served):
    base = f"http://127.0.0.1:{served[0].rest_port}/v1/models"

    def post(path, body):
        data = body if isinstance(body, (str, bytes)) else json.dumps(body)
        return requests.post(base + path, data=data, timeout=10)

    good = {"signature_name": "recommend", "inputs": {"user_id": ["u"], "history": [["a"]], "exclude_seen": [True]}}
    assert post(f"/{MODEL}:predict", good).status_code == 200
    assert post("/nope:predict", good).status_code == 404
    assert post(f"/{MODEL}/versions/9:predict", good).status_code == 404
    assert post(f"/{MODEL}:predict", {**good, "signature_name": "nope"}).status_code == 404
    assert requests.get(f"{base}/nope", timeout=10).status_code == 404
    assert requests.get(f"http://127.0.0.1:{served[0].rest_port}/elsewhere", timeout=10).status_code == 404
    assert post(f"/{MODEL}:predict", "{not json").status_code == 400
    assert post(f"/{MODEL}:predict", {"inputs": {}, "instances": []}).status_code == 400
    assert post(f"/{MODEL}:predict", {**good, "inputs": {**good["inputs"], "user_id": [1]}}).status_code == 400
    assert post(f"/{MODEL}:predict", {**good, "inputs": {**good["inputs"], "history": [["a"], ["b", "c"]]}}).status_code == 400
    assert post(f"/{MODEL}:predict", {**good, "inputs": {**good["inputs"], "exclude_seen": ["yes"]}}).status_code == 400
    assert post(f"/{MODEL}:predict", {**good, "inputs": {**good["inputs"], "user_id": [{"b64": "!!"}]}}).status_code == 400
    response = post(f"/{MODEL}:predict", b"x" * (2 << 20))
    assert response.status_code == 413 and "exceeds" in response.json()["error"]
    assert post(f"/{MODEL}:predict", good).status_code == 200


def _random_value(rng: np.random.Generator):
    kind = rng.integers(6)
    shape = tuple(int(d) for d in rng.integers(0, 4, size=rng.integers(0, 3)))
    if kind == 0:
        return np.array(rng.integers(-5, 5, size=shape), dtype=rng.choice([np.int32, np.int64]))
    if kind == 1:
        return rng.normal(size=shape).astype(np.float32)
    if kind == 2:
        return rng.integers(0, 2, size=shape).astype(bool)
    values = [bytes(rng.integers(0, 256, size=rng.integers(0, 5)).astype(np.uint8)) for _ in range(int(np.prod(shape)))]
    return np.array(values, dtype=object).reshape(shape)


def _jsonable(value: np.ndarray):
    if value.dtype == object:
        return np.vectorize(lambda v: v.decode("latin-1"), otypes=[object])(value).tolist() if value.size else value.tolist()
    return value.tolist()


FUZZ_NAMES = ["user_id", "history", "exclude_seen", "examples", ""]
FUZZ_ANSWERS = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, "http 200", "http 400", "http 404"}


def _fuzz_grpc(port: int, rng, count: int) -> dict:
    """`count` random Predict requests (a valid one every tenth) -> {status code: how many}."""
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    names = FUZZ_NAMES
    answered = {}
    for i in range(count):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = str(rng.choice([MODEL, MODEL, MODEL, "nope", ""]))
        request.model_spec.signature_name = str(rng.choice(["recommend", "serving_default", "", "nope"]))
        if rng.random() < 0.2:
            request.model_spec.version.value = int(rng.integers(0, 3))
        for name in rng.choice(names, size=rng.integers(0, 5), replace=False):
            if rng.random() < 0.1:  # a corrupt TensorProto: content that does not fit its shape
                request.inputs[str(name)].dtype = tf.float32.as_datatype_enum
                request.inputs[str(name)].tensor_shape.dim.add(size=int(rng.integers(1, 9)))
                request.inputs[str(name)].tensor_content = bytes(rng.integers(0, 256, size=3).astype(np.uint8))
            else:
                request.inputs[str(name)].CopyFrom(tf.make_tensor_proto(_random_value(rng)))
        if i % 10 == 0:  # a structurally valid request now and then
            request = predict_pb2.PredictRequest()
            request.model_spec.name, request.model_spec.signature_name = MODEL, "recommend"
            for name, value in recommend_inputs(int(rng.integers(1, 4))).items():
                request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        try:
            stub.Predict(request, timeout=10)
            code = grpc.StatusCode.OK
        except grpc.RpcError as error:
            code = error.code()
        answered[code] = answered.get(code, 0) + 1
    channel.close()
    return answered


@pytest.mark.slow
def test_fuzz_every_request_gets_an_answer(served):
    """Thousands of random gRPC and REST requests: each answered with outputs or a client-error code."""
    server, _ = served
    rng = np.random.default_rng(0)
    names = FUZZ_NAMES
    answered = _fuzz_grpc(server.grpc_port, rng, 2000)
    rest = f"http://127.0.0.1:{server.rest_port}/v1/models/{MODEL}:predict"
    session = requests.Session()
    for i in range(500):
        bodies = [
            lambda: json.dumps(
                {"inputs": {str(n): _jsonable(_random_value(rng)) if rng.random() < 0.5 else "x" for n in rng.choice(names, size=2)}}
            ),
            lambda: json.dumps({"instances": [int(rng.integers(9))] * int(rng.integers(0, 3))}),
            lambda: bytes(rng.integers(0, 256, size=rng.integers(0, 50)).astype(np.uint8)),
            lambda: json.dumps(
                {"signature_name": "recommend", "inputs": {"user_id": ["u"], "history": [["a"]], "exclude_seen": [bool(i % 2)]}}
            ),
        ]
        body = bodies[int(rng.integers(len(bodies)))]()
        status = session.post(rest, data=body, timeout=10).status_code
        answered[f"http {status}"] = answered.get(f"http {status}", 0) + 1
    print("fuzz answers:", {str(k): v for k, v in answered.items()})  # shown with pytest -s
    assert set(answered) <= FUZZ_ANSWERS, answered
    assert sum(answered.values()) == 2500
    assert answered[grpc.StatusCode.OK] >= 150 and answered["http 200"] >= 50
    assert GrpcClient(f"127.0.0.1:{server.grpc_port}").status(MODEL)[-1][1] == "AVAILABLE"


@pytest.mark.slow
def test_hot_swap_under_load_fails_no_request(served):
    """Clients keep calling while new versions land: every call succeeds and the newest answers in the end."""
    server, root = served
    failures, answered_by, stop, calls = [], set(), threading.Event(), []

    def client_loop():
        client = GrpcClient(f"127.0.0.1:{server.grpc_port}")
        while not stop.is_set():
            try:
                score = client.predict(MODEL, recommend_inputs(1), "recommend")["scores"][0, 0]
                answered_by.add(int(score))
                calls.append(1)
            except Exception as error:  # any failure counts
                failures.append(repr(error))
        client.close()

    threads = [threading.Thread(target=client_loop) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for version in (2, 3):
            push(os.path.join(root, MODEL), version)
            server.models.wait_for(MODEL, version, timeout=60)
            time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    print(f"hot swap: {len(calls)} requests from 4 clients across 2 new versions, {len(failures)} failed")  # pytest -s
    assert failures == []
    assert {2, 3} <= answered_by
    assert GrpcClient(f"127.0.0.1:{server.grpc_port}").status(MODEL) == [(1, "END"), (2, "END"), (3, "AVAILABLE")]


def test_broken_version_is_reported_and_the_old_one_kept(served):
    server, root = served
    current = server.models.get(MODEL).version
    broken = os.path.join(root, MODEL, str(current + 1))
    os.makedirs(broken)
    with open(os.path.join(broken, "saved_model.pb"), "wb") as f:
        f.write(b"not a SavedModel")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(s.version == current + 1 for s in server.models.status(MODEL)):
            time.sleep(0.1)
        state = {s.version: s for s in server.models.status(MODEL)}[current + 1]
        assert state.state == "END" and "could not load" in state.error
        assert GrpcClient(f"127.0.0.1:{server.grpc_port}").predict(MODEL, recommend_inputs(), "recommend")["scores"][0, 0] == current
    finally:
        shutil.rmtree(broken)


@pytest.mark.parametrize(
    "value",
    [
        np.array([[b"a", b"\xff"], [b"", b"x"]], dtype=object),
        np.arange(6, dtype=np.int64).reshape(2, 3),
        np.ones([3], bool),
        np.zeros([2, 0], np.float32),
        np.array([1.5, -2], np.float32),
        np.array(3, np.int32),
        np.array([2.0], np.float64),
    ],
)
def test_tensor_conversions_agree_with_tensorflow(value):
    from serving import tensors

    assert tf.make_ndarray(tensors.to_proto(value)).tolist() == value.tolist()
    back = tensors.to_array(tf.make_tensor_proto(value))
    assert back.tolist() == value.tolist() and back.shape == value.shape


def test_malformed_tensor_protos_are_refused():
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    from serving import tensors

    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=3)])
    with pytest.raises(ValueError, match="does not fit"):
        tensors.to_array(tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape, tensor_content=b"\x00" * 5))
    with pytest.raises(ValueError, match="strings for shape"):
        tensors.to_array(tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=shape, string_val=[b"a", b"b"]))


def _manager(root: str):
    from serving.models import ModelManager

    return ModelManager(model_config.read(model_config.write_for(root, names=[MODEL])))


def test_a_restart_over_a_broken_newest_version_serves_the_newest_that_loads(tmp_path):
    base = tmp_path / MODEL
    base.mkdir()
    push(str(base), 1)
    (base / "2").mkdir()
    (base / "2" / "saved_model.pb").write_bytes(b"cut off")
    manager = _manager(str(tmp_path))
    manager.refresh()
    assert manager.get(MODEL).version == 1
    assert {s.version: s.state for s in manager.status(MODEL)} == {1: "AVAILABLE", 2: "END"}


def test_a_version_copied_file_by_file_loads_once_complete(tmp_path):
    """A copy that is not atomic (saved_model.pb first, variables later) is retried when its files change."""
    base = tmp_path / MODEL
    base.mkdir()
    push(str(base), 1)
    complete = push(str(tmp_path / "elsewhere"), 2)
    shutil.copytree(complete, base / "2", ignore=shutil.ignore_patterns("variables"))
    manager = _manager(str(tmp_path))
    manager.refresh()
    assert manager.get(MODEL).version == 1  # version 2 has no variables yet
    manager.refresh()
    assert manager.get(MODEL).version == 1  # unchanged files: not retried
    shutil.copytree(os.path.join(complete, "variables"), base / "2" / "variables")
    manager.refresh()
    assert manager.get(MODEL).version == 2


def test_a_saved_model_without_the_required_signature_is_not_swapped_in(tmp_path):
    base = tmp_path / MODEL
    base.mkdir()
    push(str(base), 1)
    module = ToyRecommender(2)
    tf.saved_model.save(module, str(base / "2"), signatures={"serving_default": module.recommend})  # no `recommend`
    manager = _manager(str(tmp_path))
    manager.refresh()
    assert manager.get(MODEL).version == 1
    error = {s.version: s for s in manager.status(MODEL)}[2].error
    assert "signature(s) recommend missing" in error


def test_a_huge_declared_tensor_is_refused_before_it_is_allocated(served):
    """82 bytes declaring 10^8 strings: refused from the shape, not after building a 0.8 GB array."""
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    server, _ = served
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = MODEL, "recommend"
    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=10**8)])
    request.inputs["user_id"].CopyFrom(tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=shape, string_val=[b"u"]))
    assert request.ByteSize() < 100
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as error:
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "over the limit" in error.value.details()
    assert time.monotonic() - started < 2
    channel.close()


def test_model_errors_reach_the_client_with_their_cause(grpc_client):
    mismatched = {**recommend_inputs(2), "exclude_seen": np.ones([3], bool)}
    with pytest.raises(ServingError) as error:
        grpc_client.predict(MODEL, mismatched, "recommend")
    assert "batch sizes differ" in error.value.message and "Graph execution error" not in error.value.message


@pytest.mark.slow
def test_rest_survives_stalled_idle_and_too_many_connections_and_deep_json(served):
    import socket

    from serving import rest_api

    server, _ = served
    rest = rest_api.make_server("127.0.0.1", 0, server.models, Limits(max_batch=64), 1 << 20, max_connections=4, read_timeout=1.0)
    threading.Thread(target=rest.serve_forever, daemon=True).start()
    port = rest.server_address[1]
    url = f"http://127.0.0.1:{port}/v1/models/{MODEL}"
    try:
        assert rest.request_queue_size >= 128
        deep = "[" * 100_000 + "]" * 100_000
        reply = requests.post(url + ":predict", data=deep, timeout=10)
        assert reply.status_code == 400 and "nested too deeply" in reply.json()["error"]
        # a body shorter than its Content-Length: the connection is closed after the read timeout, its slot freed
        stalled = socket.create_connection(("127.0.0.1", port))
        stalled.sendall(b"POST /v1/models/%s:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{" % MODEL.encode())
        stalled.settimeout(5)
        started = time.monotonic()
        assert stalled.recv(100) == b"" and time.monotonic() - started < 4  # closed by the server
        stalled.close()
        # idle connections up to the cap hold threads; one more is told 503 at once; idle ones time out
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
        time.sleep(0.2)
        extra = socket.create_connection(("127.0.0.1", port))
        extra.settimeout(5)
        assert extra.recv(100).startswith(b"HTTP/1.1 503")
        extra.close()
        time.sleep(1.5)  # past the read timeout: the idle connections are closed and their slots freed
        assert requests.get(url, timeout=5).status_code == 200
        for sock in idle:
            sock.close()
    finally:
        rest.shutdown()
        rest.server_close()


@pytest.fixture(scope="module")
def batched(tmp_path_factory):
    """A server with batching on; a long batch timeout so that concurrent requests surely share calls."""
    root = str(tmp_path_factory.mktemp("batched"))
    os.makedirs(os.path.join(root, MODEL))
    push(os.path.join(root, MODEL), 1)
    params = batching.BatchingParameters(max_batch_size=8, batch_timeout_micros=200_000, num_batch_threads=1)
    options = ServerOptions(grpc_port=0, rest_port=0, poll_seconds=0.2, batching=params)
    with Server(model_config.write_for(root, names=[MODEL]), options) as server:
        server.models.wait_for(MODEL, 1)
        yield server


def test_batched_requests_each_get_their_own_rows(batched):
    """Concurrent requests of 1-3 rows and histories of different lengths share calls; each gets exactly its rows."""
    answers, failures = {}, []
    barrier = threading.Barrier(12)

    def ask(i: int):
        rows = i % 3 + 1
        users = np.array([f"user{i}-{r}".encode() for r in range(rows)], dtype=object)
        history = (
            np.array([[b"a"] * (i % 4) + [b""] * (3 - i % 4)] * rows, dtype=object)
            if i % 2
            else np.array([[b"a"] * (i % 5)] * rows, dtype=object)
        )
        client = GrpcClient(f"127.0.0.1:{batched.grpc_port}")
        barrier.wait()
        try:
            answers[i] = (users, history, client.predict(MODEL, {"user_id": users, "history": history}, "echo"))
        except Exception as error:  # noqa: BLE001 - every failure is reported
            failures.append(repr(error))
        client.close()

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    for users, history, outputs in answers.values():
        assert outputs["user_id"].tolist() == users.tolist()
        assert outputs["history_length"].tolist() == [int((row != b"").sum()) for row in history]
        assert float(outputs["version"]) == 1.0  # an unbatched output reaches every request whole
    assert batched.batcher.requests == 12
    assert batched.batcher.batches < 12  # calls were shared
    # REST goes through the same batcher, and output_filter still applies
    body = requests.post(
        f"http://127.0.0.1:{batched.rest_port}/v1/models/{MODEL}:predict",
        json={"signature_name": "echo", "inputs": {"user_id": ["x"], "history": [["a", "b"]]}},
        timeout=30,
    ).json()
    assert body["outputs"]["user_id"] == ["x"] and body["outputs"]["history_length"] == [2]
    assert batched.batcher.requests == 13
    remote = GrpcClient(f"127.0.0.1:{batched.grpc_port}")
    assert set(remote.predict(MODEL, recommend_inputs(2), "recommend", output_filter=["scores"])) == {"scores"}
    remote.close()


def _row_call(servable, signature_name, signature, inputs):
    """A signature call in plain numpy for Batcher tests: doubles `x`; a row holding -1 is refused."""
    if (inputs["x"] == -1).any():
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "x holds -1")
    return {"y": inputs["x"] * 2}


class _Signature:
    """What Batcher reads of a SignatureDef: its outputs' shapes."""

    def __init__(self):
        from tensorflow.core.protobuf import meta_graph_pb2

        info = meta_graph_pb2.TensorInfo()
        info.tensor_shape.dim.add(size=-1)
        self.outputs = {"y": info}


class _Servable:
    name, version = "m", 1


def test_one_bad_request_does_not_fail_its_batch():
    batcher = batching.Batcher(batching.BatchingParameters(max_batch_size=16, batch_timeout_micros=300_000, num_batch_threads=1), _row_call)
    results, barrier = {}, threading.Barrier(6)

    def ask(i: int):
        barrier.wait()
        try:
            results[i] = batcher.call(_Servable, "s", _Signature(), {"x": np.array([i, -1 if i == 3 else i + 10])})
        except ServingError as error:
            results[i] = error

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batcher.stop()
    assert isinstance(results[3], ServingError) and "x holds -1" in results[3].message
    for i in (0, 1, 2, 4, 5):
        assert results[i]["y"].tolist() == [2 * i, 2 * (i + 10)]
    assert batcher.requests == 6 and batcher.batches < 6  # the bad request shared a call: its batch was rerun request by request


def test_a_full_batch_queue_refuses_with_unavailable():
    release = threading.Event()

    def slow(servable, signature_name, signature, inputs):
        release.wait(30)
        return {"y": inputs["x"]}

    batcher = batching.Batcher(batching.BatchingParameters(max_batch_size=1, max_enqueued_batches=1, num_batch_threads=1), slow)
    threads = [threading.Thread(target=batcher.call, args=(_Servable, "s", _Signature(), {"x": np.array([i])})) for i in range(2)]
    for thread in threads:  # one runs (blocked in `slow`), one waits in the queue
        thread.start()
        time.sleep(0.2)
    with pytest.raises(ServingError) as refused:
        batcher.call(_Servable, "s", _Signature(), {"x": np.array([9])})
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE and "queue is full" in refused.value.message
    release.set()
    for thread in threads:
        thread.join()
    batcher.stop()


def test_batching_parameters_read_tf_servings_text_format(tmp_path):
    params = batching.BatchingParameters(max_batch_size=64, batch_timeout_micros=500, num_batch_threads=4, max_enqueued_batches=10)
    assert batching.parse(params.to_text()) == params
    text = "# comment\nmax_batch_size { value: 8 }\nallowed_batch_sizes: 4\nallowed_batch_sizes: 8\npad_variable_length_inputs: true\n"
    assert batching.parse(text) == batching.BatchingParameters(max_batch_size=8)  # TF Serving's other fields are accepted
    bad = tmp_path / "batching_parameters.txt"
    for text, message in (
        ("max_batch_sise { value: 8 }", "unknown batching parameter 'max_batch_sise'"),
        ("max_batch_size: 8", "max_batch_size must read"),
        ("max_batch_size { value: 0 }", "max_batch_size must be an integer >= 1"),
        ("max_batch_size { value: 8 } }", "cannot read"),
    ):
        bad.write_text(text)
        with pytest.raises(ValueError, match=message) as error:
            batching.read(str(bad))
        assert str(bad) in str(error.value)


def test_recommend_asks_a_local_server_of_this_output_without_importing_tensorflow(tmp_path):
    """`mmtower recommend` without --server uses a server on this machine that serves the output's newest version,
    over REST, and so never imports TensorFlow (about a second instead of ~15 s)."""
    output = tmp_path / "output"
    base = output / "serving" / MODEL
    os.makedirs(base)
    push(str(base), 1)
    with Server(model_config.write_for(str(output / "serving"), names=[MODEL]), ServerOptions(grpc_port=0, rest_port=0)) as server:
        server.models.wait_for(MODEL, 1)
        url = f"http://127.0.0.1:{server.rest_port}"
        script = f"""
import sys
from app import recommend
from serving.client import RestClient
from towers.contract import RunPaths
paths = RunPaths({str(output)!r}, "tuxpaint")
assert recommend.local_server(paths, {url!r}) == {url!r}
assert recommend.local_server(paths, "http://127.0.0.1:9") is None  # nothing listens there
outputs = recommend.remote_outputs(RestClient({url!r}), {{"user_id": "u1", "history": ["a"]}})
assert outputs["item_ids"][0].tolist() == [b"a", b"b", b"c", b"d"], outputs
assert "tensorflow" not in sys.modules, "asking a server imported TensorFlow"
"""
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        subprocess.run([sys.executable, "-c", script], check=True, cwd=root, timeout=120)
        other = tmp_path / "other"
        os.makedirs(other / "serving" / MODEL / "2")  # another output whose newest version this server does not serve
        from app import recommend

        assert recommend.local_server(contract.RunPaths(str(other), "tuxpaint"), url) is None


def test_concurrent_fuzz_against_a_batching_server(tmp_path):
    """Four clients fuzzing at once a server that batches (its defaults, as `mmtower serve` runs): every request gets
    an answer, valid ones are batched with the others, and the server stays up."""
    base = tmp_path / MODEL
    os.makedirs(base)
    push(str(base), 1)
    options = ServerOptions(grpc_port=0, rest_port=None, batching=batching.BatchingParameters())
    with Server(model_config.write_for(str(tmp_path), names=[MODEL]), options) as server:
        server.models.wait_for(MODEL, 1)
        results = [None] * 4
        threads = [
            threading.Thread(target=lambda i=i: results.__setitem__(i, _fuzz_grpc(server.grpc_port, np.random.default_rng(i + 1), 300)))
            for i in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        answered = {}
        for result in results:
            for code, count in result.items():
                answered[code] = answered.get(code, 0) + count
        print("concurrent fuzz answers:", {str(k): v for k, v in answered.items()}, "batches", server.batcher.batches)
        assert set(answered) <= FUZZ_ANSWERS, answered
        assert sum(answered.values()) == 1200 and answered[grpc.StatusCode.OK] >= 100
        assert server.batcher.requests > 0
        assert GrpcClient(f"127.0.0.1:{server.grpc_port}").status(MODEL)[-1][1] == "AVAILABLE"

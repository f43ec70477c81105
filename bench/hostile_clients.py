"""Benchmark: `mmtower serve` under hostile clients while ordinary clients keep asking for recommendations.

Serves the pushed models of a run folder (`mmtower run` first) in its own
process. For `--seconds`, ordinary gRPC clients send `recommend` requests for
real users while hostile clients, each in its own thread, send:

- gRPC: tensors declaring 10^8 values in a few bytes; malformed TensorProtos;
  wrong dtypes and shapes; unknown models, versions and signatures;
- REST: JSON nested 100,000 deep; bodies shorter than their Content-Length
  (stalled); bodies over the size limit; garbage; unknown paths;
- connections opened and left idle (more than the server's connection cap).

Reported: requests sent per kind and the answers they got, ordinary requests'
failures and p50/p99 latency (against the same clients without hostile load,
measured first), and whether the server is still up and serving afterwards.

    .venv/bin/python -m bench.hostile_clients [--output output] [--seconds 30]

Writes bench/results/hostile_clients.md. Clients and server share this machine's cores.
"""

import argparse
import collections
import json
import os
import socket
import sys
import threading
import time

from towers import contract

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import requests  # noqa: E402
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2  # noqa: E402
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

from app.recommend import _dtype, query_arrays, signature_def_inputs  # noqa: E402
from bench import results  # noqa: E402
from bench.serving import free_port, ms  # noqa: E402
from mmdata import registry  # noqa: E402
from mmdata.records import read_records
from serving.client import GrpcClient  # noqa: E402
from towers.contract import USERS_FILE, RunPaths

ORDINARY_CLIENTS = 2
IDLE_CONNECTIONS = 400


def start(output: str):
    import subprocess

    grpc_port, rest_port = free_port(), free_port()
    mmtower = os.path.join(os.path.dirname(sys.executable), "mmtower")
    process = subprocess.Popen(
        [mmtower, "serve", "--output", output, "--port", str(grpc_port), "--rest-port", str(rest_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    client = GrpcClient(f"127.0.0.1:{grpc_port}")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if client.status(contract.RECOMMENDER)[-1][1] == "AVAILABLE":
                return process, grpc_port, rest_port, client
        except Exception:
            pass
        if process.poll() is not None:
            raise RuntimeError(f"mmtower serve exited with {process.returncode}: {process.stderr.read()[-2000:]}")
        time.sleep(0.5)
    raise TimeoutError("the server did not load the models in 5 minutes")


def ordinary(port: int, inputs: list[dict], stop: threading.Event, out: dict) -> None:
    client = GrpcClient(f"127.0.0.1:{port}")
    i = 0
    while not stop.is_set():
        started = time.perf_counter()
        try:
            client.predict(contract.RECOMMENDER, inputs[i % len(inputs)], contract.RECOMMEND_SIGNATURE)
            out["latency"].append(time.perf_counter() - started)
        except Exception as error:
            out["failures"].append(repr(error)[:200])
        i += 1
    client.close()


def _request(name: str, signature: str, **tensors) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = name, signature
    for key, proto in tensors.items():
        request.inputs[key].CopyFrom(proto)
    return request


def _declared(size: int) -> tensor_pb2.TensorProto:
    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size)])
    return tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=shape, string_val=[b"u"])


def hostile_grpc(port: int, stop: threading.Event, answers: collections.Counter) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    bad_content = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=4)]),
        tensor_content=b"xyz",
    )
    kinds = {
        "grpc: 10^8 declared values": _request(contract.RECOMMENDER, contract.RECOMMEND_SIGNATURE, user_id=_declared(10**8)),
        "grpc: malformed TensorProto": _request(contract.RECOMMENDER, contract.RECOMMEND_SIGNATURE, user_id=bad_content),
        "grpc: unknown model": _request("nope", contract.RECOMMEND_SIGNATURE),
        "grpc: unknown signature": _request(contract.RECOMMENDER, "nope"),
        "grpc: missing inputs": _request(contract.RECOMMENDER, contract.RECOMMEND_SIGNATURE, user_id=_declared(1)),
    }
    while not stop.is_set():
        for kind, request in kinds.items():
            try:
                stub.Predict(request, timeout=10)
                answers[(kind, "OK")] += 1
            except grpc.RpcError as error:
                answers[(kind, error.code().name)] += 1
    channel.close()


def hostile_rest(port: int, stop: threading.Event, answers: collections.Counter) -> None:
    url = f"http://127.0.0.1:{port}/v1/models/{contract.RECOMMENDER}:predict"
    deep = "[" * 100_000 + "]" * 100_000
    kinds = {
        "rest: JSON nested 100,000 deep": lambda: requests.post(url, data=deep, timeout=10),
        "rest: garbage body": lambda: requests.post(url, data=b"\x00\xff" * 100, timeout=10),
        "rest: body over the size limit": lambda: requests.post(url, data=b" " * (17 << 20), timeout=30),
        "rest: unknown path": lambda: requests.get(f"http://127.0.0.1:{port}/etc/passwd", timeout=10),
    }
    while not stop.is_set():
        for kind, call in kinds.items():
            try:
                answers[(kind, str(call().status_code))] += 1
            except requests.RequestException as error:
                answers[(kind, type(error).__name__)] += 1


def stalled_rest(port: int, stop: threading.Event, answers: collections.Counter) -> None:
    while not stop.is_set():
        kind = "rest: body shorter than its Content-Length"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(b"POST /v1/models/recommender:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
                started = time.monotonic()
                data = sock.recv(100)
                answers[
                    (
                        kind,
                        f"closed by the server after {time.monotonic() - started:.0f} s" if not data else data.split(b"\r\n")[0].decode(),
                    )
                ] += 1
        except OSError as error:
            answers[(kind, type(error).__name__)] += 1


def idle_connections(port: int, stop: threading.Event, answers: collections.Counter) -> None:
    sockets = []
    for _ in range(IDLE_CONNECTIONS):
        try:
            sockets.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        except OSError as error:
            answers[("rest: idle connection", type(error).__name__)] += 1
    answers[("rest: idle connection", "opened")] += len(sockets)
    stop.wait()
    for sock in sockets:
        sock.close()


def measure(grpc_port: int, inputs: list[dict], seconds: float, hostile: list) -> tuple[dict, collections.Counter]:
    stop, answers = threading.Event(), collections.Counter()
    out = {"latency": [], "failures": []}
    threads = [threading.Thread(target=ordinary, args=(grpc_port, inputs, stop, out)) for _ in range(ORDINARY_CLIENTS)]
    threads += [threading.Thread(target=target, args=(port, stop, answers)) for target, port in hostile]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return out, answers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="output", help="the run folder whose pushed models are served (default: ./output)")
    parser.add_argument("--dataset", default=registry.DEFAULT_DATASET, choices=sorted(registry.DATASETS))
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each phase (default: 30)")
    args = parser.parse_args()
    paths = RunPaths(os.path.abspath(args.output), args.dataset)
    process, grpc_port, rest_port, client = start(paths.output)
    try:
        signature = client.metadata(contract.RECOMMENDER)[contract.RECOMMEND_SIGNATURE]
        dtypes = {name: _dtype(info) for name, info in signature_def_inputs(signature).items()}
        inputs = []
        for user in read_records(os.path.join(paths.data_dir, USERS_FILE))[:100]:
            arrays = query_arrays(dtypes, user, int(time.time()))
            arrays[contract.EXCLUDE_SEEN_INPUT] = np.array([True])
            inputs.append(arrays)
        calm, _ = measure(grpc_port, inputs, args.seconds, [])
        hostile = [
            (hostile_grpc, grpc_port),
            (hostile_grpc, grpc_port),
            (hostile_rest, rest_port),
            (stalled_rest, rest_port),
            (idle_connections, rest_port),
        ]
        stormy, answers = measure(grpc_port, inputs, args.seconds, hostile)
        alive = process.poll() is None and client.status(contract.RECOMMENDER)[-1][1] == "AVAILABLE"
        after = client.predict(contract.RECOMMENDER, inputs[0], contract.RECOMMEND_SIGNATURE)
        stderr_lines = 0
    finally:
        process.terminate()
        try:
            _, stderr = process.communicate(timeout=30)
            stderr_lines = stderr.count("Traceback")
        except Exception:
            stderr = ""
    lines = [
        f"# `mmtower serve` under hostile clients ({paths.dataset}, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores)",
        "",
        f"{ORDINARY_CLIENTS} ordinary gRPC clients send `recommend` for real users for {args.seconds:.0f} s alone, then {args.seconds:.0f} s "
        "beside the hostile clients below (all threads of one process; the server in its own).",
        "",
        "| ordinary requests | sent | failed | p50 ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    for label, run in (("alone", calm), ("beside hostile clients", stormy)):
        lat = np.array(run["latency"])
        lines.append(f"| {label} | {len(lat) + len(run['failures']):,} | {len(run['failures'])} | {ms(lat, 50)} | {ms(lat, 99)} |")
    lines += ["", "| hostile request | answer | count |", "|---|---|---|"]
    for (kind, answer), count in sorted(answers.items()):
        lines.append(f"| {kind} | {answer} | {count:,} |")
    lines += [
        "",
        f"Server alive and serving afterwards: **{alive and len(after[contract.ITEM_IDS_OUTPUT][0]) > 0}**; tracebacks in its log: {stderr_lines}.",
        f"Failures of ordinary requests (first 3): {json.dumps(stormy['failures'][:3])}",
        "",
        f"Command: `.venv/bin/python -m bench.hostile_clients --output {args.output} --dataset {args.dataset} --seconds {args.seconds:g}`",
    ]
    results.write("hostile_clients", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: `recommend` over TF Serving's gRPC API on loopback, brute force vs ScaNN, 100k and 1M items.

One trained model (MovieLens-100K through the pipeline, `--retrieval-index
scann`, item tower on id + metadata so the catalog tables stay small) is grown
to each catalog size with synthetic items (`add_items`; embeddings drawn
around the real items' embeddings, so queries see a realistic neighbourhood),
then saved twice: with the ScaNN index rebuilt over every item, and with the
index switched off (`indexed_items` 0: every item scored exactly, the
brute-force reference, same graph and weights). For each variant:

- in-process latency of the SavedModel's `recommend` and `query` (batch 1);
- `mmtower serve` in its own process, batching off and on (deploy/batching_parameters.txt,
  the file the TF Serving manifests use); 1, 4, 16 and 64 concurrent gRPC clients
  (threads of this process) -> p50/p95/p99 and QPS;
- server overhead at 1 client: gRPC and in-process (numpy in, numpy out) calls
  interleaved request by request, and where the extra time goes (an almost empty
  call's round trip, proto conversions, the rest);
- ScaNN's recall@10 of `query` against the exact variant, over the same users;
- search alone: the exact matmul + top-k against ScaNN searching 10%, 20% and
  30% of its tree's leaves, on the same embeddings and real users' queries
  (speed-up and recall@10: the project's bar is 10x at 1M items with recall@10
  >= 0.95).

    .venv/bin/python -m bench.serving [--sizes 100000,1000000] [--output /tmp/mmtower-serving-bench]

Results: bench/results/serving.md. Client and server share this machine's cores.
"""

import argparse
import os
import socket
import subprocess
import sys
import threading
import time

from towers import contract

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning,ignore::DeprecationWarning")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from app.recommend import query_arrays  # noqa: E402
from bench import results  # noqa: E402
from components.slices import COLD, NO_CONTENT  # noqa: E402
from mmdata.records import Manifest, read_records, to_example
from pipeline import local_runner  # noqa: E402
from pipeline.config import Options  # noqa: E402
from serving import config as model_config  # noqa: E402
from serving.client import GrpcClient  # noqa: E402
from serving.server import load_custom_ops  # noqa: E402
from towers import exporter, scann_index  # noqa: E402
from towers import features as F  # noqa: E402
from towers.contract import USERS_FILE
from towers.hparams import (
    SCANN,  # noqa: E402
    HParams,  # noqa: E402
)

CLIENTS = (1, 4, 16, 64)
LEAVES_SEARCHED = (0.1, 0.2, 0.3)  # shares of the tree's leaves for the search-only comparison
REQUESTS = {1: 300, 4: 120, 16: 40, 64: 12}  # per client
BATCHING_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "deploy", "batching_parameters.txt")
USERS = 200


def train(output: str) -> str:
    hparams = HParams(item_modalities=("id", "metadata"), retrieval_index=SCANN)
    config = local_runner.RunConfig(
        dataset="movielens-100k", output=output, options=Options(hparams=hparams, min_recall_at_100=0.0, min_auc=0.0)
    )
    paths, _ = local_runner.run(config)
    return paths


def grow(model_dir: str, size: int, seed: int = 0):
    """Loads the trained recommender and appends synthetic items until the catalog has `size`."""
    model = tf.saved_model.load(model_dir)
    real = np.asarray(model.catalog_embeddings.numpy(), np.float32)  # a bfloat16 catalog too
    count = size - len(real)
    rng = np.random.default_rng(seed)
    for start in range(0, count, 200_000):
        n = min(200_000, count - start)
        base = real[rng.integers(len(real), size=n)]
        noise = rng.normal(scale=np.linalg.norm(real, axis=1).mean() / np.sqrt(real.shape[1]), size=base.shape)
        embeddings = (base + noise).astype(np.float32)
        embeddings *= (np.linalg.norm(real, axis=1).mean() / np.linalg.norm(embeddings, axis=1))[:, None]
        items = {
            contract.ITEM_IDS_INPUT: tf.constant([f"synthetic-{start + i:07d}" for i in range(n)]),
            contract.EMBEDDINGS_OUTPUT: tf.constant(embeddings),
        }
        if int(model.catalog_profile_dim.numpy()):
            items[F.CONTENT_PROFILE] = tf.zeros([n, int(model.catalog_profile_dim.numpy())])
        if getattr(model, "catalog_modality_weights", None) is not None:  # the explanations' per-item mix: the real items' mean
            mix = tf.reduce_mean(model.catalog_modality_weights, axis=0, keepdims=True)
            items[contract.MODALITY_WEIGHTS_OUTPUT] = tf.tile(mix, [n, 1])
        for name in (F.ITEM_POPULARITY, F.ITEM_FRESHNESS):
            items[name] = tf.fill([n], COLD)
        items[F.ITEM_MODALITIES] = tf.fill([n], NO_CONTENT)
        model.add_items(items)
    return model


def save(model, folder: str) -> str:
    exporter.save(model, os.path.join(folder, contract.RECOMMENDER, "1"), dict(model.signatures))
    return model_config.write_for(folder, names=[contract.RECOMMENDER])


def latencies(function, inputs: list[dict], repeats: int = 1) -> np.ndarray:
    function(**inputs[0])  # warm up
    out = []
    for _ in range(repeats):
        for request in inputs:
            started = time.perf_counter()
            function(**request)
            out.append(time.perf_counter() - started)
    return np.array(out)


def numpy_call(function):
    """An in-process call as an application makes it: numpy arrays in, numpy arrays out (what the server does too)."""

    def call(**arrays):
        return {name: value.numpy() for name, value in function(**{k: tf.constant(v) for k, v in arrays.items()}).items()}

    return call


def overhead(port: int, function, inputs: list[dict], repeats: int = 3) -> dict:
    """gRPC vs in-process `recommend`, interleaved request by request (the same machine state for both), and where
    the gRPC call's extra time goes: the round trip of an almost empty call (GetModelStatus), the request and
    response conversions on both sides, and the rest (thread hand-offs in client and server, scheduling)."""
    from tensorflow_serving.apis import predict_pb2

    from serving import tensors

    client = GrpcClient(f"127.0.0.1:{port}")
    local = numpy_call(function)
    local(**inputs[0])
    client.predict(contract.RECOMMENDER, inputs[0], contract.RECOMMEND_SIGNATURE)
    seconds = {"in-process": [], "gRPC": [], "empty round trip": []}
    for _ in range(repeats):
        for request in inputs:
            for name, call in (
                ("in-process", lambda: local(**request)),
                ("gRPC", lambda: client.predict(contract.RECOMMENDER, request, contract.RECOMMEND_SIGNATURE)),
                ("empty round trip", lambda: client.status(contract.RECOMMENDER)),
            ):
                started = time.perf_counter()
                call()
                seconds[name].append(time.perf_counter() - started)
    outputs = local(**inputs[0])

    def round_trip(message, arrays: dict, field: str) -> None:  # numpy -> proto -> bytes -> proto -> numpy
        for name, value in arrays.items():
            getattr(message, field)[name].CopyFrom(tensors.to_proto(value))
        parsed = type(message).FromString(message.SerializeToString())
        [tensors.to_array(p) for p in getattr(parsed, field).values()]

    def conversions():
        round_trip(predict_pb2.PredictRequest(), inputs[0], "inputs")  # client, then server
        round_trip(predict_pb2.PredictResponse(), outputs, "outputs")  # server, then client

    seconds["conversions"] = latencies(conversions, [{}] * 200)
    client.close()
    p50 = {name: float(np.median(values)) for name, values in seconds.items()}
    p50["rest"] = p50["gRPC"] - p50["in-process"] - p50["empty round trip"] - p50["conversions"]
    return p50


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(config_path: str, batching: bool = False) -> tuple[subprocess.Popen, int]:
    port = free_port()
    mmtower = os.path.join(os.path.dirname(sys.executable), "mmtower")
    process = subprocess.Popen(
        [mmtower, "serve", "--model-config", config_path, "--port", str(port), "--rest-port", "0"]
        + (["--batching-parameters-file", BATCHING_FILE] if batching else ["--no-batching"]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = GrpcClient(f"127.0.0.1:{port}")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            if client.status(contract.RECOMMENDER)[-1][1] == "AVAILABLE":
                return process, port
        except Exception:
            pass
        if process.poll() is not None:
            raise RuntimeError(f"mmtower serve exited with {process.returncode}")
        time.sleep(0.5)
    raise TimeoutError("the server did not load the model in 10 minutes")


def load_test(port: int, inputs: list[dict], clients: int) -> tuple[np.ndarray, float, int]:
    """-> (latencies, QPS, failed requests) of `clients` threads each sending REQUESTS[clients] recommend calls."""
    per_client = REQUESTS[clients]
    lock, seconds, failed = threading.Lock(), [], [0]

    def work(offset: int):
        client = GrpcClient(f"127.0.0.1:{port}")
        client.predict(contract.RECOMMENDER, inputs[0], contract.RECOMMEND_SIGNATURE)  # connect
        barrier.wait()
        mine = []
        for i in range(per_client):
            started = time.perf_counter()
            try:
                client.predict(contract.RECOMMENDER, inputs[(offset + i) % len(inputs)], contract.RECOMMEND_SIGNATURE)
            except Exception:
                with lock:
                    failed[0] += 1
            mine.append(time.perf_counter() - started)
        with lock:
            seconds.extend(mine)
        client.close()

    barrier = threading.Barrier(clients + 1)
    threads = [threading.Thread(target=work, args=(i * 7,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return np.array(seconds), len(seconds) / (time.perf_counter() - started), failed[0]


def query_embeddings(model_dir: str, paths, n: int) -> np.ndarray:
    """The query tower's embeddings [n, dim] of the first `n` users (the `embed_query` signature)."""
    model = tf.saved_model.load(model_dir)
    users = read_records(os.path.join(paths.data_dir, USERS_FILE))[:n]
    query_features = Manifest.read(paths.data_dir).roles.query_features
    examples = [
        to_example({k: v for k, v in {**user, F.TIMESTAMP: 893_000_000}.items() if k in query_features}).SerializeToString()
        for user in users
    ]
    return model.signatures[contract.EMBED_QUERY_SIGNATURE](examples=tf.constant(examples))[contract.EMBEDDINGS_OUTPUT].numpy()


def search_only(embeddings: np.ndarray, queries: np.ndarray, searcher, k: int = 100) -> list[str]:
    """Search alone, batch 1, each as a tf.function: the exact matmul + top-k over every item vs ScaNN searching a share
    of the tree's leaves -> table rows (p50, p99, speed-up, ScaNN's recall@10 against the exact top 10)."""
    table = tf.constant(embeddings)
    exact = tf.function(lambda q: tf.math.top_k(tf.matmul(q, table, transpose_b=True), k=k).indices)
    rows = [tf.constant(queries[i : i + 1]) for i in range(len(queries))]

    def timed(function):
        function(rows[0])  # trace
        seconds, tops = [], []
        for q in rows:
            started = time.perf_counter()
            top = function(q).numpy()
            seconds.append(time.perf_counter() - started)
            tops.append(top[0, :10])
        return np.array(seconds), tops

    exact_seconds, truth = timed(exact)
    lines = [f"| {len(embeddings):,} | exact (matmul + top-k) | all | {ms(exact_seconds, 50)} | {ms(exact_seconds, 99)} | 1.0x | 1.000 |"]
    leaves = scann_index.num_leaves(len(embeddings))
    for share in LEAVES_SEARCHED if leaves else (None,):  # a small catalog has no tree: one row, every item scored
        searched = max(1, int(leaves * share)) if leaves else None
        ann = tf.function(lambda q, searched=searched: searcher.search_batched(q, final_num_neighbors=k, leaves_to_search=searched).indices)
        seconds, tops = timed(ann)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, tops)])
        speedup = np.median(exact_seconds) / np.median(seconds)
        where = f"{searched} of {leaves}" if leaves else "no tree"
        lines.append(f"| {len(embeddings):,} | ScaNN | {where} | {ms(seconds, 50)} | {ms(seconds, 99)} | {speedup:.1f}x | {recall:.3f} |")
    return lines


def ms(values: np.ndarray, q: float) -> str:
    return f"{np.percentile(values, q) * 1000:.2f}"


def user_inputs(paths, signature, n: int) -> list[dict]:
    users = read_records(os.path.join(paths.data_dir, USERS_FILE))[:n]
    dtypes = {name: spec.dtype for name, spec in signature.structured_input_signature[1].items()}
    out = []
    for user in users:
        arrays = query_arrays(dtypes, user, 893_000_000)
        if contract.EXCLUDE_SEEN_INPUT in dtypes:
            arrays[contract.EXCLUDE_SEEN_INPUT] = np.array([True])
        out.append(arrays)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000", help="catalog sizes (comma-separated)")
    parser.add_argument("--output", default="/tmp/mmtower-serving-bench")
    args = parser.parse_args()
    load_custom_ops()
    started = time.monotonic()
    paths = train(os.path.join(args.output, "run"))
    trained = os.path.join(paths.serving_model_dir(), str(model_config.ready_versions(paths.serving_model_dir())[-1]))
    print(f"[{time.monotonic() - started:6.0f}s] trained: {trained}", flush=True)
    lines = [
        f"# Serving benchmark ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, client and server on the same machine)",
        "",
        "Model: MovieLens-100K two-tower + DCN-v2 ranker (item tower: id + metadata), grown with synthetic items; "
        "`recommend` = retrieve 100 (excluding seen items), rank, return 100. Latencies in ms, batch of 1.",
        "",
        "| items | retrieval | in-process `query` p50 | in-process `recommend` p50 / p99 | server batching | gRPC clients | gRPC p50 / p95 / p99 | QPS | failed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    overhead_lines = [
        "",
        "Server overhead at 1 client, batching off: gRPC and in-process calls interleaved request by request (in-process = numpy "
        "in, numpy out, as an application calls the SavedModel); the gRPC call's extra time split into an almost empty call's "
        "round trip (GetModelStatus), the proto conversions on both sides, and the rest (thread hand-offs, scheduling). p50 ms.",
        "",
        "| items | retrieval | in-process | gRPC | overhead | empty round trip | conversions | rest |",
        "|---|---|---|---|---|---|---|---|",
    ]
    summary, findings = [], []
    search_lines = [
        "",
        f"Search alone (the same item embeddings; {USERS} query-tower embeddings of real users, batch 1; ScaNN's recall@10 against the exact top 10):",
        "",
        "| items | search | leaves searched | p50 ms | p99 ms | speed-up vs exact p50 | recall@10 |",
        "|---|---|---|---|---|---|---|",
    ]
    queries = query_embeddings(trained, paths, USERS)
    for size in (int(s) for s in args.sizes.split(",")):
        model = grow(trained, size)
        tops = {}
        for variant in ("brute force", "ScaNN"):
            if variant == "ScaNN":
                build = time.monotonic()
                searcher = scann_index.build_searcher(model.catalog_embeddings.numpy(), 100)
                build = time.monotonic() - build
                scann_index.replace(model.scann_index, searcher)
                model.indexed_items.assign(size)
                rows = search_only(model.catalog_embeddings.numpy(), queries, searcher)
                search_lines += rows
                print("\n".join(rows), flush=True)
            else:
                model.indexed_items.assign(0)
            folder = os.path.join(args.output, f"{size}-{variant.replace(' ', '-').lower()}")
            config_path = save(model, folder)
            served = tf.saved_model.load(os.path.join(folder, contract.RECOMMENDER, "1"))
            recommend_fn, query_fn = served.signatures[contract.RECOMMEND_SIGNATURE], served.signatures[contract.QUERY_SIGNATURE]
            inputs = user_inputs(paths, recommend_fn, USERS)
            tensors = [{k: tf.constant(v) for k, v in request.items()} for request in inputs]
            query_inputs = [{k: v for k, v in request.items() if k != contract.EXCLUDE_SEEN_INPUT} for request in tensors]
            tops[variant] = [query_fn(**request)[contract.ITEM_IDS_OUTPUT].numpy()[0, :10] for request in query_inputs]
            in_query = latencies(query_fn, query_inputs)
            in_recommend = latencies(recommend_fn, tensors)
            for batching in (False, True):
                process, port = start_server(config_path, batching)
                try:
                    if not batching:
                        p50 = overhead(port, recommend_fn, inputs)
                        overhead_lines.append(
                            f"| {size:,} | {variant} | {p50['in-process'] * 1000:.2f} | {p50['gRPC'] * 1000:.2f} | "
                            f"{p50['gRPC'] / p50['in-process']:.2f}x | {p50['empty round trip'] * 1000:.2f} | "
                            f"{p50['conversions'] * 1000:.2f} | {p50['rest'] * 1000:.2f} |"
                        )
                        print(overhead_lines[-1], flush=True)
                    for clients in CLIENTS:
                        remote, qps, failed = load_test(port, inputs, clients)
                        lines.append(
                            f"| {size:,} | {variant} | {ms(in_query, 50)} | {ms(in_recommend, 50)} / {ms(in_recommend, 99)} | "
                            f"{'on' if batching else 'off'} | {clients} | {ms(remote, 50)} / {ms(remote, 95)} / {ms(remote, 99)} | "
                            f"{qps:.0f} | {failed} |"
                        )
                        print(lines[-1], flush=True)
                finally:
                    process.terminate()
                    process.wait()
            del served
            summary.append((size, variant, float(np.median(in_query)), float(np.median(in_recommend))))
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(tops["brute force"], tops["ScaNN"])])
        brute = next(s for s in summary if s[0] == size and s[1] == "brute force")
        scann = next(s for s in summary if s[0] == size and s[1] == "ScaNN")
        summary_line = (
            f"{size:,} items: ScaNN `query` {brute[2] / scann[2]:.1f}x faster than brute force (p50 {brute[2] * 1000:.2f} -> {scann[2] * 1000:.2f} ms), "
            f"`recommend` {brute[3] / scann[3]:.1f}x; ScaNN recall@10 vs exact {recall:.3f} over {USERS} users; index build {build:.0f} s"
        )
        print(summary_line, flush=True)
        findings.append(summary_line)
    lines += overhead_lines + [""] + [f"- {line}" for line in findings] + search_lines
    lines += [
        "",
        f"Command: `.venv/bin/python -m bench.serving --sizes {args.sizes} --output {args.output}` ({time.monotonic() - started:.0f} s in all)",
    ]
    results.write("serving", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

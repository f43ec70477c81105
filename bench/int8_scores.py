"""Benchmark: brute-force scores over int8 candidate embeddings in TensorFlow on CPU, vs float32 and bfloat16.

What `--catalog-precision` could add as "int8": the candidate embeddings [N, dim]
stored as int8 (a quarter of float32's bytes). TF has two ways to score them:
its quantized MatMul kernel (`QuantizedMatMul`, quint8 x quint8 -> qint32, the
query quantized per request) or a cast of the table to a float type per
request before the MatMul. Both are timed here against what the recommender
does now (float32, bfloat16), at batch 1 on unit vectors, with the recall@10
of each against float32's exact top 10.

    .venv/bin/python -m bench.int8_scores [--items 1000000] [--dim 64]

Writes bench/results/int8_scores.md.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench import results  # noqa: E402


def scorers(embeddings: np.ndarray) -> dict:
    """name -> (tf.function query [1, dim] -> scores [1, N], bytes held per catalog)."""
    transposed = embeddings.T.copy()
    as_float32 = tf.constant(transposed)
    as_bfloat16 = tf.cast(as_float32, tf.bfloat16)
    scale = np.abs(embeddings).max()  # one symmetric range for the whole table
    as_int8 = tf.constant(np.round(transposed / scale * 127).astype(np.int8))
    quantized = tf.quantization.quantize(as_float32, -scale, scale, tf.quint8, mode="MIN_FIRST")

    def quantized_matmul(query):
        q = tf.quantization.quantize(query, -1.0, 1.0, tf.quint8, mode="MIN_FIRST")
        out, low, high = tf.raw_ops.QuantizedMatMul(
            a=q.output,
            b=quantized.output,
            min_a=q.output_min,
            max_a=q.output_max,
            min_b=quantized.output_min,
            max_b=quantized.output_max,
            Toutput=tf.qint32,
        )
        return tf.quantization.dequantize(out, low, high, mode="MIN_FIRST")

    size = embeddings.size
    return {
        "float32 (default)": (tf.function(lambda q: tf.matmul(q, as_float32)), 4 * size),
        "bfloat16 (--catalog-precision bfloat16)": (
            tf.function(lambda q: tf.cast(tf.matmul(tf.cast(q, tf.bfloat16), as_bfloat16), tf.float32)),
            2 * size,
        ),
        "int8, QuantizedMatMul (quint8 x quint8 -> qint32)": (tf.function(quantized_matmul), size),
        "int8, cast to bfloat16 per request": (
            tf.function(lambda q: tf.cast(tf.matmul(tf.cast(q, tf.bfloat16), tf.cast(as_int8, tf.bfloat16)), tf.float32)),
            size,
        ),
        "int8, cast to float32 per request": (tf.function(lambda q: tf.matmul(q, tf.cast(as_int8, tf.float32))), size),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=50)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(args.items, args.dim)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    queries = rng.normal(size=(args.queries, 1, args.dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=2, keepdims=True)
    paths = scorers(embeddings)
    exact = [set(np.argsort(-paths["float32 (default)"][0](q).numpy()[0])[:10]) for q in queries]
    times = {name: [] for name in paths}
    recalls = {name: [] for name in paths}
    for name, (score, _) in paths.items():
        score(queries[0])  # trace
    for i, query in enumerate(queries):  # every path on the same query in turn
        for name, (score, _) in paths.items():
            started = time.perf_counter()
            scores = score(query).numpy()[0]
            times[name].append(time.perf_counter() - started)
            recalls[name].append(len(exact[i] & set(np.argpartition(-scores, 10)[:10])) / 10)
    lines = [
        f"# int8 candidate embeddings: brute-force scoring in TF on CPU ({os.cpu_count()} cores, {time.strftime('%Y-%m-%d')})",
        "",
        f"{args.items:,} unit vectors of {args.dim} dims, batch 1, {args.queries} queries, every path on the same query in turn.",
        "",
        "| scores | table MiB | p50 ms | p99 ms | recall@10 vs float32 |",
        "|---|---|---|---|---|",
    ]
    for name, (_, size) in paths.items():
        ms = np.array(times[name]) * 1000
        lines.append(
            f"| {name} | {size / 2**20:,.0f} | {np.percentile(ms, 50):.2f} | {np.percentile(ms, 99):.2f} | {np.mean(recalls[name]):.3f} |"
        )
        print(lines[-1], flush=True)
    lines += ["", f"Command: `.venv/bin/python -m bench.int8_scores --items {args.items} --dim {args.dim} --queries {args.queries}`"]
    results.write("int8_scores", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

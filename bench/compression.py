"""Benchmark: the served recommender's candidate embeddings stored in float32 vs bfloat16 (`--catalog-precision`).

On MovieLens-100K (the pipeline's temporal split), two runs into one output
folder that differ only in HParams.catalog_precision (the same seed; the
Trainer reruns, so both rows also carry its run-to-run noise: the table shows
the training loss of each). For each:

- quality on the eval split from the RetrievalEvaluator: served `recommend`
  and retrieval Recall@10 / NDCG@10, and the change against float32;
- the recommender SavedModel as trained: size on disk;
- grown to --size items (synthetic items around the real ones, as
  bench/serving does): size on disk, load time (tf.saved_model.load), and
  in-process `recommend` p50 / p99 (batch 1, 200 users, brute force).

    .venv/bin/python -m bench.compression [--size 1000000] [--output /tmp/mmtower-compression]

Writes bench/results/compression.md.
"""

import argparse
import os
import sys
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning,ignore::DeprecationWarning")

import tensorflow as tf  # noqa: E402

from app import summary  # noqa: E402
from bench import results  # noqa: E402
from bench import serving as serving_bench  # noqa: E402
from pipeline import local_runner  # noqa: E402
from pipeline.config import Options  # noqa: E402
from towers import contract  # noqa: E402
from towers.catalog import BFLOAT16, FLOAT32  # noqa: E402
from towers.hparams import HParams  # noqa: E402

DATASET = "movielens-100k"
METRICS = ("recall_at_10", "ndcg_at_10")


def megabytes(folder: str) -> float:
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(folder) for name in names) / 2**20


def train(output: str, precision: str):
    config = local_runner.RunConfig(
        dataset=DATASET,
        output=output,
        options=Options(
            hparams=HParams(item_modalities=("id", "metadata"), catalog_precision=precision), min_recall_at_100=0.0, min_auc=0.0
        ),
    )
    paths, _ = local_runner.run(config)
    return paths, summary.read(paths)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1_000_000, help="catalog size the models are grown to")
    parser.add_argument("--output", default="/tmp/mmtower-compression")
    args = parser.parse_args()
    started = time.monotonic()
    rows, reference = [], {}
    for precision in (FLOAT32, BFLOAT16):
        paths, run = train(os.path.join(args.output, "run"), precision)
        trained = os.path.join(run.model_uri, "Format-Serving")
        print(f"[{time.monotonic() - started:6.0f}s] trained ({precision}): {trained}", flush=True)
        model = serving_bench.grow(trained, args.size)
        folder = os.path.join(args.output, f"{precision}-{args.size}")
        serving_bench.save(model, folder)
        del model
        version = os.path.join(folder, contract.RECOMMENDER, "1")
        load_started = time.perf_counter()
        served = tf.saved_model.load(version)
        load_seconds = time.perf_counter() - load_started
        recommend = served.signatures[contract.RECOMMEND_SIGNATURE]
        inputs = serving_bench.user_inputs(paths, recommend, serving_bench.USERS)
        seconds = serving_bench.latencies(recommend, [{k: tf.constant(v) for k, v in x.items()} for x in inputs])
        quality = {
            path: {name: getattr(run, attribute)[name] for name in METRICS}
            for path, attribute in (("recommend", "recommend_metrics"), ("retrieval", "model_metrics"))
        }
        reference = reference or quality
        change = lambda path, name: f"{quality[path][name]:.4f} ({(quality[path][name] / reference[path][name] - 1) * 100:+.1f}%)"
        rows.append(
            f"| {precision} | {megabytes(trained):.1f} | {megabytes(version):.1f} | {load_seconds:.2f} | "
            f"{serving_bench.ms(seconds, 50)} / {serving_bench.ms(seconds, 99)} | "
            + " | ".join(change(path, name) for path in ("recommend", "retrieval") for name in METRICS)
            + " |"
        )
        print(rows[-1], flush=True)
        del served
    lines = [
        f"# Compression: the recommender's candidate embeddings in float32 vs bfloat16 ({os.cpu_count()} cores, {time.strftime('%Y-%m-%d')})",
        "",
        f"{DATASET}, temporal split, item tower on id + metadata; two runs differing only in `--catalog-precision`. "
        f"Sizes in MiB; grown = {args.size:,} items (synthetic ones added, as bench/serving); latency in ms, brute force, batch 1, "
        f"{serving_bench.USERS} users; quality on the eval split, change against float32 in brackets.",
        "",
        f"| precision | SavedModel as trained | grown to {args.size:,} items | load s | `recommend` p50 / p99 | served R@10 | served NDCG@10 | retrieval R@10 | retrieval NDCG@10 |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Command: `.venv/bin/python -m bench.compression --size {args.size} --output {args.output}` ({time.monotonic() - started:.0f} s in all)",
    ]
    results.write("compression", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

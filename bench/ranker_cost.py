"""Benchmark: what the ranking model costs `recommend`, and what a smaller (distilled) ranker could save.

Times the DCN-v2 ranking model alone on one request's candidates (120 rows:
100 retrieved + 20 new items), at the default size and at a much smaller
one (what distillation into a small student would serve), with tuxpaint's
vocabulary sizes and content width; weights are random (the cost does not
depend on them). Compare with `recommend`'s p50 at 100k items (docs/serving.md:
8.2 ms on 2 cores).

    .venv/bin/python -m bench.ranker_cost [--rows 120] [--calls 500]

Writes bench/results/ranker_cost.md.
"""

import argparse
import os
import sys
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench import results  # noqa: E402
from towers import features as F  # noqa: E402
from towers.hparams import HParams  # noqa: E402
from towers.ranking import RankingModel  # noqa: E402

VOCABULARIES = {F.VOCAB_USER: 2138, F.VOCAB_ITEM: 657}  # the default tuxpaint run's
CONTENT_DIM = 1864  # text 384 + image 1280 + audio 200
SIZES = {
    "default (2 cross layers, projection 32, deep 64-32)": HParams(),
    "small (1 cross layer, projection 16, deep 16)": HParams(ranking_cross_layers=1, ranking_projection_dim=16, ranking_hidden_units=(16,)),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=120, help="candidates per request")
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    n, hp = args.rows, HParams()
    inputs = {
        F.USER_INDEX: tf.zeros([n], tf.int64),
        F.TIME_CONTEXT: tf.zeros([n, F.TIME_CONTEXT_DIM]),
        F.QUERY_EMBEDDING: tf.random.normal([n, hp.embedding_dim]),
        F.ITEM_INDEX: tf.range(n, dtype=tf.int64) % VOCABULARIES[F.VOCAB_ITEM],
        F.CANDIDATE_EMBEDDING: tf.random.normal([n, hp.embedding_dim]),
        F.CONTENT_PROJECTION: tf.random.normal([n, hp.fusion_dim]),  # as the served catalog stores it
    }
    lines = [
        f"# The ranking model's cost per `recommend` request ({os.cpu_count()} cores, {time.strftime('%Y-%m-%d')})",
        "",
        f"{n} candidate rows per call, {args.calls} calls, tf.function, random weights; parameters without the id embeddings.",
        "",
        "| ranker | p50 ms | p99 ms | parameters (dense) | id embedding parameters |",
        "|---|---|---|---|---|",
    ]
    for label, sizes in SIZES.items():
        model = RankingModel(VOCABULARIES, sizes, CONTENT_DIM)
        call = tf.function(lambda features, model=model: model(features))
        call(inputs)
        seconds = []
        for _ in range(args.calls):
            started = time.perf_counter()
            call(inputs)
            seconds.append(time.perf_counter() - started)
        ms = np.array(seconds) * 1000
        embedding = sum(int(np.prod(v.shape)) for v in model.trainable_variables if "embedding" in v.name)
        dense = sum(
            int(np.prod(v.shape)) for v in model.trainable_variables if "embedding" not in v.name and "content_projection" not in v.name
        )
        lines.append(f"| {label} | {np.percentile(ms, 50):.3f} | {np.percentile(ms, 99):.3f} | {dense:,} | {embedding:,} |")
        print(lines[-1], flush=True)
    lines += ["", f"Command: `.venv/bin/python -m bench.ranker_cost --rows {args.rows} --calls {args.calls}`"]
    results.write("ranker_cost", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: the accuracy / diversity curve of `recommend_diverse` over its MMR weight and category cap.

Loads the newest pushed recommender of a finished run and asks `recommend_diverse`
for every eval event's query (its user, time and history), at each diversity
weight and cap, in one process; reports per setting Recall@10 and NDCG@10 of
the held-out item, intra-list diversity@10 (mean pairwise 1 - cosine of the
listed items' candidate embeddings), category coverage@10 and catalog
coverage@10 (components.evaluation). Weight 0 with no cap is `recommend`.

Exclusions are the signature's (training items + the query's history), not the
RetrievalEvaluator's full seen list, so Recall@10 at weight 0 can differ a
little from the run summary's; the curve compares settings with each other.

    .venv/bin/python -m bench.diversity --output /tmp/mmtower-bench [--dataset tuxpaint]
"""

import argparse
import os
import sys
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from bench import results  # noqa: E402
from components import evaluation as ev  # noqa: E402
from components.retrieval_evaluator import executor  # noqa: E402
from mmdata.records import read_records, split_dir  # noqa: E402
from towers import contract, metrics  # noqa: E402
from towers import features as F  # noqa: E402
from towers.contract import RunPaths  # noqa: E402

BATCH = 256


def queries(model, eval_dir: str, limit: int) -> tuple[list[dict], list[bytes]]:
    """The eval events' query inputs (numpy, in batches of BATCH) and their held-out items."""
    specs = model.signatures[contract.RECOMMEND_DIVERSE_SIGNATURE].structured_input_signature[1]
    names = [name for name in specs if name not in contract.CALLER_INPUTS]
    rows = read_records(os.path.join(eval_dir, contract.RECORD_FILE))[:limit]
    batches = []
    for start in range(0, len(rows), BATCH):
        chunk = rows[start : start + BATCH]
        width = max(len(row.get(F.HISTORY, [])) for row in chunk)
        batch = {}
        for name in names:
            if name == F.HISTORY:
                batch[name] = np.array(
                    [[h.encode() for h in row.get(F.HISTORY, [])] + [b""] * (width - len(row.get(F.HISTORY, []))) for row in chunk], object
                ).reshape(len(chunk), width)
            elif specs[name].dtype.name == "string":
                batch[name] = np.array([str(row[name]).encode() for row in chunk], object)
            else:
                batch[name] = np.array([row[name] for row in chunk], specs[name].dtype.as_numpy_dtype)
        batches.append(batch)
    return batches, [row[F.ITEM_ID].encode() for row in rows]


def score(model, batches: list[dict], truth: list[bytes], weight: float, cap: int) -> dict:
    import tensorflow as tf

    signature = model.signatures[contract.RECOMMEND_DIVERSE_SIGNATURE]
    listed = []
    for batch in batches:
        n = len(next(iter(batch.values())))
        out = signature(
            **{name: tf.constant(value) for name, value in batch.items()},
            exclude_seen=tf.ones([n], tf.bool),
            diversity=tf.fill([n], tf.constant(weight, tf.float32)),
            max_per_category=tf.fill([n], tf.constant(cap, tf.int64)),
        )
        listed.append(out[contract.ITEM_IDS_OUTPUT].numpy()[:, : metrics.NDCG_K])
    index = executor.catalog_index(model)
    positions = executor.positions_of(index, np.concatenate(listed))
    truth_positions = np.array([index.get(item, -3) for item in truth], np.int64)  # -3: matches neither an item nor padding
    per_event = ev.hits(positions, truth_positions)
    recall, ndcg = metrics.recall_name(10), metrics.ndcg_name(10)
    return {
        recall: float(per_event[recall].mean()),
        ndcg: float(per_event[ndcg].mean()),
        **executor.list_metrics(model, positions),
        ev.COVERAGE: ev.coverage(positions, len(index)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="/tmp/mmtower-bench", help="a finished run's --output")
    parser.add_argument("--dataset", default="tuxpaint")
    parser.add_argument("--weights", default="0,0.1,0.2,0.3,0.5,0.7,0.9", help="MMR weights on novelty")
    parser.add_argument("--caps", default="0,2", help="items per category (0: no cap)")
    parser.add_argument("--max-events", type=int, default=5000)
    args = parser.parse_args()
    from app.recommend import load_model

    paths = RunPaths(os.path.abspath(args.output), args.dataset)
    model, source = load_model(paths)
    batches, truth = queries(model, split_dir(paths.data_dir, contract.EVAL_SPLIT), args.max_events)
    print(f"{len(truth):,} eval events, model {source}", flush=True)
    rows = []
    for cap in [int(c) for c in args.caps.split(",")]:
        for weight in [float(w) for w in args.weights.split(",")]:
            started = time.monotonic()
            row = {"weight": weight, "cap": cap, **score(model, batches, truth, weight, cap), "seconds": time.monotonic() - started}
            rows.append(row)
            print(" ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
    names = [metrics.recall_name(10), metrics.ndcg_name(10), ev.DIVERSITY, ev.CATEGORY_COVERAGE, ev.COVERAGE]
    lines = [
        f"# Accuracy / diversity of `recommend_diverse` ({args.dataset}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, 2 cores)",
        "",
        f"Model: {source}. {len(truth):,} eval events (the first {args.max_events:,}), one query each; "
        "exclusions: training items + history (the signature's own).",
        "",
        "| MMR weight | cap per category | " + " | ".join(names) + " | s |",
        "|---|---|" + "---|" * (len(names) + 1),
    ]
    for row in rows:
        lines.append(
            f"| {row['weight']:g} | {row['cap'] or 'none'} | " + " | ".join(f"{row[n]:.4f}" for n in names) + f" | {row['seconds']:.1f} |"
        )
    lines += ["", f"Command: `.venv/bin/python -m bench.diversity --output {args.output} --dataset {args.dataset}`", ""]
    results.write(f"diversity-{args.dataset}", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

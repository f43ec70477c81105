"""Benchmark: incremental (warm-started) training vs a full retrain on the same data.

The dataset is built as cumulative spans (`--spans`, default 2). In one output folder:

1. `mmtower run --span 1`: the first model, from scratch on span 1 (blessed, pushed);
2. `mmtower run --warm-start` (latest span): starts from that model and trains on the
   events after its data only;
3. `mmtower run` (latest span): a full retrain from scratch on the whole latest span.

Runs 2 and 3 are evaluated on the same eval split (the latest span's), beside
most-popular and the span-1 model left as it was (the RetrievalEvaluator's
baseline in run 2). Writes bench/results/incremental-<dataset>.md.

    .venv/bin/python -m bench.incremental [--dataset tuxpaint] [--spans 2] [--output /tmp/mmtower-incremental]
"""

import argparse
import json
import os
import shutil
import sys
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning,ignore::DeprecationWarning")

from tfx.utils import path_utils  # noqa: E402

from app import summary  # noqa: E402
from bench import results  # noqa: E402
from components.baselines import label  # noqa: E402
from components.retrieval_evaluator.executor import RETRIEVAL  # noqa: E402
from components.trainer import RETRIEVAL_STATE, warm_start_dir  # noqa: E402
from pipeline import local_runner  # noqa: E402
from pipeline.config import Options  # noqa: E402
from towers import warm_start  # noqa: E402

METRICS = ("recall_at_10", "recall_at_50", "recall_at_100", "ndcg_at_10")


def _row(label: str, metrics: dict, run: tuple | None = None) -> str:
    """A table row: metrics, then events trained on, Trainer and run seconds of `run` ((summary, wall times, facts); None: '-')."""
    cells = [f"{metrics.get(name, float('nan')):.4f}" for name in METRICS]
    if run is None:
        cells += ["-"] * 3
    else:
        _, wall, facts = run
        cells += [f"{facts['events_trained_on']:,}", f"{wall['Trainer']:.0f}", f"{wall['total']:.0f}"]
    return f"| {label} | " + " | ".join(cells) + " |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=local_runner.RunConfig.dataset)
    parser.add_argument("--spans", type=int, default=2)
    parser.add_argument("--output", default="/tmp/mmtower-incremental")
    args = parser.parse_args()
    shutil.rmtree(args.output, ignore_errors=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    runs = {
        "first": local_runner.RunConfig(dataset=args.dataset, output=args.output, spans=args.spans, options=Options(span=args.spans - 1)),
        "incremental": local_runner.RunConfig(dataset=args.dataset, output=args.output, spans=args.spans, options=Options(warm_start=True)),
        "full": local_runner.RunConfig(dataset=args.dataset, output=args.output, spans=args.spans),
    }
    done = {}
    for name, config in runs.items():
        paths, wall = local_runner.run(config)
        result = summary.read(paths)
        facts = warm_start.facts(os.path.join(warm_start_dir(path_utils.serving_model_path(result.model_uri)), RETRIEVAL_STATE))
        done[name] = (result, wall, facts)
        print(name, json.dumps(facts), {k: round(v, 1) for k, v in wall.items()}, flush=True)
    incremental, full = done["incremental"][0], done["full"][0]
    stale = incremental.retrieval_report["last_blessed_model"][RETRIEVAL]["overall"]
    lines = [
        f"# Incremental vs full retrain ({args.dataset}, {args.spans} cumulative spans, {started}, {os.cpu_count()} cores)",
        "",
        f"Evaluated on the eval split of span {args.spans} (the latest); the model of span {args.spans - 1} was trained from scratch first.",
        "",
        "| model | " + " | ".join(METRICS) + " | events trained on | Trainer s | run s |",
        "|---|" + "---|" * (len(METRICS) + 3),
        *(
            _row(f"baseline: {label(name, row['params'])} (span's training data)", row["overall"])
            for name, row in full.baselines["baselines"].items()
        ),
        _row(f"span-{args.spans - 1} model, not updated", stale, done["first"]),
        _row("incremental: warm start + new events only", incremental.model_metrics, done["incremental"]),
        _row("full retrain from scratch", full.model_metrics, done["full"]),
        "",
        f"Warm start (rows kept / new / dropped per vocabulary): {json.dumps(done['incremental'][2].get('warm_start', {}))}",
        "",
        "run s: the whole `mmtower run` (the first includes building the dataset and embedding the catalog; later runs reuse cached components).",
        "",
        f"Command: `.venv/bin/python -m bench.incremental --dataset {args.dataset} --spans {args.spans} --output {args.output}`",
    ]
    results.write(f"incremental-{args.dataset}", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: what differentially private training costs in quality and time, on one split in one run.

Rows (one pipeline output folder per dataset: the upstream components run once
and are cached, each row re-runs the Trainer and the evaluators):
- the default model (no DP: in-batch softmax, user ids, the trained ranker, the item graph);
- DP training at epsilon = inf (in --epsilons): the DP model (no user id, uniformly sampled
  negatives, per-example clipping, the public uniformity term, recommend ranked
  by the retrieval score) without noise: what the DP recipe costs before any noise;
- DP training at each --epsilons value (towers.dp: the noise calibrated by the
  RDP accountant for the training's steps; delta = 1 / (10 x training events)).

Quality is the RetrievalEvaluator's on the eval split (the same events, the same
exclusions as bench/quality), with the best simple baseline beside it; "run s"
is the wall time of the Trainer and the evaluators.

Writes bench/results/privacy-<dataset>.md.

    .venv/bin/python -m bench.privacy [--datasets movielens-100k] [--epsilons inf,10,4,1] [--epochs 3] [--output /tmp/mmtower-privacy]
"""

import argparse
import os
import sys
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bench import results  # noqa: E402
from bench.quality import run_variant  # noqa: E402
from components.baselines import label  # noqa: E402
from mmdata.records import TEMPORAL  # noqa: E402
from towers import metrics  # noqa: E402
from towers.hparams import HParams  # noqa: E402

R10, R50, NDCG10 = metrics.recall_name(10), metrics.recall_name(50), metrics.ndcg_name(10)


def dataset_table(dataset: str, output: str, epsilons: list[float], epochs: int) -> list[str]:
    rows = [("no DP (the default model)", HParams(epochs=epochs))]
    rows += [(f"DP, epsilon {e:g}", HParams(epochs=epochs, dp_epsilon=e)) for e in epsilons]
    done = []
    for title, hp in rows:
        result, seconds = run_variant(dataset, output, hp, TEMPORAL, None)
        done.append((title, result, seconds))
    first = done[0][1]
    best = first.baselines["best"]
    baseline = first.baselines["baselines"][best]["overall"]
    no_dp = first.recommend_metrics[R10]
    lines = [
        f"## {dataset}, temporal split ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {epochs} epochs)",
        "",
        f"Eval split: {first.retrieval_report['num_eval_records']:,} events. Best simple baseline (chosen on validation): "
        f"{label(best, first.baselines['baselines'][best]['params'])}, {R10} {baseline[R10]:.4f}.",
        "",
        f"| training | epsilon (delta) | noise multiplier | steps | served {R10} | served {R50} | served {NDCG10} | retrieval {R10} "
        f"| served {R10} / no DP | / best baseline | run s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for title, result, seconds in done:
        budget = result.differential_privacy
        privacy = f"{budget['epsilon']:.2f} ({budget['delta']:.0e})" if budget else "-"
        noise = f"{budget['noise_multiplier']:.3f}" if budget else "-"
        steps = f"{budget['steps']:,}" if budget else "-"
        served, retrieval = result.recommend_metrics, result.model_metrics
        lines.append(
            f"| {title} | {privacy} | {noise} | {steps} | {served[R10]:.4f} | {served[R50]:.4f} | {served[NDCG10]:.4f} | "
            f"{retrieval[R10]:.4f} | {served[R10] / no_dp:.2f}x | {served[R10] / baseline[R10]:.2f}x | {seconds:.0f} |"
        )
    lines += [
        "",
        "run s: the Trainer and the evaluators (the first row also runs every upstream component).",
        "The DP rows protect each training example (an event with its history; an event or a user is covered by group privacy only); "
        "what DP covers and what it does not: docs/privacy.md.",
    ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="movielens-100k", help="comma-separated registered datasets")
    parser.add_argument(
        "--epsilons", default="inf,10,4,1", help="comma-separated epsilons of the DP rows (inf: the DP recipe without noise)"
    )
    parser.add_argument("--epochs", type=int, default=HParams().epochs, help="training epochs of every row")
    parser.add_argument("--output", default="/tmp/mmtower-privacy", help="run folder (one per dataset beneath it)")
    args = parser.parse_args()
    epsilons = [float(e) for e in args.epsilons.split(",") if e.strip()]
    for dataset in (name.strip() for name in args.datasets.split(",")):
        lines = dataset_table(dataset, os.path.join(args.output, dataset), epsilons, args.epochs)
        command = f"Command: `.venv/bin/python -m bench.privacy --datasets {dataset} --epsilons {args.epsilons} --epochs {args.epochs}`"
        results.write(f"privacy-{dataset}", ["# Differentially private training: quality and cost", ""] + lines + ["", command])
    return 0


if __name__ == "__main__":
    sys.exit(main())

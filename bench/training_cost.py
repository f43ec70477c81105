"""Benchmark: what each of issue 14's additions costs to train, one pipeline run per configuration.

The configurations add one thing at a time to the model before issue 14 (mean
of the history, gate fusion, no item graph):
- + self-attention over the history (history_encoder=attention);
- + the item graph (built after training, blended into `recommend`);
- = the default (both);
- + cross-modal attention fusion (fusion=attention) on top of the default.
The cold-aware ranking (new-item examples, content in the ranker) is part of
every configuration's ranker: its cost is the ranker's column.

Each run re-runs the Trainer (upstream components are cached) and reads the
Trainer's training_cost.json (components.trainer.EpochTimer): seconds per
epoch of the two towers and of the ranker (the epochs after the first: the
first also traces the step), milliseconds per step, and the seconds of the
Trainer's other stages (item graph, the choice of recommend's weights on the
validation split, export). Served Recall@10 (eval) is given for context; the
quality comparison itself is bench/quality.py.

Writes bench/results/training_cost-<dataset>.md.

    .venv/bin/python -m bench.training_cost [--datasets tuxpaint,movielens-100k] [--output /tmp/mmtower-cost]
"""

import argparse
import datetime
import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning,ignore::DeprecationWarning")


from bench import results  # noqa: E402
from bench.quality import run_variant  # noqa: E402
from mmdata.records import TEMPORAL  # noqa: E402
from towers.hparams import HParams  # noqa: E402

BEFORE = dict(history_encoder="mean", item_graph=False)
CONFIGURATIONS = (  # (row title, HParams changes from the defaults)
    ("before issue 14 (mean history, gate fusion, no item graph)", BEFORE),
    ("+ self-attention over the history", dict(item_graph=False)),
    ("+ item graph", dict(history_encoder="mean")),
    ("default (self-attention + item graph)", {}),
    ("default + cross-modal attention fusion", dict(fusion="attention")),
)
STAGES = ("item_graph", "graph_mix_choice", "export")


def _epoch(timing: dict) -> str:
    if not timing.get("epochs"):
        return "-"
    return f"{timing['mean_seconds_per_epoch']:.1f} ({timing['ms_per_step']:.0f} ms x {timing['steps_per_epoch']:,})"


def dataset_table(dataset: str, output: str) -> list[str]:
    lines = [
        f"## {dataset} ({TEMPORAL} split, defaults otherwise: {HParams().epochs} two-tower epochs, {HParams().ranking_epochs} ranker epochs)",
        "",
        "| configuration | two towers: s/epoch (ms/step x steps) | first epoch s | ranker: s/epoch (ms/step x steps) | "
        + " | ".join(f"{stage.replace('_', ' ')} s" for stage in STAGES)
        + " | Trainer stages total s | served R@10 (eval) | run wall s |",
        "|---|---|---|---|" + "---|" * len(STAGES) + "---|---|---|",
    ]
    for title, changes in CONFIGURATIONS:
        summary, wall = run_variant(dataset, os.path.join(output, dataset), HParams(**changes), TEMPORAL, None)
        cost = summary.training_cost
        if not cost:
            raise RuntimeError(f"{dataset} {title}: the Trainer wrote no training cost (an older Trainer output was reused?)")
        stages = cost["stage_seconds"]
        first = cost["two_towers"]["seconds_per_epoch"][0] if cost["two_towers"]["epochs"] else float("nan")
        lines.append(
            f"| {title} | {_epoch(cost['two_towers'])} | {first:.1f} | {_epoch(cost['ranker'])} | "
            + " | ".join(f"{stages[stage]:.1f}" if stage in stages else "-" for stage in STAGES)
            + f" | {sum(stages.values()):.0f} | {summary.recommend_metrics.get('recall_at_10', float('nan')):.4f} | {wall:.0f} |"
        )
        print(lines[-1], flush=True)
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="tuxpaint,movielens-100k", help="comma-separated registered datasets")
    parser.add_argument("--output", default="/tmp/mmtower-cost", help="run folder (one per dataset beneath it)")
    args = parser.parse_args()
    command = "Command: `.venv/bin/python -m bench.training_cost " + " ".join(sys.argv[1:]) + "`"
    for dataset in args.datasets.split(","):
        lines = dataset_table(dataset, args.output)
        results.write(
            f"training_cost-{dataset}",
            [f"# What each addition costs to train ({datetime.date.today().isoformat()}, 2 cores)", ""]
            + lines
            + [
                "",
                "s/epoch: the mean over the epochs after the first (the first also traces the training step); the validation-loss pass "
                "is not counted. Trainer stages total: two towers + item graph + ranker (with its retrieved negatives) + the choice "
                "of recommend's weights on validation + export. run wall s: the whole pipeline run (cached upstream components).",
                "",
                command,
            ],
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

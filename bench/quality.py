"""Benchmark: recommendation quality against the strongest simple baselines, in one run per dataset.

For each dataset, on the pipeline's temporal split (the latest 10% of
interactions are the eval split; the latest 10% of the rest, the validation
split), one output folder: the upstream components run once and are cached,
and each model variant re-runs the Trainer and the evaluators. Every number
comes from the pipeline's own components: the Baselines (most-popular,
recently popular, co-occurrence kNN and content kNN over the history, their
parameters chosen on the validation split) and the RetrievalEvaluator (the
model's retrieval and served `recommend`, the same events, the same full
seen-item exclusion, per-user means with 95% user-bootstrap intervals).
Variants are fixed configurations, so the eval split is scored once per
configuration; the default model runs once per seed.

Variants:
- default: the production model (every query feature, every item modality, logQ,
  the item graph in `recommend`);
- without the item graph: the ranker alone orders the retrieved candidates;
- without self-attention over the history (the mean only), + cross-modal
  attention fusion: the towers' options (HParams.history_encoder, HParams.fusion);
- before: mean history, gate fusion, no item graph (the cold-aware ranker stays);
- ID-only item tower: item id only, the full query tower (history, attributes, time);
- TFRS tutorial two-tower: query = user id only, item = item id only, no logQ
  (the tensorflow-recommenders basic retrieval tutorial's model).

Writes bench/results/quality-<dataset>.md.

    .venv/bin/python -m bench.quality [--datasets tuxpaint,movielens-100k,movielens-1m] [--seeds 3] [--variants id-only,tfrs]
        [--split temporal|random] [--output /tmp/mmtower-quality]
"""

import argparse
import os
import sys
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning,ignore::DeprecationWarning")

import numpy as np  # noqa: E402

from app import summary  # noqa: E402
from bench import results  # noqa: E402
from components import evaluation as ev  # noqa: E402
from components.baselines import label  # noqa: E402
from mmdata.records import RANDOM, TEMPORAL  # noqa: E402
from pipeline import local_runner  # noqa: E402
from pipeline.config import Options  # noqa: E402
from towers import metrics  # noqa: E402
from towers.hparams import HParams  # noqa: E402

DEFAULT = "default"
VARIANTS = {  # --variants key -> (row title, HParams changes)
    "no-graph": ("without the item graph (the ranker alone orders the candidates)", dict(item_graph=False)),
    "no-sequence": ("without self-attention over the history (history_encoder=mean)", dict(history_encoder="mean")),
    "fusion": ("+ cross-modal attention fusion (fusion=attention)", dict(fusion="attention")),
    "before": (
        "the model before issue 14's additions (mean history, gate fusion, no item graph)",
        dict(history_encoder="mean", item_graph=False),
    ),
    "catalog-negatives": ("catalog softmax (every training item a negative, negatives=catalog)", dict(negatives="catalog")),
    "id-only": ("ID-only item tower (full query tower)", dict(item_modalities=("id",))),
    "tfrs": ("TFRS tutorial two-tower (user id / item id, no logQ)", dict(item_modalities=("id",), query_features=("id",), use_logq=False)),
}
COLUMNS = list(metrics.METRIC_NAMES) + [ev.COVERAGE]
R10, R50 = metrics.recall_name(10), metrics.recall_name(50)


def run_variant(dataset: str, output: str, hparams: HParams, split: str, eval_fraction: float | None, cold_items: float | None = None):
    """One pipeline run (cached upstream components are reused) -> (RunSummary, wall seconds)."""
    config = local_runner.RunConfig(
        dataset=dataset,
        output=output,
        options=Options(hparams=hparams, min_recall_at_100=0.0, min_auc=0.0),
        split=split,
        eval_fraction=eval_fraction,
        cold_item_fraction=cold_items,
    )
    started = time.monotonic()
    paths, _ = local_runner.run(config)
    return summary.read(paths), time.monotonic() - started


def _cells(rows: list[dict], name: str) -> str:
    values = [row.get(name) for row in rows if row.get(name) is not None]
    if not values:
        return "-"
    return f"{np.mean(values):.4f}" + (f" ± {np.std(values):.4f}" if len(values) > 1 else "")


def _row(title: str, rows: list[dict], extra: str = "") -> str:
    return f"| {title} | " + " | ".join(_cells(rows, name) for name in COLUMNS) + f" | {extra} |"


def _ratio(comparison: dict, path: str, other: str) -> str:
    r = comparison["ratios"][path][other]
    return (
        f"{r['per_event']['ratio']:.2f}x [{r['per_event']['ci'][0]:.2f}, {r['per_event']['ci'][1]:.2f}] / "
        f"{r['per_user']['ratio']:.2f}x [{r['per_user']['ci'][0]:.2f}, {r['per_user']['ci'][1]:.2f}]"
    )


def _ci(row: dict) -> str:
    return f"{row['mean']:.4f} [{row['ci'][0]:.4f}, {row['ci'][1]:.4f}]"


def dataset_tables(
    dataset: str,
    output: str,
    seeds: int,
    split: str = TEMPORAL,
    eval_fraction: float | None = None,
    variants=tuple(VARIANTS),
    cold_items: float | None = None,
) -> list[str]:
    runs = {}  # title -> [(RunSummary, seconds)]
    for seed in range(seeds):
        runs.setdefault(DEFAULT, []).append(run_variant(dataset, output, HParams(seed=42 + seed), split, eval_fraction, cold_items))
    for key in variants:
        title, changes = VARIANTS[key]
        runs[title] = [run_variant(dataset, output, HParams(**changes), split, eval_fraction, cold_items)]
    graph_choices = {title: [s.item_graph for s, _ in variant] for title, variant in runs.items()}
    first = runs[DEFAULT][0][0]
    baselines = first.baselines
    best = baselines["best"]
    report = first.retrieval_report
    lines = [
        f"## {dataset}, {split} split ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores)",
        "",
        f"Eval split: {report['num_eval_records']:,} events from {report['num_eval_users']:,} users; validation split: "
        f"{baselines['num_validation']:,} events. Best simple baseline (highest validation {R10}): **{label(best, baselines['baselines'][best]['params'])}**.",
        "",
        "### Eval split, per event (default model: mean ± std over " + f"{seeds} seeds)",
        "",
        "| recommender | " + " | ".join(COLUMNS) + " | validation R@10 / wall s |",
        "|" + "---|" * (len(COLUMNS) + 2),
    ]
    for name, row in baselines["baselines"].items():
        tried = ", ".join(f"{'/'.join(str(v) for v in t['params'].values()) or '-'}: {t[R10]:.4f}" for t in row["validation"]["tried"])
        lines.append(_row(f"baseline: {label(name, row['params'])}", [row["overall"]], f"{row['validation'][R10]:.4f} (tried {tried})"))
    for title, variant in runs.items():
        seconds = ", ".join(f"{s:.0f}" for _, s in variant)
        lines.append(_row(f"{title}: retrieval", [s.model_metrics for s, _ in variant], f"- / {seconds}"))
        lines.append(_row(f"{title}: served recommend", [s.recommend_metrics for s, _ in variant], _validation_cell(graph_choices[title])))
    lines += [
        "",
        f"### {R10} with 95% user-bootstrap intervals; ratios to the best baseline and to most-popular (per event / per user)",
        "",
        "| recommender | per event | per user | / best baseline | / most-popular |",
        "|---|---|---|---|---|",
    ]
    comparison = report["comparison"][R10]
    for name in baselines["baselines"]:
        lines.append(f"| baseline: {name} | {_ci(comparison['per_event'][name])} | {_ci(comparison['per_user'][name])} | | |")
    for title, variant in runs.items():
        for seed, (result, _) in enumerate(variant):
            row = result.retrieval_report["comparison"][R10]
            suffix = f" (seed {42 + seed})" if len(variant) > 1 else ""
            for path, path_title in (("recommend", "served recommend"), ("retrieval", "retrieval")):
                lines.append(
                    f"| {title}{suffix}: {path_title} | {_ci(row['per_event'][path])} | {_ci(row['per_user'][path])} | "
                    f"{_ratio(row, path, best)} | {_ratio(row, path, 'most_popular')} |"
                )
    lines += [
        "",
        f"### New items (no training interaction) and warm items, {R10} / {R50}",
        "",
        "| recommender | new, among all items | new, among new items only | warm, among all items | warm, among warm items only |",
        "|---|---|---|---|---|",
    ]
    for name, row in baselines["baselines"].items():
        cells = [
            _pair(row["by_freshness"][ev.COLD]),
            _pair(row["among_own_kind"][ev.COLD]),
            _pair(row["by_freshness"][ev.WARM]),
            _pair(row["among_own_kind"][ev.WARM]),
        ]
        lines.append(f"| baseline: {name} | " + " | ".join(cells) + " |")
    for title, variant in runs.items():
        reports = [s.retrieval_report for s, _ in variant]
        retrieval = [r["retrieval"] for r in reports]
        served = [r["recommend"] for r in reports]
        lines.append(
            f"| {title}: retrieval | {_mean_pair([r['by_freshness'][ev.COLD] for r in retrieval])} | {_mean_pair([r['among_own_kind'][ev.COLD] for r in retrieval])} | "
            f"{_mean_pair([r['by_freshness'][ev.WARM] for r in retrieval])} | {_mean_pair([r['among_own_kind'][ev.WARM] for r in retrieval])} |"
        )
        lines.append(
            f"| {title}: served recommend | {_mean_pair([r['by_freshness'][ev.COLD] for r in served])} | - | {_mean_pair([r['by_freshness'][ev.WARM] for r in served])} | - |"
        )
    new_events = report["retrieval"]["by_freshness"][ev.COLD]["count"]
    lines += [
        "",
        f'New-item eval events: {new_events:,}. "Among new items only" ranks only the items without training '
        "interactions (the cold-start literature's protocol); popularity-based baselines order those items arbitrarily (all counts are 0).",
        "wall s: the first default run includes every upstream component from an empty output folder; later runs re-run the Trainer and the evaluators.",
    ]
    return lines


def _validation_cell(choices: list) -> str:
    """served recommend on validation with the chosen blend (and with the ranker alone): R@10, new/warm R@50."""
    chosen = [c for c in choices if c and c.get("chosen")]
    if not chosen:
        return ""
    mean = lambda key, which="chosen": np.mean([c[which][key] for c in chosen])
    first = chosen[0]["chosen"]
    mix = ", ".join(f"{kind} {weight:g}" for kind, weight in first["mix"].items()) or "none"
    return (
        f"{mean(R10):.4f}, new/warm R@50 {mean('new_recall_at_50'):.3f}/{mean('warm_recall_at_50'):.3f} "
        f"(ranker alone {mean(R10, 'ranker_alone'):.4f}, {mean('new_recall_at_50', 'ranker_alone'):.3f}/{mean('warm_recall_at_50', 'ranker_alone'):.3f}; "
        f"graph {mix}, last {first['history_length']}, new-item boost {first['new_item_boost']:g})"
    )


def _pair(row: dict) -> str:
    return "-" if not row.get("count") else f"{row[R10]:.4f} / {row[R50]:.4f}"


def _mean_pair(rows: list[dict]) -> str:
    rows = [row for row in rows if row.get("count")]
    return "-" if not rows else f"{np.mean([r[R10] for r in rows]):.4f} / {np.mean([r[R50] for r in rows]):.4f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="tuxpaint,movielens-100k,movielens-1m", help="comma-separated registered datasets")
    parser.add_argument("--seeds", type=int, default=3, help="runs of the default model (seeds 42, 43, ...); the other variants run once")
    parser.add_argument("--output", default="/tmp/mmtower-quality", help="run folder (one per dataset and split beneath it)")
    parser.add_argument(
        "--split",
        default=TEMPORAL,
        choices=[TEMPORAL, RANDOM],
        help="temporal (default) or random (the TFRS tutorials' 80/20 protocol, with --eval-fraction 0.2)",
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="comma-separated extra variants, run once each: " + ", ".join(VARIANTS) + " (empty: the default model only)",
    )
    parser.add_argument(
        "--eval-fraction", type=float, default=None, help="share of interactions in the eval split (default: the dataset's, 0.1)"
    )
    parser.add_argument(
        "--cold-items",
        type=float,
        default=None,
        help="share of the eval split's items held out as new items (default: the dataset's; results go to quality-<dataset>-cold<share>.md)",
    )
    args = parser.parse_args()
    cold = "" if args.cold_items is None else f"-cold{args.cold_items:g}"
    for dataset in (name.strip() for name in args.datasets.split(",")):
        variants = [key.strip() for key in args.variants.split(",") if key.strip()]
        unknown = set(variants) - set(VARIANTS)
        if unknown:
            parser.error(f"unknown variants {sorted(unknown)}; known: {', '.join(VARIANTS)}")
        lines = dataset_tables(
            dataset,
            os.path.join(args.output, f"{dataset}-{args.split}{cold}"),
            args.seeds,
            args.split,
            args.eval_fraction,
            variants,
            cold_items=args.cold_items,
        )
        command = f".venv/bin/python -m bench.quality --datasets {dataset} --seeds {args.seeds} --variants '{args.variants}' --split {args.split} --output {args.output}"
        command += "" if args.eval_fraction is None else f" --eval-fraction {args.eval_fraction}"
        command = f"Command: `{command}" + ("" if args.cold_items is None else f" --cold-items {args.cold_items:g}") + "`"
        name = f"quality-{dataset}" + ("" if args.split == TEMPORAL else f"-{args.split}") + cold
        results.write(name, ["# Quality against the strongest simple baselines", ""] + lines + ["", command])
    return 0


if __name__ == "__main__":
    sys.exit(main())

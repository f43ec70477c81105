"""Benchmark: item-modality ablation, new (cold) vs warm items, in one run.

Trains the pipeline once per variant of the item tower (the components
upstream of the Trainer are cached and shared). Each variant is scored on the
**validation** split, where choices are made (it has new items of its own:
items whose interactions before the validation period were removed), and its
eval-split figures are the RetrievalEvaluator's, scored once per variant. Both
use the pipeline's protocol: full seen-item exclusion, new items among all
items (production) and among new items only (the cold-start literature's).

    .venv/bin/python -m bench.cold_start [--dataset tuxpaint] [--output /tmp/mmtower-cold] [--epochs 3] [--cold-items 0.1]

Variants using a modality the dataset's catalog lacks (e.g. image on
MovieLens) are skipped. Writes bench/results/cold_start-<dataset>.md.
"""

import argparse
import json
import os
import sys
import time

from towers import contract

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning,ignore::DeprecationWarning")

import numpy as np  # noqa: E402

from app import summary  # noqa: E402
from bench import results  # noqa: E402
from components import evaluation as ev  # noqa: E402
from components.retrieval_evaluator import executor  # noqa: E402
from mmdata import registry  # noqa: E402
from mmdata.records import split_dir
from pipeline import local_runner  # noqa: E402
from pipeline.config import Options  # noqa: E402
from towers import metrics  # noqa: E402
from towers.contract import SPLITS
from towers.hparams import HParams  # noqa: E402

VARIANTS = {
    "ID only": ("id",),
    "ID + metadata": ("id", "metadata"),
    "ID + text": ("id", "text"),
    "ID + image": ("id", "image"),
    "ID + audio": ("id", "audio"),
    "all modalities": ("id", "metadata", "text", "image", "audio"),
    "content only (no ID)": ("metadata", "text", "image", "audio"),
}
KS = (10, 50)


def oracle(events: dict[str, ev.Events], scores_by_user: dict[str, np.ndarray], item_ids: list[str]) -> dict[str, dict]:
    """Eval-split Recall@K of ranking every item by known true scores (the simulator's), same exclusions as the models."""
    index = ev.catalog_index(item_ids)
    held_out = events[contract.EVAL_SPLIT]
    seen = ev.SeenItems(index, events[contract.TRAIN_SPLIT], events[contract.VALIDATION_SPLIT], held_out).for_events(held_out)
    scores = np.stack([scores_by_user[user.decode()] for user in held_out.users])
    per_event = ev.hits(ev.top_k(scores, seen, max(metrics.RECALL_KS)), ev.positions(held_out.items, index))
    cold = ev.cold_mask(len(item_ids), index, events[contract.TRAIN_SPLIT])
    truth = ev.positions(held_out.items, index)
    return {freshness: ev.summarize(per_event, mask) for freshness, mask in ev.targets_by_freshness(truth, cold).items()}


def simulator_ceilings(manifest_users: int | None, events: dict[str, ev.Events]) -> list[tuple[str, dict]]:
    """tuxpaint only: the simulator's true affinity, and the same without the latent popularity (what content can reveal)."""
    from mmdata import simulator, tuxpaint

    _, traits, _ = tuxpaint.load_catalog()
    affinity, popularity = simulator.true_affinities(traits, manifest_users or tuxpaint.DEFAULT_USERS)
    content_only = {user: scores - popularity for user, scores in affinity.items()}
    return [
        ("ceiling: simulator's true affinity", oracle(events, affinity, traits.item_ids)),
        ("ceiling: true affinity without latent popularity (content-knowable part)", oracle(events, content_only, traits.item_ids)),
    ]


def cells(report: dict) -> list[str]:
    """R@10, R@50 of warm targets, R@10, R@50 of new targets among all items, R@50 of new among new only, cold/warm R@50."""
    warm, cold = report["retrieval"]["by_freshness"][ev.WARM], report["retrieval"]["by_freshness"][ev.COLD]
    own = report["retrieval"].get("among_own_kind", {}).get(ev.COLD, {})
    r10, r50 = metrics.recall_name(10), metrics.recall_name(50)
    ratio = cold.get(r50, float("nan")) / max(warm.get(r50, float("nan")), 1e-9)
    return [
        f"{warm.get(r10, float('nan')):.4f}",
        f"{warm.get(r50, float('nan')):.4f}",
        f"{cold.get(r10, float('nan')):.4f}",
        f"{cold.get(r50, float('nan')):.4f}",
        f"{own.get(r50, float('nan')):.4f}",
        f"{ratio:.2f}",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=registry.DEFAULT_DATASET, choices=sorted(registry.DATASETS))
    parser.add_argument("--output", default="/tmp/mmtower-cold")
    parser.add_argument("--epochs", type=int, default=HParams().epochs)
    parser.add_argument("--cold-items", type=float, default=0.1, help="share of eval items held out of training (default: 0.1)")
    parser.add_argument(
        "--modality-dropout", type=float, default=HParams().modality_dropout, help="item tower modality dropout (default: %(default)s)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="override a towers.hparams.HParams field, e.g. --set temperature=0.1",
    )
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of: " + ", ".join(VARIANTS))
    args = parser.parse_args()
    rows, paths = [], None
    available = {"id", "metadata", *registry.get(args.dataset).modalities}
    wanted = [label.strip() for label in args.variants.split(",")]
    overrides = {name: json.loads(value) for name, value in (item.split("=", 1) for item in args.set)}
    for label, modalities in VARIANTS.items():
        if label not in wanted or not set(modalities) <= available:
            continue
        started = time.monotonic()
        config = local_runner.RunConfig(
            dataset=args.dataset,
            output=args.output,
            options=Options(
                hparams=HParams(epochs=args.epochs, item_modalities=modalities, modality_dropout=args.modality_dropout, **overrides),
                min_recall_at_100=0.0,
            ),
            cold_item_fraction=args.cold_items,
        )
        paths, _ = local_runner.run(config)
        result = summary.read(paths)
        rows.append((label, result, time.monotonic() - started))

    events = {split: ev.read_events(split_dir(paths.data_dir, split)) for split in SPLITS}
    validation_records = executor.read_records(split_dir(paths.data_dir, contract.VALIDATION_SPLIT))
    header = "| model | split | R@10 warm | R@50 warm | R@10 new | R@50 new | R@50 new among new only | new/warm R@50 | wall s |"
    new_counts = {
        split: int(np.isin(events[split].items, np.unique(events[contract.TRAIN_SPLIT].items), invert=True).sum())
        for split in (contract.VALIDATION_SPLIT, contract.EVAL_SPLIT)
    }
    lines = [
        f"# Item-modality ablation, new vs warm items ({paths.dataset}, {time.strftime('%Y-%m-%d')})",
        "",
        f"Validation events: {len(events[contract.VALIDATION_SPLIT]):,} ({new_counts[contract.VALIDATION_SPLIT]:,} with a new item); eval events: "
        f"{len(events[contract.EVAL_SPLIT]):,} ({new_counts[contract.EVAL_SPLIT]:,} with a new item). Choose on the validation rows; the eval rows are scored once per variant.",
        "",
        header,
        "|" + "---|" * 9,
    ]
    for label, result, seconds in rows:
        model = executor.load_model(result.model_uri)
        validation = executor.evaluate_split(model, events, validation_records, contract.VALIDATION_SPLIT, with_slices=False)[0]
        lines.append(f"| {label} | validation | " + " | ".join(cells(validation)) + f" | {seconds:.0f} |")
        lines.append(f"| {label} | eval | " + " | ".join(cells(result.retrieval_report)) + " | |")
    if args.dataset == "tuxpaint":
        for label, by_freshness in simulator_ceilings(config.max_users, events):
            report = {"retrieval": {"by_freshness": by_freshness}}
            lines.append(f"| {label} | eval | " + " | ".join(cells(report)) + " | |")
    lines += [
        "",
        "wall s: the first variant includes every upstream component (cached for the later ones, which re-run Trainer, Evaluator and Pusher).",
        '"new among new only" ranks only the items without training interactions. Ceilings (tuxpaint): every item ranked by the simulator\'s',
        "ground truth, with the same exclusions as the models; without the latent popularity, the ranking uses only what content can reveal.",
    ]
    lines += [
        "",
        f"Command: `.venv/bin/python -m bench.cold_start --dataset {args.dataset} --output {args.output} --epochs {args.epochs} --cold-items {args.cold_items} --modality-dropout {args.modality_dropout}"
        + "".join(f" --set {item}" for item in args.set)
        + "`",
    ]
    results.write(f"cold_start-{args.dataset}", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: item-modality ablation, warm vs cold items, in one run.

Trains the pipeline once per variant of the item tower (the
components upstream of the Trainer are cached and shared), then scores each
trained model's `evaluate` signature on the same eval split, split by whether
the held-out item appeared in training (warm) or not (cold, reachable only
through content). Most-popular is scored on the same rows.

    .venv/bin/python -m bench.cold_start [--dataset tuxpaint] [--output /tmp/mmtower-cold] [--epochs 3] [--cold-items 0.1]

Variants using a modality the dataset's catalog lacks (e.g. image on
MovieLens) are skipped.

Cold items are those of the eval split held out of training (`--cold-items`)
plus any that simply never occurred before the cutoff.

Writes bench/results/cold_start-<dataset>.md.
"""
import argparse
import json
import os
import sys
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning,ignore::DeprecationWarning")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from components import baseline  # noqa: E402
from datasets.records import EVAL_SPLIT, TRAIN_SPLIT, split_dir  # noqa: E402
from bench import results  # noqa: E402
from datasets import registry  # noqa: E402
from pipeline import local_runner, summary  # noqa: E402
from towers import exporter, metrics  # noqa: E402
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


def oracle(train: list[tuple], held_out: list[tuple], scores_by_user: dict[str, np.ndarray], item_ids: list[str]) -> dict[str, np.ndarray]:
    """Per-example metrics of ranking every item by known true scores (the simulator's), same exclusions as the models."""
    seen: dict[bytes, set] = {}
    for user, item, _ in train:
        seen.setdefault(user, set()).add(item)
    catalog = np.array([i.encode() for i in item_ids], dtype=object)
    k = max(metrics.RECALL_KS)
    top = []
    for user, _, history in held_out:
        scores = scores_by_user[user.decode()].copy()
        known = seen.get(user, set()).union(history)
        scores[[i for i, item in enumerate(catalog) if item in known]] = -np.inf
        top.append(catalog[np.argsort(-scores)[:k]].astype(bytes))
    out = metrics.retrieval_metrics(tf.constant(np.stack(top)), tf.constant(np.array([e[1] for e in held_out], dtype=bytes)))
    return {name: np.asarray(value) for name, value in out.items()}


def simulator_ceilings(manifest_users: int | None, train, held_out) -> list[tuple[str, dict]]:
    """tuxpaint only: the simulator's true affinity, and the same without the latent popularity (what content can reveal)."""
    from datasets import simulator, tuxpaint

    _, traits, _ = tuxpaint.load_catalog()
    affinity, popularity = simulator.true_affinities(traits, manifest_users or tuxpaint.DEFAULT_USERS)
    content_only = {user: scores - popularity for user, scores in affinity.items()}
    return [
        ("ceiling: simulator's true affinity", oracle(train, held_out, affinity, traits.item_ids)),
        ("ceiling: true affinity without latent popularity (content-knowable part)", oracle(train, held_out, content_only, traits.item_ids)),
    ]


def score(per_example: dict[str, np.ndarray], mask: np.ndarray) -> list[str]:
    return [f"{per_example[metrics.recall_name(k)][mask].mean():.4f}" for k in KS]


def evaluate_model(model_dir: str, records: list[bytes]) -> dict[str, np.ndarray]:
    model = tf.saved_model.load(model_dir)
    out = {name: [] for name in metrics.METRIC_NAMES}
    for start in range(0, len(records), 1000):
        result = model.signatures[exporter.EVALUATE_SIGNATURE](examples=tf.constant(records[start : start + 1000]))
        for name in out:
            out[name].append(result[name].numpy())
    return {name: np.concatenate(values) for name, values in out.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=registry.DEFAULT_DATASET, choices=sorted(registry.DATASETS))
    parser.add_argument("--output", default="/tmp/mmtower-cold")
    parser.add_argument("--epochs", type=int, default=HParams().epochs)
    parser.add_argument("--cold-items", type=float, default=0.1, help="share of eval items held out of training (default: 0.1)")
    parser.add_argument("--modality-dropout", type=float, default=HParams().modality_dropout, help="item tower modality dropout (default: %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=JSON", help="override a towers.hparams.HParams field, e.g. --set temperature=0.1")
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
            hparams=HParams(epochs=args.epochs, item_modalities=modalities, modality_dropout=args.modality_dropout, **overrides),
            cold_item_fraction=args.cold_items,
            min_recall_at_100=0.0,
        )
        paths, _ = local_runner.run(config)
        model_dir = os.path.join(summary.read(paths).model_uri, "Format-Serving")
        rows.append((label, model_dir, time.monotonic() - started))

    train = baseline.read_events(split_dir(paths.data_dir, TRAIN_SPLIT))
    held_out = baseline.read_events(split_dir(paths.data_dir, EVAL_SPLIT))
    train_items = {item for _, item, _ in train}
    cold = np.array([item not in train_items for _, item, _ in held_out])
    records = [r for r in tf.data.TFRecordDataset(tf.io.gfile.glob(os.path.join(split_dir(paths.data_dir, EVAL_SPLIT), "*")), compression_type="GZIP").as_numpy_iterator()]
    popular = {name: np.asarray(v) for name, v in baseline.per_example(train, held_out).items()}

    header = "| model | R@10 warm | R@50 warm | R@10 cold | R@50 cold | R@10 all | cold/warm R@50 | wall s |"
    lines = [f"# Item-modality ablation, warm vs cold items ({paths.dataset}, {time.strftime('%Y-%m-%d')})", "",
             f"Eval interactions: {len(held_out):,}; with an item unseen in training (cold): {int(cold.sum())}.", "",
             header, "|" + "---|" * 8]
    scored = [("most-popular", popular, 0.0)] + [(label, evaluate_model(model_dir, records), seconds) for label, model_dir, seconds in rows]
    if args.dataset == "tuxpaint":
        scored += [(label, per_example, 0.0) for label, per_example in simulator_ceilings(config.max_users, train, held_out)]
    for label, per_example, seconds in scored:
        warm, cold_scores = score(per_example, ~cold), score(per_example, cold)
        ratio = float(cold_scores[1]) / max(float(warm[1]), 1e-9)
        overall = per_example[metrics.recall_name(10)].mean()
        lines.append(f"| {label} | {warm[0]} | {warm[1]} | {cold_scores[0]} | {cold_scores[1]} | {overall:.4f} | {ratio:.2f} | {seconds:.0f} |")
    lines += ["", "wall s: the first variant includes every upstream component (cached for the later ones, which re-run Trainer, Evaluator and Pusher).",
              "Ceilings (tuxpaint): every item ranked by the simulator's ground truth, with the same exclusions as the models; without the latent",
              "popularity, the ranking uses only what content can reveal (category, subfolder, photo colour, sound)."]
    lines += ["", f"Command: `.venv/bin/python -m bench.cold_start --dataset {args.dataset} --output {args.output} --epochs {args.epochs} --cold-items {args.cold_items} --modality-dropout {args.modality_dropout}" + "".join(f" --set {item}" for item in args.set) + "`"]
    results.write(f"cold_start-{args.dataset}", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

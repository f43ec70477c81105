"""Benchmark (tuxpaint): how far above the best simple baseline any recommender can get on the simulated events.

tuxpaint's events come from a seeded simulator (mmdata/simulator.py): each
user has a latent taste (category preference, two favourite subfolders, a
colour, maybe a liking for sounds) and each item a latent quality; the user's
items are drawn from softmax(affinity) without replacement. So what is
knowable can be measured. On the run's validation and eval events, with the
same seen-item exclusion as the model and the baselines:

- the best simple baseline, chosen on validation (components.baselines);
- the run's served `recommend` (eval: the RetrievalEvaluator's figure;
  validation: the Trainer's figure for the weights it chose there);
- the **posterior predictive** (simulator.posterior_predictive): knows the
  generative model, every item's traits and latent quality (more than any
  recommender sees) and infers the user's taste from the items they were seen
  with before the event: about the best a recommender could do (an
  approximation: importance sampling, and the likelihood of the seen items
  taken in time order, while the simulator draws them at once and shuffles);
- the true affinity: knows each user's latent taste, which no recommender can
  know (the ceiling bench/cold_start.py also reports).

Ratios to the best baseline come with 95% user-bootstrap intervals (the same
code as bench/quality).

Writes bench/results/ceiling-tuxpaint.md.

    .venv/bin/python -m bench.ceiling --output /tmp/mmtower-bench2 [--samples 400] [--splits validation,eval]
"""

import argparse
import datetime
import os
import sys
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning,ignore::DeprecationWarning")

import numpy as np  # noqa: E402

from app import summary as run_summary  # noqa: E402
from bench import results  # noqa: E402
from components import baselines as bl  # noqa: E402
from components import evaluation as ev  # noqa: E402
from mmdata import simulator, tuxpaint  # noqa: E402
from mmdata.records import Manifest, split_dir  # noqa: E402
from towers import contract, metrics, privacy  # noqa: E402
from towers.contract import RunPaths  # noqa: E402

DATASET = "tuxpaint"
R10 = metrics.recall_name(10)
SPLITS = (contract.TRAIN_SPLIT, contract.VALIDATION_SPLIT, contract.EVAL_SPLIT)


def hits_of(scores: np.ndarray, events: ev.Events, seen: list[np.ndarray], index: dict[bytes, int]) -> np.ndarray:
    """Per event, Recall@10 (0/1) of ranking the catalog by `scores` [n, N]."""
    top = ev.top_k(scores, seen, max(metrics.RECALL_KS))
    return ev.hits(top, ev.positions(events.items, index))[R10]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="the output folder of a finished `mmtower run --dataset tuxpaint`")
    parser.add_argument("--samples", type=int, default=400, help="taste samples per event of the posterior predictive (default: 400)")
    parser.add_argument("--splits", default="validation,eval", help="the splits to score (default: validation,eval)")
    args = parser.parse_args()
    paths = RunPaths(os.path.abspath(args.output), DATASET)
    run = run_summary.read(paths)
    splits = {split: ev.read_events(split_dir(paths.data_dir, split)) for split in SPLITS}  # the latest span, as ExampleGen reads
    _, traits, _ = tuxpaint.load_catalog()
    manifest = Manifest.read(paths.data_dir)
    index = ev.catalog_index(traits.item_ids)
    affinity, quality = simulator.true_affinities(traits, manifest.max_users or tuxpaint.DEFAULT_USERS)
    key = privacy.load_key()
    affinity = {privacy.pseudonym(key, user).encode(): values for user, values in affinity.items()}
    if not set(np.unique(splits[contract.TRAIN_SPLIT].users)) <= set(affinity):
        raise SystemExit("the run's user ids are not this machine's pseudonyms of the simulated users: run it with this key")
    best = run.baselines["best"]
    params = run.baselines["baselines"][best]["params"]
    fitted = bl.fit(splits[contract.TRAIN_SPLIT], traits.item_ids, {})
    baseline = bl.scorer(fitted, best, params)
    if baseline is None:
        raise SystemExit(f"the best baseline {best} needs the content embeddings, which this bench does not read")
    seen = ev.SeenItems(index, *splits.values())
    served = {
        contract.VALIDATION_SPLIT: (run.item_graph.get("chosen") or {}).get(R10, float("nan")),
        contract.EVAL_SPLIT: run.recommend_metrics.get(R10, float("nan")),
    }
    lines = [
        f"# How far above the best simple baseline a recommender can get on tuxpaint ({datetime.date.today().isoformat()})",
        "",
        f"Best simple baseline of the run: **{bl.label(best, params)}**. Posterior predictive: {args.samples} taste samples per event "
        "(x every colour x sound lover or not).",
        "",
    ]
    rng = np.random.default_rng(0)
    for split in args.splits.split(","):
        events = splits[split]
        excluded = seen.for_events(events)
        rows = {bl.label(best, params): hits_of(baseline(events.histories), events, excluded, index)}
        started, effective, posterior = time.monotonic(), [], np.zeros([len(events), len(index)])
        for row, (user, timestamp) in enumerate(zip(events.users, events.timestamps)):
            history = seen.history(user, timestamp)
            posterior[row], sample_size = simulator.posterior_predictive(traits, quality, history, args.samples, rng)
            effective.append(sample_size)
            if (row + 1) % 500 == 0:
                print(f"  {split}: {row + 1:,}/{len(events):,} events, {time.monotonic() - started:.0f} s", flush=True)
        rows["posterior predictive (knows the simulator, item traits and qualities)"] = hits_of(posterior, events, excluded, index)
        truth = np.stack([affinity[user] for user in events.users])
        rows["true affinity (knows each user's latent taste)"] = hits_of(truth, events, excluded, index)
        boot = ev.user_bootstrap(rows, events.users)
        first = next(iter(rows))
        lines += [
            f"## {split} split: {len(events):,} events from {boot['users']:,} users",
            "",
            "| recommender | Recall@10 per event | per user | / best baseline, per event | per user |",
            "|---|---|---|---|---|",
            f"| served `recommend` of the run | {served.get(split, float('nan')):.4f} | | "
            f"{served.get(split, float('nan')) / boot['per_event'][first]['mean']:.2f}x (computed) | |",
        ]
        for name in rows:
            cell = lambda view: f"{boot[view][name]['mean']:.4f} [{boot[view][name]['ci'][0]:.4f}, {boot[view][name]['ci'][1]:.4f}]"
            ratio = ev.ratio(boot, name, first)
            share = lambda view: f"{ratio[view]['ratio']:.2f}x [{ratio[view]['ci'][0]:.2f}, {ratio[view]['ci'][1]:.2f}]"
            lines.append(f"| {name} | {cell('per_event')} | {cell('per_user')} | {share('per_event')} | {share('per_user')} |")
        lines += [
            "",
            f"Posterior predictive: effective sample size median {np.median(effective):.0f}, 10th percentile "
            f"{np.percentile(effective, 10):.0f}; {time.monotonic() - started:.0f} s.",
            "",
        ]
        print("\n".join(lines[-10:]), flush=True)
    lines += [
        "Served recommend: the run's own figure (eval: the RetrievalEvaluator; validation: the Trainer's choice of recommend's "
        "weights, on the same events), so its ratio has no interval here; bench/quality gives it one.",
        "",
        "Command: `.venv/bin/python -m bench.ceiling " + " ".join(sys.argv[1:]) + "`",
    ]
    results.write(f"ceiling-{DATASET}", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Baselines: the strongest simple recommenders, scored in the same run, on the same events, as the model.

- most_popular: training interactions per item.
- recently_popular: training interactions of the last `days` days of the training period.
- cooccurrence_knn: item-item cosine over the training user x item matrix,
  summed over the user's last `last_n` history items (training-free kNN).
- content_knn: cosine between the ContentEmbedder's item embeddings (each
  modality L2-normalised, concatenated), summed over the last `last_n` history
  items: the baseline that can reach new items.

Each fits on the training split only. Free parameters are chosen on the
validation split (Recall@10); the best baseline is the one with the highest
validation Recall@10; then every baseline is scored once on the eval split.
All exclude exactly what the model excludes (evaluation.SeenItems) and are
scored by the same code (evaluation.top_k, evaluation.hits). kNN scores add a
popularity term 1e-6 times smaller, so an empty history falls back to
most-popular and ties are broken by popularity.
"""

import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass

import absl.logging
import numpy as np
import scipy.sparse as sp
import tensorflow as tf
from tfx import v1 as tfx
from tfx.types import artifact_utils

from components import evaluation as ev
from components import item_graph
from towers import contract, metrics
from towers import features as F
from towers.contract import METRICS_FILE, PER_EVENT_FILE

MOST_POPULAR = "most_popular"
RECENTLY_POPULAR = "recently_popular"
COOCCURRENCE_KNN = "cooccurrence_knn"
CONTENT_KNN = "content_knn"
SECONDS_PER_DAY = 86400
TIE_BREAK = 1e-6
BATCH = 2048
# Free parameters tried on the validation split.
GRIDS = {
    MOST_POPULAR: [{}],
    RECENTLY_POPULAR: [{"days": d} for d in (1, 3, 7, 14, 30, 90)],
    COOCCURRENCE_KNN: [{"last_n": n} for n in (1, 2, 3, 5, 10, 20)],
    CONTENT_KNN: [{"last_n": n} for n in (1, 2, 3, 5, 10, 20)],
}
BASELINES = tuple(GRIDS)


@dataclass
class Fitted:
    """What the baselines learn from the training split, by catalog position."""

    index: dict[bytes, int]
    popularity: np.ndarray  # float [N] training interactions
    train_end: int
    train: ev.Events
    similarity: sp.csr_matrix  # [N, N] item co-occurrence cosine, zero diagonal
    content: np.ndarray | None  # float [N, D] unit rows (zeros: no content), None without content


def fit(train: ev.Events, catalog_ids, content: dict[str, dict[str, np.ndarray]]) -> Fitted:
    index = ev.catalog_index(catalog_ids)
    size = len(index)
    items = ev.positions(train.items, index)
    popularity = np.bincount(items[items >= 0], minlength=size).astype(np.float64)
    return Fitted(
        index,
        popularity,
        int(train.timestamps.max(initial=0)),
        train,
        item_graph.cooccurrence(train.users, items, size),
        item_graph.item_content(size, index, content),
    )


def _history_matrix(fitted: Fitted, histories: list, last_n: int) -> sp.csr_matrix:
    """[n, N] indicator of each query's last `last_n` history items (in the catalog)."""
    rows, cols = [], []
    for row, history in enumerate(histories):
        for position in ev.positions(history[-last_n:] if last_n else (), fitted.index):
            if position >= 0:
                rows.append(row)
                cols.append(position)
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(histories), len(fitted.index)))


def _popularity_term(fitted: Fitted) -> np.ndarray:
    return TIE_BREAK * fitted.popularity / max(fitted.popularity.max(initial=0.0), 1.0)


def scorer(fitted: Fitted, name: str, params: dict) -> Callable[[list], np.ndarray] | None:
    """histories of a batch of queries -> scores [n, N]; None when the baseline cannot run (no content)."""
    if name == MOST_POPULAR:
        return lambda histories: np.broadcast_to(fitted.popularity, (len(histories), len(fitted.popularity)))
    if name == RECENTLY_POPULAR:
        recent = fitted.train.timestamps > fitted.train_end - params["days"] * SECONDS_PER_DAY
        items = ev.positions(fitted.train.items[recent], fitted.index)
        counts = np.bincount(items[items >= 0], minlength=len(fitted.index)).astype(np.float64)
        scores = counts + 1e3 * _popularity_term(fitted)  # older popularity orders what the window leaves tied
        return lambda histories: np.broadcast_to(scores, (len(histories), len(scores)))
    if name == COOCCURRENCE_KNN:
        return lambda histories: (_history_matrix(fitted, histories, params["last_n"]) @ fitted.similarity).toarray() + _popularity_term(
            fitted
        )
    if name == CONTENT_KNN:
        if fitted.content is None:
            return None
        return lambda histories: (
            _history_matrix(fitted, histories, params["last_n"]) @ fitted.content
        ) @ fitted.content.T + _popularity_term(fitted)
    raise KeyError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")


def score(
    score_fn: Callable, events: ev.Events, seen: list[np.ndarray], index: dict[bytes, int], allowed: np.ndarray | None = None
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-event metrics and the top-10 positions of one baseline over `events` (only targets in `allowed`, if given)."""
    truth = ev.positions(events.items, index)
    per_event: dict[str, list] = {name: [] for name in metrics.METRIC_NAMES}
    tops = []
    for start in range(0, len(events), BATCH):
        batch = slice(start, start + BATCH)
        top = ev.top_k(score_fn(events.histories[batch]), seen[batch], max(metrics.RECALL_KS), allowed)
        for name, values in ev.hits(top, truth[batch]).items():
            per_event[name].append(values)
        tops.append(top[:, : metrics.NDCG_K])
    empty = np.zeros(0, np.float32)
    return {name: np.concatenate(values) if values else empty for name, values in per_event.items()}, (
        np.concatenate(tops) if tops else np.zeros([0, metrics.NDCG_K], np.int64)
    )


def _subset(events: ev.Events, mask: np.ndarray) -> ev.Events:
    return ev.Events(
        events.users[mask], events.items[mask], events.timestamps[mask], [h for h, keep in zip(events.histories, mask) if keep]
    )


def choose(fitted: Fitted, validation: ev.Events, seen: list[np.ndarray]) -> dict[str, dict]:
    """baseline -> {"params": chosen, "validation": [{"params", recall_at_10}, ...]} (the highest validation Recall@10)."""
    recall_10 = metrics.recall_name(10)
    out = {}
    for name, grid in GRIDS.items():
        tried = []
        for params in grid:
            score_fn = scorer(fitted, name, params)
            if score_fn is None:
                break
            value = float(score(score_fn, validation, seen, fitted.index)[0][recall_10].mean()) if len(validation) else float("nan")
            tried.append({"params": params, recall_10: value})
        if tried:
            best = max(tried, key=lambda row: -np.inf if np.isnan(row[recall_10]) else row[recall_10])
            out[name] = {"params": best["params"], "validation": tried, recall_10: best[recall_10]}
    return out


def evaluate(
    train: ev.Events, validation: ev.Events, held_out: ev.Events, catalog_ids, content: dict
) -> tuple[dict, dict[str, np.ndarray]]:
    """Chooses each baseline's parameters on `validation`, then scores each once on `held_out`.

    Returns:
      (report for metrics.json, per-event arrays for PER_EVENT_FILE).
    """
    fitted = fit(train, catalog_ids, content)
    seen = ev.SeenItems(fitted.index, train, validation, held_out)
    chosen = choose(fitted, validation, seen.for_events(validation))
    recall_10 = metrics.recall_name(10)
    best = max(chosen, key=lambda name: -np.inf if np.isnan(chosen[name][recall_10]) else chosen[name][recall_10])
    cold = ev.cold_mask(len(fitted.index), fitted.index, train)
    held_seen = seen.for_events(held_out)
    truth = ev.positions(held_out.items, fitted.index)
    targets = ev.targets_by_freshness(truth, cold)
    report = {"best": best, "num_validation": len(validation), "num_eval": len(held_out), "baselines": {}}
    arrays = {F.USER_ID: held_out.users.astype(bytes), F.ITEM_ID: held_out.items.astype(bytes)}
    for name, choice in chosen.items():
        score_fn = scorer(fitted, name, choice["params"])
        per_event, top = score(score_fn, held_out, held_seen, fitted.index)
        overall = {**ev.summarize(per_event), ev.COVERAGE: ev.coverage(top, len(fitted.index))}
        among = {}
        for freshness, candidates in ((ev.COLD, cold), (ev.WARM, ~cold)):
            mask = targets[freshness]
            among[freshness] = (
                ev.summarize(
                    score(score_fn, _subset(held_out, mask), [s for s, m in zip(held_seen, mask) if m], fitted.index, candidates)[0]
                )
                if mask.any()
                else {"count": 0}
            )
        report["baselines"][name] = {
            "params": choice["params"],
            "validation": {recall_10: choice[recall_10], "tried": choice["validation"]},
            "overall": overall,
            "by_freshness": {freshness: ev.summarize(per_event, mask) for freshness, mask in targets.items()},
            "among_own_kind": among,
        }
        arrays.update({f"{name}/{metric}": values for metric, values in per_event.items()})
        absl.logging.info(
            "baseline %s %s: validation Recall@10 %.4f, eval Recall@10 %.4f", name, choice["params"], choice[recall_10], overall[recall_10]
        )
    return report, arrays


def label(name: str, params: dict) -> str:
    """'cooccurrence_knn (last_n=5)'."""
    return name + (f" ({', '.join(f'{k}={v}' for k, v in params.items())})" if params else "")


def read(uri: str) -> tuple[dict, dict[str, np.ndarray]]:
    """A Baselines output folder -> (metrics.json, per-event arrays)."""
    with tf.io.gfile.GFile(os.path.join(uri, METRICS_FILE)) as f:
        report = json.load(f)
    with tf.io.gfile.GFile(os.path.join(uri, PER_EVENT_FILE), "rb") as f:
        arrays = dict(np.load(io.BytesIO(f.read()), allow_pickle=False))
    return report, arrays


@tfx.dsl.components.component
def Baselines(
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    catalog: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    item_embeddings: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    evaluation: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.ModelEvaluation],
    code_version: tfx.dsl.components.Parameter[str] = "",
) -> None:
    """Writes every baseline's chosen parameters, validation and eval metrics (metrics.json) and per-event metrics.

    `code_version` only keys the cache (see pipeline.code_version).
    """
    from components.content_embedder.embeddings import read_item_embeddings

    splits = {
        split: ev.read_events(artifact_utils.get_split_uri([examples], split))
        for split in (contract.TRAIN_SPLIT, contract.VALIDATION_SPLIT, contract.EVAL_SPLIT)
    }
    catalog_ids = [
        item
        for split in artifact_utils.decode_split_names(catalog.split_names)
        for item in ev.read_item_ids(artifact_utils.get_split_uri([catalog], split))
    ]
    report, arrays = evaluate(
        splits[contract.TRAIN_SPLIT],
        splits[contract.VALIDATION_SPLIT],
        splits[contract.EVAL_SPLIT],
        catalog_ids,
        read_item_embeddings(item_embeddings.uri),
    )
    with tf.io.gfile.GFile(os.path.join(evaluation.uri, METRICS_FILE), "w") as f:
        json.dump(report, f, indent=2)
    buffer = io.BytesIO()  # zip files need seeking; GFile (e.g. on GCS) does not seek
    np.savez_compressed(buffer, **arrays)
    with tf.io.gfile.GFile(os.path.join(evaluation.uri, PER_EVENT_FILE), "wb") as f:
        f.write(buffer.getvalue())

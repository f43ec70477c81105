"""Offline retrieval evaluation shared by the Baselines and the RetrievalEvaluator.

One protocol for the model and every baseline: the same events, the same
full seen-item exclusion (SeenItems), the same top-K and metric code
(towers.metrics), the same new-item definition (`cold_mask`), and per-user
means with 95% user-bootstrap intervals (`compare`).
"""

from __future__ import annotations

import collections
import os
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from towers import features as F
from towers import metrics

COVERAGE = f"coverage_at_{metrics.NDCG_K}"
DIVERSITY = f"diversity_at_{metrics.NDCG_K}"  # intra-list diversity: mean pairwise 1 - cosine within a top-10 list
CATEGORY_COVERAGE = f"category_coverage_at_{metrics.NDCG_K}"  # share of the catalog's categories in some top-10 list
LIST_METRICS = (COVERAGE, DIVERSITY, CATEGORY_COVERAGE)  # metrics of whole lists, beside metrics.METRIC_NAMES
COLD, WARM = "cold", "warm"  # values of the F.ITEM_FRESHNESS slice
BOOTSTRAP_RESAMPLES = 1000
CONFIDENCE = 0.95


@dataclass
class Events:
    """Parallel arrays of interactions: users, items (bytes) [n], timestamps int64 [n], histories (tuples of bytes)."""

    users: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray
    histories: list

    def __len__(self) -> int:
        return len(self.items)


def read_events(split_uri: str) -> Events:
    """The events of every tf.Example under an ExampleGen split folder, in file order (the order readers of the split share).

    A record missing a field gets "" / 0 for it (the RetrievalEvaluator reports such records as unreadable by the model).
    """
    spec = {
        F.USER_ID: tf.io.FixedLenFeature([1], tf.string, default_value=[b""]),
        F.ITEM_ID: tf.io.FixedLenFeature([1], tf.string, default_value=[b""]),
        F.TIMESTAMP: tf.io.FixedLenFeature([1], tf.int64, default_value=[0]),
        F.HISTORY: tf.io.RaggedFeature(tf.string),
    }
    files = sorted(tf.io.gfile.glob(os.path.join(split_uri, "*")))
    users, items, timestamps, histories = [], [], [], []
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(4096):
        parsed = tf.io.parse_example(batch, spec)
        users.append(parsed[F.USER_ID].numpy()[:, 0])
        items.append(parsed[F.ITEM_ID].numpy()[:, 0])
        timestamps.append(parsed[F.TIMESTAMP].numpy()[:, 0])
        histories.extend(tuple(h) for h in parsed[F.HISTORY].to_list())
    if not items:
        return Events(np.zeros(0, object), np.zeros(0, object), np.zeros(0, np.int64), [])
    return Events(np.concatenate(users), np.concatenate(items), np.concatenate(timestamps), histories)


def read_serialized(split_uri: str) -> list[bytes]:
    """The serialized examples of a split folder, in the order evaluation.read_events reads them."""
    files = sorted(tf.io.gfile.glob(os.path.join(split_uri, "*")))
    return [record.numpy() for record in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def with_seen_items(record: bytes, seen_ids: list[bytes]) -> bytes:
    """The eval example with F.SEEN_ITEMS set: the items the `evaluate*` signatures exclude."""
    example = tf.train.Example.FromString(record)
    example.features.feature[F.SEEN_ITEMS].bytes_list.value[:] = seen_ids
    return example.SerializeToString()


def read_item_ids(split_uri: str) -> list[bytes]:
    """The item ids of an ExampleGen split folder of catalog tf.Examples, in file order."""
    files = sorted(tf.io.gfile.glob(os.path.join(split_uri, "*")))
    ids: list[bytes] = []
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(4096):
        ids.extend(tf.io.parse_example(batch, {F.ITEM_ID: tf.io.FixedLenFeature([], tf.string)})[F.ITEM_ID].numpy().tolist())
    return ids


def catalog_index(catalog_ids) -> dict[bytes, int]:
    """Item id (bytes) -> catalog position."""
    return {item if isinstance(item, bytes) else str(item).encode(): position for position, item in enumerate(catalog_ids)}


def positions(items, index: dict[bytes, int]) -> np.ndarray:
    """int64 catalog positions of `items` (-1: not in the catalog)."""
    return np.array([index.get(item, -1) for item in items], np.int64)


class SeenItems:
    """What a user is known to have seen at an event: every training item of theirs, and every item of theirs,
    in any split, strictly before the event's time.

    With a temporal split the first set is part of the second; with a random
    split it adds the training items after the event (the TFRS protocol
    excludes every training item). The model and every baseline exclude
    exactly these items.

    Args:
      index: catalog_index(); items outside the catalog are never recommended, so they are dropped.
      train: the training events.
      others: the events of the other splits.
    """

    def __init__(self, index: dict[bytes, int], train: Events, *others: Events):
        by_user_train: dict[bytes, list[int]] = collections.defaultdict(list)
        for user, position in zip(train.users, positions(train.items, index)):
            if position >= 0:
                by_user_train[user].append(position)
        self._train = {user: np.unique(values) for user, values in by_user_train.items()}
        users = np.concatenate([train.users] + [e.users for e in others])
        times = np.concatenate([train.timestamps] + [e.timestamps for e in others])
        items = np.concatenate([positions(train.items, index)] + [positions(e.items, index) for e in others])
        order = np.lexsort((times, users))
        users, times, items = users[order], times[order], items[order]
        starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
        ends = np.r_[starts[1:], len(users)]
        self._timeline = {users[s]: (times[s:e], items[s:e]) for s, e in zip(starts, ends)}
        self._empty = np.zeros(0, np.int64)

    def before(self, user: bytes, timestamp: int) -> np.ndarray:
        """Catalog positions the user had seen before `timestamp` (may repeat)."""
        return np.concatenate([self._train.get(user, self._empty), self.history(user, timestamp)])

    def history(self, user: bytes, timestamp: int) -> np.ndarray:
        """Catalog positions of the user's events (any split, in the catalog) strictly before `timestamp`, oldest first."""
        times, items = self._timeline.get(user, (self._empty, self._empty))
        earlier = items[: int(np.searchsorted(times, timestamp, side="left"))]
        return earlier[earlier >= 0]

    def for_events(self, events: Events) -> list[np.ndarray]:
        return [self.before(user, t) for user, t in zip(events.users, events.timestamps)]


def cold_mask(catalog_size: int, index: dict[bytes, int], train: Events) -> np.ndarray:
    """bool [catalog_size]: items with no training interaction (new items, reachable from content only)."""
    trained = positions(np.unique(train.items), index)
    mask = np.ones(catalog_size, bool)
    mask[trained[trained >= 0]] = False
    return mask


def targets_by_freshness(truth: np.ndarray, cold: np.ndarray) -> dict[str, np.ndarray]:
    """COLD / WARM -> bool [n]: events whose target (catalog position, -1: not in the catalog) is a new / a warm item."""
    known = truth >= 0
    new = known & cold[np.maximum(truth, 0)]
    return {COLD: new, WARM: known & ~new}


def top_k(scores: np.ndarray, exclude: list[np.ndarray], k: int, allowed: np.ndarray | None = None) -> np.ndarray:
    """The k best catalog positions per row, best first, leaving out excluded (and not `allowed`) items.

    Args:
      scores: float [n, N].
      exclude: per row, catalog positions not to recommend.
      k: list length (at most N; rows with fewer eligible items end with ineligible ones, scored -inf).
      allowed: bool [N], the candidate set (None: every item).
    Returns:
      int64 [n, k]; ties keep the lower position first.
    """
    scores = np.array(scores, np.float64, copy=True)
    if allowed is not None:
        scores[:, ~allowed] = -np.inf
    for row, seen in enumerate(exclude):
        scores[row, seen] = -np.inf
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part.sort(axis=1)  # lower position first among equal scores
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1).astype(np.int64)


def hits(top_positions: np.ndarray, true_positions: np.ndarray) -> dict[str, np.ndarray]:
    """towers.metrics on catalog positions: metric name -> float [n] (the code the model's `evaluate` runs)."""
    width = max(metrics.RECALL_KS)
    if top_positions.shape[1] < width:  # a catalog smaller than the longest cut-off: pad with "no item"
        top_positions = np.pad(top_positions, [(0, 0), (0, width - top_positions.shape[1])], constant_values=-2)
    out = metrics.retrieval_metrics(tf.constant(top_positions), tf.constant(true_positions))
    return {name: values.numpy() for name, values in out.items()}


def coverage(top_positions: np.ndarray, catalog_size: int) -> float:
    """Share of the catalog in at least one top-10 list."""
    return len(np.unique(top_positions[:, : metrics.NDCG_K])) / max(catalog_size, 1)


def list_diversity(top_positions: np.ndarray, embeddings: np.ndarray) -> float:
    """Intra-list diversity of top-10 lists: the mean over lists of the mean pairwise (1 - cosine) of their items'
    embeddings. `top_positions` [n, k] catalog positions (-1: no item); `embeddings` [N, dim]."""
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    values = []
    for row in top_positions[:, : metrics.NDCG_K]:
        items = unit[row[row >= 0]]
        if len(items) > 1:
            pairs = items @ items.T
            values.append(1.0 - (pairs.sum() - np.trace(pairs)) / (len(items) * (len(items) - 1)))
    return float(np.mean(values)) if values else float("nan")


def category_coverage(top_positions: np.ndarray, categories: np.ndarray) -> float:
    """Share of the catalog's categories (ids >= 0) of which some item is in a top-10 list; NaN without categories."""
    known = set(categories[categories >= 0].tolist())
    if not known:
        return float("nan")
    listed = top_positions[:, : metrics.NDCG_K]
    return len(set(categories[listed[listed >= 0]].tolist()) & known) / len(known)


def summarize(per_event: dict[str, np.ndarray], mask: np.ndarray | None = None) -> dict[str, float]:
    """Mean of each metric and the count over the events in `mask` (default all)."""
    mask = np.ones(len(per_event[metrics.METRIC_NAMES[0]]), bool) if mask is None else mask
    out = {name: float(per_event[name][mask].mean()) if mask.any() else float("nan") for name in metrics.METRIC_NAMES}
    out["count"] = int(mask.sum())
    return out


def interval(values: np.ndarray) -> list[float]:
    """The central CONFIDENCE interval of bootstrap replicates."""
    tail = (1.0 - CONFIDENCE) / 2 * 100
    return [float(np.nanpercentile(values, tail)), float(np.nanpercentile(values, 100 - tail))]


def user_bootstrap(values: dict[str, np.ndarray], users: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> dict:
    """Per-event and per-user means of paired per-event metrics, with 95% user-bootstrap intervals.

    Users are resampled with replacement (their events stay together), so the
    intervals account for a few heavy users holding many events. Ratios
    (name / other name) are read off the same resamples (see `ratio`).

    Args:
      values: name (e.g. "model", "cooccurrence_knn") -> float [n], aligned with `users`.
      users: user id of each event [n].
    Returns:
      {"users": U, "per_event": {name: {"mean", "ci"}}, "per_user": {...}, "_replicates": internal}.
    """
    codes, inverse = np.unique(users, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(codes)).astype(np.float64)
    draws = np.random.default_rng(seed).integers(0, len(codes), size=(resamples, len(codes)))
    drawn_counts = counts[draws].sum(axis=1)
    out: dict = {"users": int(len(codes)), "per_event": {}, "per_user": {}, "_replicates": {"per_event": {}, "per_user": {}}}
    for name, per_event in values.items():
        sums = np.bincount(inverse, weights=per_event, minlength=len(codes))
        means = sums / counts
        replicates = {"per_event": sums[draws].sum(axis=1) / drawn_counts, "per_user": means[draws].mean(axis=1)}
        point = {"per_event": float(sums.sum() / counts.sum()), "per_user": float(means.mean())}
        for view in ("per_event", "per_user"):
            out[view][name] = {"mean": point[view], "ci": interval(replicates[view])}
            out["_replicates"][view][name] = replicates[view]
    return out


def ratio(boot: dict, numerator: str, denominator: str) -> dict:
    """{view: {"ratio", "ci"}}: numerator / denominator per event and per user, with the paired bootstrap interval."""
    out = {}
    for view in ("per_event", "per_user"):
        num, den = boot[view][numerator]["mean"], boot[view][denominator]["mean"]
        with np.errstate(divide="ignore", invalid="ignore"):
            replicates = boot["_replicates"][view][numerator] / boot["_replicates"][view][denominator]
        out[view] = {
            "ratio": num / den if den else float("inf"),
            "ci": interval(replicates[np.isfinite(replicates)]) if np.isfinite(replicates).any() else [float("nan")] * 2,
        }
    return out


def public(boot: dict) -> dict:
    """user_bootstrap's result without the replicates (for metrics.json)."""
    return {key: value for key, value in boot.items() if not key.startswith("_")}

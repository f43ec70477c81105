"""The item graph: per catalog item, its nearest neighbours by co-occurrence and by content.

Edges, each kind kept apart (the served model weighs them):
- cooccurrence: cosine of the binary training user x item matrix (the
  co-occurrence kNN baseline's similarity). An item without any (a new item)
  inherits its content neighbours' co-occurrence edges, weighted by content
  similarity (two hops: new item -content- known item -co-occurrence-
  history item), so it is scored like the known items it resembles;
- content: cosine of the items' content (each modality L2-normalised,
  concatenated: the content kNN baseline's similarity); every item with
  content has them, new items included;
- knowledge: items linked through shared metadata attributes (genres, or a
  category path such as animals/birds), each attribute a node: the cosine of
  the items' IDF-weighted attribute bags, so a rare attribute links more than
  a common one. New items have them from their metadata alone.

Built from the training split only, `k` neighbours per item and kind. The
served `recommend` scores each candidate by its edges to the user's last
history items (towers.exporter.graph_scores) and adds that, and a boost for
new items, to the ranker's logit, with weights chosen on the validation split
(choose_mix).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

COOCCURRENCE = "cooccurrence"
CONTENT = "content"
KNOWLEDGE = "knowledge"
KINDS = (COOCCURRENCE, CONTENT, KNOWLEDGE)
NEIGHBOURS = 20  # per item and kind
BATCH = 1024


@dataclass
class ItemGraph:
    """neighbours: int64 [N, K] catalog positions (-1: none); weights: float32 [N, K];
    kinds: the edge kind of each of the K columns (an index into KINDS)."""

    neighbours: np.ndarray
    weights: np.ndarray
    kinds: np.ndarray
    inherited_items: int = 0  # items whose co-occurrence edges are inherited through content

    def edge_counts(self) -> dict[str, int]:
        counts = {
            kind: int(((self.neighbours >= 0) & (self.kinds == i)[None, :]).sum())
            for i, kind in enumerate(KINDS)
            if (self.kinds == i).any()
        }
        return {**counts, "items_with_inherited_cooccurrence": self.inherited_items}


def item_content(catalog_size: int, index: dict[bytes, int], content: dict[str, dict[str, np.ndarray]]) -> np.ndarray | None:
    """[N, D]: per item, its modalities' embeddings, each L2-normalised, concatenated, then L2-normalised (zeros: none)."""
    if not content:
        return None
    parts = []
    for embeddings in content.values():
        dim = len(next(iter(embeddings.values())))
        block = np.zeros([catalog_size, dim], np.float32)
        for item, vector in embeddings.items():
            position = index.get(item.encode() if isinstance(item, str) else item, -1)
            if position >= 0:
                block[position] = vector / max(np.linalg.norm(vector), 1e-12)
        parts.append(block)
    rows = np.concatenate(parts, axis=1)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def cooccurrence(users: np.ndarray, positions: np.ndarray, catalog_size: int) -> sp.csr_matrix:
    """Item-item cosine of the binary user x item matrix of interactions (user ids, catalog positions; -1 skipped), zero diagonal."""
    known = positions >= 0
    _, rows = np.unique(users[known], return_inverse=True)
    matrix = sp.csr_matrix((np.ones(known.sum(), np.float32), (rows, positions[known])), shape=(rows.max(initial=-1) + 1, catalog_size))
    matrix.data[:] = 1.0  # repeated interactions count once (the conversion summed them)
    counts = np.asarray(matrix.sum(axis=0)).ravel()
    norms = sp.diags(1.0 / np.sqrt(np.maximum(counts, 1.0)))
    similarity = (norms @ (matrix.T @ matrix) @ norms).tocsr()
    similarity = (similarity - sp.diags(similarity.diagonal())).tocsr()
    similarity.eliminate_zeros()
    return similarity


def knowledge(attributes: list) -> sp.csr_matrix:
    """Item-item cosine of IDF-weighted attribute bags (attributes[i]: item i's genres / category path words), zero diagonal."""
    vocabulary: dict = {}
    rows, cols = [], []
    for row, values in enumerate(attributes):
        for value in set(values):
            rows.append(row)
            cols.append(vocabulary.setdefault(value, len(vocabulary)))
    size = len(attributes)
    bags = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(size, len(vocabulary)))
    idf = np.log(size / np.maximum(np.asarray(bags.sum(axis=0)).ravel(), 1.0)).astype(np.float32)
    bags = (bags @ sp.diags(idf)).tocsr()
    norms = np.sqrt(np.asarray(bags.multiply(bags).sum(axis=1)).ravel())
    bags = (sp.diags(1.0 / np.maximum(norms, 1e-12)) @ bags).tocsr()
    similarity = (bags @ bags.T).tocsr()
    similarity = (similarity - sp.diags(similarity.diagonal())).tocsr()
    similarity.eliminate_zeros()
    return similarity


def nearest(similarity, k: int, selves: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k positive entries of each row of a [n, N] similarity (scipy sparse, or anything whose row slices are dense
    arrays) -> (positions [n, k], -1: none; weights [n, k]). Row i belongs to item selves[i] (default: i), never its own neighbour."""
    size = similarity.shape[0]
    selves = np.arange(size) if selves is None else selves
    neighbours, weights = np.full([size, k], -1, np.int64), np.zeros([size, k], np.float32)
    for start in range(0, size, BATCH):
        block = similarity[start : start + BATCH]
        block = (block.toarray() if sp.issparse(block) else np.array(block)).astype(np.float32)
        block[np.arange(len(block)), selves[start : start + BATCH]] = 0.0
        width = min(k, block.shape[1])
        top = np.argpartition(-block, width - 1, axis=1)[:, :width]
        values = np.take_along_axis(block, top, axis=1)
        neighbours[start : start + len(block), :width] = np.where(values > 0, top, -1)
        weights[start : start + len(block), :width] = np.maximum(values, 0.0)
    return neighbours, weights


class _ContentSimilarity:
    """Lazy content cosine: rows [b, N] on slicing, so the N x N matrix is never held."""

    def __init__(self, content: np.ndarray):
        self.content, self.shape = content, (len(content), len(content))

    def __getitem__(self, rows: slice) -> np.ndarray:
        return self.content[rows] @ self.content.T


def inherit(similarity: sp.csr_matrix, cooccurrence_edges: tuple, content_edges: tuple, k: int) -> int:
    """Fills, in place, the co-occurrence edges (top-k) of every item without any with those it inherits
    through its content edges (see the module docstring). -> how many items inherited edges."""
    neighbours, weights = cooccurrence_edges
    content_neighbours, content_weights = content_edges
    size = similarity.shape[0]
    has_edges = np.diff(similarity.indptr) > 0
    orphans = np.flatnonzero(~has_edges)
    if not len(orphans) or not has_edges.any():
        return 0
    via = content_neighbours[orphans]
    usable = (via >= 0) & has_edges[np.maximum(via, 0)] & (content_weights[orphans] > 0)
    rows = np.repeat(np.arange(len(orphans)), usable.sum(axis=1))
    link = sp.csr_matrix((content_weights[orphans][usable], (rows, via[usable])), shape=(len(orphans), size))
    link = sp.diags(1.0 / np.maximum(np.asarray(link.sum(axis=1)).ravel(), 1e-12)) @ link  # a similarity-weighted mean
    top, values = nearest((link @ similarity).tocsr(), k, orphans)
    neighbours[orphans], weights[orphans] = top, values
    return int((top >= 0).any(axis=1).sum())


def build(
    users: np.ndarray,
    positions: np.ndarray,
    catalog_size: int,
    content: np.ndarray | None,
    attributes: list | None = None,
    k: int = NEIGHBOURS,
) -> ItemGraph:
    """The graph from training interactions (user ids, catalog positions), content rows [N, D] (unit rows; zeros: none;
    None: no content) and per item its metadata attributes (None or all empty: no knowledge edges)."""
    similarity = cooccurrence(users, positions, catalog_size)
    parts, inherited_items = {COOCCURRENCE: nearest(similarity, k)}, 0
    if content is not None:
        parts[CONTENT] = nearest(_ContentSimilarity(content), k)
        inherited_items = inherit(similarity, parts[COOCCURRENCE], parts[CONTENT], k)
    if attributes is not None and any(attributes):
        parts[KNOWLEDGE] = nearest(knowledge(attributes), k)
    neighbours = np.concatenate([p[0] for p in parts.values()], axis=1)
    weights = np.concatenate([p[1] for p in parts.values()], axis=1)
    kinds = np.repeat([KINDS.index(kind) for kind in parts], k)
    return ItemGraph(neighbours, weights, kinds, inherited_items)


def blend(logits: np.ndarray, graph_scores: np.ndarray, mix: np.ndarray, is_new: np.ndarray, new_item_boost: float) -> np.ndarray:
    """What `recommend` orders by: ranker logit + mix . (per-kind graph score, scaled to [0, 1] per query)
    + new_item_boost for items without training interactions. logits [B, C]; graph_scores [B, C, kinds];
    mix [kinds]; is_new bool [B, C]. towers.exporter computes the same."""
    return logits + graph_scores @ mix + new_item_boost * is_new


MIX_GRID = (0.0, 0.5, 1.0, 2.0, 4.0)
BOOST_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
# The new-item target must hold with this one-sided confidence on validation (z of 95%): the validation split has
# a few hundred new-item events, and a target met only by its point estimate is often missed on other events.
CONFIDENCE_Z = 1.645
FALLBACK_RECALL_SHARE = 0.95  # an unmet new-item target is approached only by settings this close to the best Recall@k
HISTORY_GRID = (3, 5, 10, 20)
NEW_ITEM_K = 50  # new items' reach is measured by Recall@50, new vs warm targets


def recall_at(scores: np.ndarray, hit: np.ndarray, k: int) -> np.ndarray:
    """Per row, whether its hit column is in the top k of `scores` [V, C] (ties count against it; no hit: a miss)."""
    has = hit.any(axis=1)
    truth = np.where(has, scores[np.arange(len(scores)), hit.argmax(axis=1)], np.inf)
    ahead = (scores >= truth[:, None]).sum(axis=1) - 1
    return has & (ahead < k)


def choose_mix(
    logits: np.ndarray,
    graph_scores: dict[int, np.ndarray],
    candidates: np.ndarray,
    is_new: np.ndarray,
    truth: np.ndarray,
    truth_is_new: np.ndarray,
    kinds: int,
    new_item_ratio: float,
    k: int = 10,
) -> tuple[dict, list[dict]]:
    """The graph weights, history length and new-item boost with the best Recall@k among the settings where
    new items' Recall@50 is at least `new_item_ratio` x warm items' with 95% one-sided confidence (new items'
    Recall@50 less CONFIDENCE_Z binomial standard errors; if no setting does, the one closest to it among the
    settings that keep at least FALLBACK_RECALL_SHARE of the best Recall@k: an unreachable target, e.g. on a
    handful of new-item events, must not cost most of the warm items' accuracy).

    Args:
      logits: [V, C] ranker logits of each event's candidates (-inf: excluded).
      graph_scores: history length -> [V, C, kinds] scaled graph scores.
      candidates: [V, C] catalog positions; is_new: bool [V, C] candidates without training interactions.
      truth: [V] each event's item position; truth_is_new: bool [V] whether it is a new item.
    Returns:
      (the chosen setting, every setting tried): each a dict with mix, history_length, new_item_boost,
      recall_at_<k>, new/warm recall_at_50, and whether the new-item target holds.
    """
    hit = candidates == truth[:, None]  # [V, C]
    tried = []
    mixes = np.array(np.meshgrid(*[MIX_GRID] * kinds, indexing="ij")).reshape(kinds, -1).T if kinds else np.zeros([1, 0])
    for length, scores in graph_scores.items():
        for mix in mixes:
            if length != min(graph_scores) and not mix.any():
                continue  # without the graph the length does not matter
            base = logits + scores @ mix
            for boost in BOOST_GRID:
                blended = base + boost * is_new
                at_k, at_50 = recall_at(blended, hit, k), recall_at(blended, hit, NEW_ITEM_K)
                new = float(at_50[truth_is_new].mean()) if truth_is_new.any() else 0.0
                warm = float(at_50[~truth_is_new].mean()) if (~truth_is_new).any() else 0.0
                new_low = float(new - CONFIDENCE_Z * np.sqrt(new * (1.0 - new) / max(int(truth_is_new.sum()), 1)))
                tried.append(
                    {
                        "mix": mix.tolist(),
                        "history_length": length,
                        "new_item_boost": boost,
                        f"recall_at_{k}": float(at_k.mean()) if len(at_k) else 0.0,
                        "new_recall_at_50": new,
                        "new_recall_at_50_low": new_low,
                        "warm_recall_at_50": warm,
                        "new_item_target_met": bool(new_low >= new_item_ratio * warm),
                    }
                )
    feasible = [t for t in tried if t["new_item_target_met"]]
    simpler = lambda t: (-sum(t["mix"]) - t["new_item_boost"], -t["history_length"])  # ties: smaller weights, shorter history
    if feasible:
        best = max(feasible, key=lambda t: (round(t[f"recall_at_{k}"], 6), *simpler(t)))
    else:
        best_recall = max(t[f"recall_at_{k}"] for t in tried)
        accurate = [t for t in tried if t[f"recall_at_{k}"] >= FALLBACK_RECALL_SHARE * best_recall]
        best = max(
            accurate,
            key=lambda t: (
                round(t["new_recall_at_50_low"] / max(t["warm_recall_at_50"], 1e-9), 6),
                round(t[f"recall_at_{k}"], 6),
                *simpler(t),
            ),
        )
    return best, tried

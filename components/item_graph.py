"""The item graph: per catalog item, its nearest neighbours by co-occurrence and by content.

Edges, each kind kept apart (the served model weighs them):
- cooccurrence: cosine of the binary training user x item matrix (the
  co-occurrence kNN baseline's similarity); items without training
  interactions have none;
- content: cosine of the items' content (each modality L2-normalised,
  concatenated: the content kNN baseline's similarity); every item with
  content has them, new items included;
- inherited: an item without co-occurrence edges (a new item) takes its
  content neighbours' co-occurrence edges, weighted by content similarity
  (two hops: new item -content- known item -co-occurrence- history item), so
  a new item is scored like the known items it resembles.

Built from the training split only, `k` neighbours per item and kind. The
served `recommend` scores each retrieved candidate by its edges to the user's
last history items (towers.exporter) and adds that to the ranker's score with
weights chosen on the validation split (choose_mix).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

COOCCURRENCE = "cooccurrence"
CONTENT = "content"
INHERITED = "inherited"
KINDS = (COOCCURRENCE, CONTENT, INHERITED)
NEIGHBOURS = 20  # per item and kind
BATCH = 1024


@dataclass
class ItemGraph:
    """neighbours: int64 [N, K] catalog positions (-1: none); weights: float32 [N, K];
    kinds: the edge kind of each of the K columns (an index into KINDS)."""

    neighbours: np.ndarray
    weights: np.ndarray
    kinds: np.ndarray

    def edge_counts(self) -> dict[str, int]:
        return {kind: int(((self.neighbours >= 0) & (self.kinds == i)[None, :]).sum()) for i, kind in enumerate(KINDS)}


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


def inherited(similarity: sp.csr_matrix, content_neighbours: np.ndarray, content_weights: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k inherited co-occurrence edges of every item without co-occurrence edges (see the module docstring)."""
    size = similarity.shape[0]
    neighbours, weights = np.full([size, k], -1, np.int64), np.zeros([size, k], np.float32)
    has_edges = np.diff(similarity.indptr) > 0
    orphans = np.flatnonzero(~has_edges)
    if not len(orphans) or not has_edges.any():
        return neighbours, weights
    via = content_neighbours[orphans]
    usable = (via >= 0) & has_edges[np.maximum(via, 0)] & (content_weights[orphans] > 0)
    rows = np.repeat(np.arange(len(orphans)), usable.sum(axis=1))
    link = sp.csr_matrix((content_weights[orphans][usable], (rows, via[usable])), shape=(len(orphans), size))
    link = sp.diags(1.0 / np.maximum(np.asarray(link.sum(axis=1)).ravel(), 1e-12)) @ link  # a similarity-weighted mean
    top, values = nearest((link @ similarity).tocsr(), k, orphans)
    neighbours[orphans], weights[orphans] = top, values
    return neighbours, weights


def build(users: np.ndarray, positions: np.ndarray, catalog_size: int, content: np.ndarray | None, k: int = NEIGHBOURS) -> ItemGraph:
    """The graph from training interactions (user ids, catalog positions) and content rows [N, D] (unit rows; zeros: none; None: no content)."""
    similarity = cooccurrence(users, positions, catalog_size)
    parts = [nearest(similarity, k)]
    if content is not None:
        parts.append(nearest(_ContentSimilarity(content), k))
        parts.append(inherited(similarity, *parts[1], k))
    neighbours = np.concatenate([p[0] for p in parts], axis=1)
    weights = np.concatenate([p[1] for p in parts], axis=1)
    kinds = np.repeat(np.arange(len(parts)), k)
    return ItemGraph(neighbours, weights, kinds)


def empty(catalog_size: int) -> ItemGraph:
    return ItemGraph(np.full([catalog_size, 0], -1, np.int64), np.zeros([catalog_size, 0], np.float32), np.zeros([0], np.int64))


def blend(logits: np.ndarray, graph_scores: np.ndarray, mix: np.ndarray) -> np.ndarray:
    """What `recommend` orders by: ranker logit + mix . (per-kind graph score, scaled to [0, 1] per query).

    logits [B, C]; graph_scores [B, C, kinds] (already scaled); mix [kinds]. towers.exporter computes the same.
    """
    return logits + graph_scores @ mix


MIX_GRID = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
HISTORY_GRID = (1, 3, 5, 10, 20)


def recall_at(scores: np.ndarray, hit: np.ndarray, k: int) -> float:
    """Share of rows whose hit column is in the top k of `scores` [V, C] (ties count against it; no hit: a miss)."""
    has = hit.any(axis=1)
    truth = np.where(has, scores[np.arange(len(scores)), hit.argmax(axis=1)], np.inf)
    ahead = (scores >= truth[:, None]).sum(axis=1) - 1
    return float(np.mean(has & (ahead < k))) if len(scores) else 0.0


def choose_mix(logits: np.ndarray, graph_scores: dict[int, np.ndarray], candidates: np.ndarray, truth: np.ndarray, kinds: int, k: int = 10) -> tuple[np.ndarray, int, float, list]:
    """The graph weights (every combination of MIX_GRID per kind) and history length with the best Recall@k.

    Args:
      logits: [V, C] ranker logits of each event's retrieved candidates (-inf: excluded).
      graph_scores: history length -> [V, C, kinds] scaled graph scores.
      candidates: [V, C] catalog positions; truth: [V] each event's item position.
    Returns:
      (mix [kinds], history length, its Recall@k, [(mix, length, recall)] every setting tried).
    """
    hit = candidates == truth[:, None]  # [V, C]
    tried = []
    grid = np.array(np.meshgrid(*[MIX_GRID] * kinds, indexing="ij")).reshape(kinds, -1).T
    for length, scores in graph_scores.items():
        for mix in grid:
            if length != min(graph_scores) and not mix.any():
                continue  # without the graph the length does not matter
            tried.append((mix.tolist(), length, recall_at(blend(logits, scores, mix), hit, k)))
    best = max(tried, key=lambda t: (round(t[2], 6), -sum(t[0]), -t[1]))  # ties: the smaller weights, the shorter history
    return np.array(best[0], np.float32), best[1], best[2], tried

"""The item graph: per catalog item, its nearest neighbours by co-occurrence and by content.

Edges, each kind kept apart (the served model weighs them):
- cooccurrence: cosine of the binary training user x item matrix (the
  co-occurrence kNN baseline's similarity); items without training
  interactions have none;
- content: cosine of the items' content (each modality L2-normalised,
  concatenated: the content kNN baseline's similarity); every item with
  content has them, new items included, so they are how a new item is
  connected to what a user consumed.

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
KINDS = (COOCCURRENCE, CONTENT)
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


def _top_k_rows(rows: np.ndarray, k: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Dense similarity rows [b, N] (row i is item offset + i) -> top-k positive (positions, weights), self excluded."""
    rows = rows.copy()
    rows[np.arange(len(rows)), offset + np.arange(len(rows))] = 0.0
    k = min(k, rows.shape[1])
    top = np.argpartition(-rows, k - 1, axis=1)[:, :k]
    weights = np.take_along_axis(rows, top, axis=1)
    return np.where(weights > 0, top, -1), np.maximum(weights, 0.0)


def nearest(similarity, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k neighbours of every row of a square similarity (scipy sparse or a callable giving dense row blocks)."""
    size = similarity.shape[0]
    neighbours, weights = np.full([size, k], -1, np.int64), np.zeros([size, k], np.float32)
    for start in range(0, size, BATCH):
        block = similarity[start : start + BATCH]
        block = block.toarray() if sp.issparse(block) else np.asarray(block)
        top, values = _top_k_rows(block.astype(np.float32), k, start)
        neighbours[start : start + len(block), : top.shape[1]], weights[start : start + len(block), : top.shape[1]] = top, values
    return neighbours, weights


class _ContentSimilarity:
    """Lazy content cosine: rows [b, N] on slicing, so the N x N matrix is never held."""

    def __init__(self, content: np.ndarray):
        self.content, self.shape = content, (len(content), len(content))

    def __getitem__(self, rows: slice) -> np.ndarray:
        return self.content[rows] @ self.content.T


def build(users: np.ndarray, positions: np.ndarray, catalog_size: int, content: np.ndarray | None, k: int = NEIGHBOURS) -> ItemGraph:
    """The graph from training interactions (user ids, catalog positions) and content rows [N, D] (unit rows; zeros: none; None: no content)."""
    parts = [nearest(cooccurrence(users, positions, catalog_size), k)]
    if content is not None:
        parts.append(nearest(_ContentSimilarity(content), k))
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


def choose_mix(logits: np.ndarray, graph_scores: dict[int, np.ndarray], candidates: np.ndarray, truth: np.ndarray, kinds: int, k: int = 10) -> tuple[np.ndarray, int, float, list]:
    """The graph weights and history length with the best Recall@k on the validation events.

    Args:
      logits: [V, C] ranker logits of each event's retrieved candidates (-inf: excluded).
      graph_scores: history length -> [V, C, kinds] scaled graph scores.
      candidates: [V, C] catalog positions; truth: [V] each event's item position.
    Returns:
      (mix [kinds], history length, its validation Recall@k, [(mix, length, recall)] every setting tried).
    """
    hit = candidates == truth[:, None]  # [V, C]
    tried = []
    grids = np.array(np.meshgrid(*[MIX_GRID] * kinds, indexing="ij")).reshape(kinds, -1).T
    for length, scores in graph_scores.items():
        for mix in grids:
            if length != min(graph_scores) and not mix.any():
                continue  # without the graph the length does not matter
            order = np.argsort(-blend(logits, scores, mix), axis=1, kind="stable")[:, :k]
            recall = float(np.take_along_axis(hit, order, axis=1).any(axis=1).mean()) if len(truth) else 0.0
            tried.append((mix.tolist(), length, recall))
    best = max(tried, key=lambda t: (round(t[2], 6), -sum(t[0]), -t[1]))  # ties: the smaller weights, the shorter history
    return np.array(best[0], np.float32), best[1], best[2], tried

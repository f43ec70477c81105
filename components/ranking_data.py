"""Training examples for the ranking model, from interactions and the retrieval model.

The ranker orders what retrieval returns, so it learns on that distribution:
each training interaction is a positive (engaged 1; liked iff its rating
reaches `liked_rating`) and `ranking_negatives` items sampled from the
retrieval model's top `ranking_candidates` for the same query, which the user
never interacted with, are negatives (engaged 0; like and rating unweighted).

Items enter as catalog positions; the per-item inputs (id, candidate
embedding, content profile) are gathered from tables by position, so a batch
never materialises the content of every example.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from towers import features as F
from towers.ranking import ENGAGEMENT_WEIGHT, INTERACTION_WEIGHT


def retrieved_negatives(
    queries: np.ndarray,
    catalog_embeddings: np.ndarray,
    users: np.ndarray,
    positives: np.ndarray,
    seen: list[list[int]],
    num_candidates: int,
    num_negatives: int,
    rng: np.random.Generator,
    eligible: np.ndarray | None = None,
    batch_size: int = 2048,
) -> tuple[np.ndarray, np.ndarray]:
    """Per query, `num_negatives` catalog positions among its top `num_candidates` by score.

    A candidate is skipped if it is the query's own item, one the user
    interacted with in training, or not `eligible`. Vectorised per batch
    (MovieLens-1M has ~900k training interactions).

    Only items with training interactions should be eligible: an item without
    any is never a positive, so as a negative it would teach the ranker that
    the OOV id (which all such items share) means "not engaged", and every new
    item would be ranked last.

    Args:
      queries: float32 [n, D] query embeddings.
      catalog_embeddings: float32 [N, D] candidate embeddings by catalog position.
      users: int [n] user index of each query (row of `seen`).
      positives: int [n] catalog position of each query's item (-1: none).
      seen: catalog positions each user index interacted with.
      num_candidates, num_negatives: see HParams.ranking_candidates / ranking_negatives.
      rng: sampling randomness.
      eligible: bool [N] catalog positions that may be negatives (None: all).
    Returns:
      (int64 [n, num_negatives] catalog positions, -1 where fewer were available;
       bool [n] whether the query's own item is among its top `num_candidates`).
    """
    n, size = len(queries), len(catalog_embeddings)
    k = min(num_candidates, size)
    seen_arrays = [np.asarray(row, np.int64) for row in seen]
    out = np.full([n, num_negatives], -1, np.int64)
    retrieved = np.zeros(n, bool)
    batch_size = max(1, min(batch_size, 50_000_000 // max(size, 1)))  # the [batch, N] mask stays < 50 MB
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        scores = queries[start:stop] @ catalog_embeddings.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < size else np.tile(np.arange(k), (stop - start, 1))
        known = np.zeros([stop - start, size], bool)  # [batch, N]: the user's training items
        rows = [seen_arrays[u] for u in users[start:stop]]
        known[np.repeat(np.arange(stop - start), [len(r) for r in rows]), np.concatenate(rows) if rows else []] = True
        own = top == positives[start:stop, None]
        retrieved[start:stop] = own.any(axis=1)
        allowed = ~np.take_along_axis(known, top, axis=1) & ~own
        if eligible is not None:
            allowed &= eligible[top]
        keys = np.where(allowed, rng.random(top.shape), np.inf)  # a random order of the allowed candidates
        picks = np.argsort(keys, axis=1)[:, :num_negatives]
        chosen = np.take_along_axis(top, picks, axis=1)
        width = chosen.shape[1]
        out[start:stop, :width] = np.where(np.isfinite(np.take_along_axis(keys, picks, axis=1)), chosen, -1)
    return out, retrieved


def ranking_rows(users, positions, item_rows, ratings, negatives, retrieved, liked_rating: float) -> dict[str, np.ndarray]:
    """Flat ranking examples: every interaction, then its sampled negatives.

    The engagement task sees an interaction only if retrieval put its item
    among the candidates (`retrieved`): the ranker orders retrieved candidates,
    and positives from outside them (mostly rarely retrieved, long-tail items)
    would teach it that such items are engaged with more often than they are
    among the candidates. Like and rating learn from every interaction.

    Args:
      users: int [n] user indices; positions: int [n] catalog positions of the
        interacted items; item_rows: int [n] row of each interaction (its query
        embedding and context); ratings: float [n];
      negatives, retrieved: from `retrieved_negatives` (-1 = no negative).
    Returns:
      F.USER_INDEX, "position", "row", F.ENGAGED, F.LIKED, F.RATING,
      ENGAGEMENT_WEIGHT, INTERACTION_WEIGHT -> [n + valid negatives].
    """
    keep = positions >= 0
    neg_rows, neg_cols = np.nonzero(negatives >= 0)
    return {
        ENGAGEMENT_WEIGHT: np.concatenate([retrieved[keep].astype(np.float32), np.ones(len(neg_rows), np.float32)]),
        F.USER_INDEX: np.concatenate([users[keep], users[neg_rows]]).astype(np.int64),
        "position": np.concatenate([positions[keep], negatives[neg_rows, neg_cols]]).astype(np.int64),
        "row": np.concatenate([item_rows[keep], item_rows[neg_rows]]).astype(np.int64),
        F.ENGAGED: np.concatenate([np.ones(int(keep.sum()), np.float32), np.zeros(len(neg_rows), np.float32)]),
        F.LIKED: np.concatenate([(ratings[keep] >= liked_rating).astype(np.float32), np.zeros(len(neg_rows), np.float32)]),
        F.RATING: np.concatenate([ratings[keep], np.zeros(len(neg_rows))]).astype(np.float32),
        INTERACTION_WEIGHT: np.concatenate([np.ones(int(keep.sum()), np.float32), np.zeros(len(neg_rows), np.float32)]),
    }


def ranking_dataset(
    rows: dict[str, np.ndarray],
    per_row: dict[str, np.ndarray],
    per_position: dict[str, np.ndarray],
    batch_size: int,
    seed: int,
    new_item: tuple[float, int, np.ndarray] | None = None,
) -> tf.data.Dataset:
    """Shuffled batches of ranking model inputs.

    Args:
      rows: from `ranking_rows`.
      per_row: query-side inputs by interaction row (F.QUERY_EMBEDDING, F.TIME_CONTEXT).
      per_position: item-side inputs by catalog position (F.ITEM_INDEX,
        F.CANDIDATE_EMBEDDING, optionally F.CONTENT_PROFILE).
      new_item: (rate, OOV item index, float32 [N, D] content-only candidate
        embeddings): each example's item is shown, with probability `rate`, as
        a new item is served: the OOV id and the candidate embedding the tower
        computes without the id. Both change together, so the ranker learns to
        score an unknown id from content instead of learning that OOV rows
        come with warm embeddings.
    """
    row_tables = {name: tf.constant(value) for name, value in per_row.items()}
    position_tables = {name: tf.constant(value) for name, value in per_position.items()}
    rate, oov_index, content_only = new_item if new_item is not None else (0.0, 0, None)
    content_only = tf.constant(content_only) if content_only is not None else None

    def gather(batch):
        out = {name: batch[name] for name in (F.USER_INDEX, F.ENGAGED, F.LIKED, F.RATING, ENGAGEMENT_WEIGHT, INTERACTION_WEIGHT)}
        out.update({name: tf.gather(table, batch["row"]) for name, table in row_tables.items()})
        out.update({name: tf.gather(table, batch["position"]) for name, table in position_tables.items()})
        if rate > 0:
            drop = tf.random.uniform(tf.shape(batch["position"]), seed=seed) < rate
            out[F.ITEM_INDEX] = tf.where(drop, tf.constant(oov_index, tf.int64), out[F.ITEM_INDEX])
            out[F.CANDIDATE_EMBEDDING] = tf.where(drop[:, None], tf.gather(content_only, batch["position"]), out[F.CANDIDATE_EMBEDDING])
        return out

    dataset = tf.data.Dataset.from_tensor_slices(rows).shuffle(len(rows[F.USER_INDEX]), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

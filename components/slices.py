"""Evaluation slices of items and users, from the training data.

The exported model carries them (signature `evaluation_features`), so TFMA and
the RetrievalEvaluator slice any eval data by the same definitions:

- item popularity: `head` = the most-interacted HEAD_SHARE of the items seen in
  training, `torso` = the next, up to TORSO_SHARE, `tail` = the rest with at
  least one training interaction, `cold` = none;
- item freshness: `warm` (in training) or `cold` (recommendable only from content);
- item modalities: the content the item has an embedding for, e.g. `text+image`
  (`none` when it has none);
- user activity: training interactions `new` (0), `light` (1 to LIGHT_MAX),
  `medium` (to MEDIUM_MAX), `heavy` (more).
"""

from __future__ import annotations

import numpy as np

from towers import features as F

HEAD_SHARE = 0.1
TORSO_SHARE = 0.5
LIGHT_MAX = 9
MEDIUM_MAX = 29
HEAD, TORSO, TAIL, COLD, WARM = "head", "torso", "tail", "cold", "warm"
NEW, LIGHT, MEDIUM, HEAVY = "new", "light", "medium", "heavy"
NO_CONTENT = "none"


def item_popularity(counts: list[int]) -> list[str]:
    """Popularity bucket of each item from its training interactions (ties broken by position)."""
    counts = np.asarray(counts)
    warm = np.flatnonzero(counts > 0)
    order = warm[np.argsort(-counts[warm], kind="stable")]
    out = np.full(len(counts), COLD, dtype=object)
    for rank, position in enumerate(order):
        share = rank / len(order)
        out[position] = HEAD if share < HEAD_SHARE else TORSO if share < TORSO_SHARE else TAIL
    return out.tolist()


def item_freshness(counts: list[int]) -> list[str]:
    return [WARM if count > 0 else COLD for count in counts]


def item_modalities(item_ids: list[str], content: dict[str, dict]) -> list[str]:
    """'text+image' etc. in F.CONTENT_EMBEDDINGS order, from modality -> (item id -> embedding)."""
    return ["+".join(m for m in F.CONTENT_EMBEDDINGS if item in content.get(m, {})) or NO_CONTENT for item in item_ids]


def user_activity(counts: list[int]) -> list[str]:
    return [NEW if c == 0 else LIGHT if c <= LIGHT_MAX else MEDIUM if c <= MEDIUM_MAX else HEAVY for c in counts]


def catalog_slices(item_ids: list[str], train_counts: dict[str, int], content: dict[str, dict]) -> dict[str, list[str]]:
    """F.ITEM_POPULARITY / F.ITEM_FRESHNESS / F.ITEM_MODALITIES -> one value per catalog item."""
    counts = [train_counts.get(item, 0) for item in item_ids]
    return {
        F.ITEM_POPULARITY: item_popularity(counts),
        F.ITEM_FRESHNESS: item_freshness(counts),
        F.ITEM_MODALITIES: item_modalities(item_ids, content),
    }

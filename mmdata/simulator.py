"""A seeded, documented simulator of user–item interactions over a real catalog.

The tuxpaint catalog has real content (photos, captions, sounds) but no users,
so its interactions are generated here. Each simulated user has latent tastes
over properties that come from the items' *content*, and items have a latent
popularity that content does not reveal:

- category taste: a Dirichlet(CATEGORY_CONCENTRATION) preference over the top
  categories (animals, food, ...), weight 1 on its log;
- favourite subcategories: FAVOURITE_LEAVES folders (e.g. animals/birds) drawn
  from the user's category taste, +LEAF_BOOST;
- colour taste: one favourite colour class (the dominant hue of the item's
  photo, computed from its pixels; 'grey' for unsaturated photos), +COLOUR_BOOST;
- sound lovers: a SOUND_LOVER_SHARE of users prefer items that make a sound,
  +SOUND_BOOST;
- popularity: each item has a latent quality ~ Normal(0, POPULARITY_SCALE)
  added to every user's affinity (a long-tailed popularity skew).

A user arrives at a uniform time in the simulated period and makes
MIN_EVENTS + Geometric(1/MEAN_EXTRA_EVENTS) interactions, exponentially spaced
(mean EVENT_GAP_SECONDS); the items are drawn without replacement from
softmax(affinity) (Gumbel top-k). The rating (1–5) is the affinity's quantile
among the user's choices plus noise. Same seed, same interactions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from towers import features as F

CATEGORY_CONCENTRATION = 0.5
FAVOURITE_LEAVES = 2
LEAF_BOOST = 1.5
COLOUR_BOOST = 1.2
SOUND_LOVER_SHARE = 0.3
SOUND_BOOST = 1.5
POPULARITY_SCALE = 1.0
MIN_EVENTS = 5
MEAN_EXTRA_EVENTS = 20
EVENT_GAP_SECONDS = 6 * 3600
PERIOD_SECONDS = 120 * 86400
START_TIMESTAMP = 1_767_225_600  # 2026-01-01T00:00:00Z


@dataclass(frozen=True)
class ItemTraits:
    """What the simulated tastes are about, one entry per item (same order as `item_ids`)."""

    item_ids: list[str]
    category: list[str]  # top folder, e.g. "animals"
    leaf: list[str]  # folder path, e.g. "animals/birds"
    colour: list[str]  # dominant colour class of the photo
    has_sound: list[bool]


def _users(traits: ItemTraits, num_users: int, seed: int):
    """-> (latent item popularity [n], generator of (user id, affinity [n], chosen positions, timestamps, ratings))."""
    rng = np.random.default_rng(seed)
    n = len(traits.item_ids)
    categories, category_of = np.unique(traits.category, return_inverse=True)
    leaves, leaf_of = np.unique(traits.leaf, return_inverse=True)
    colours, colour_of = np.unique(traits.colour, return_inverse=True)
    leaf_category = np.array([np.searchsorted(categories, leaf.split("/")[0]) for leaf in leaves])
    sound = np.asarray(traits.has_sound, np.float64)
    quality = rng.normal(0.0, POPULARITY_SCALE, n)

    def users():
        for u in range(num_users):
            taste = rng.dirichlet(np.full(len(categories), CATEGORY_CONCENTRATION))
            leaf_weights = taste[leaf_category] + 1e-12
            favourites = rng.choice(
                len(leaves), size=min(FAVOURITE_LEAVES, len(leaves)), replace=False, p=leaf_weights / leaf_weights.sum()
            )
            affinity = np.log(taste[category_of] + 1e-6) + quality
            affinity += LEAF_BOOST * np.isin(leaf_of, favourites)
            affinity += COLOUR_BOOST * (colour_of == rng.integers(len(colours)))
            if rng.random() < SOUND_LOVER_SHARE:
                affinity += SOUND_BOOST * sound
            count = min(n, MIN_EVENTS + rng.geometric(1.0 / MEAN_EXTRA_EVENTS) - 1)
            chosen = np.argsort(-(affinity + rng.gumbel(size=n)))[:count]
            rng.shuffle(chosen)
            times = START_TIMESTAMP + rng.integers(PERIOD_SECONDS) + np.cumsum(rng.exponential(EVENT_GAP_SECONDS, count)).astype(np.int64)
            rank = np.argsort(np.argsort(affinity[chosen])) / max(count - 1, 1)  # 0 = least liked of the chosen
            ratings = np.clip(np.round(1 + 4 * rank + rng.normal(0, 0.7, count)), 1, 5)
            yield f"u{u + 1:05d}", affinity, chosen, times, ratings

    return quality, users()


def simulate(traits: ItemTraits, num_users: int, seed: int = 0) -> pd.DataFrame:
    """-> interactions (user_id, item_id, rating, timestamp), sorted by time.

    Args:
      traits: the catalog's item properties the tastes refer to.
      num_users: simulated users, ids "u00001", ...
      seed: everything random derives from it.
    """
    rows = []
    for user, _, chosen, times, ratings in _users(traits, num_users, seed)[1]:
        rows.extend((user, traits.item_ids[i], float(r), int(t)) for i, r, t in zip(chosen, ratings, times))
    frame = pd.DataFrame(rows, columns=[F.USER_ID, F.ITEM_ID, F.RATING, F.TIMESTAMP])
    return frame.sort_values([F.TIMESTAMP, F.USER_ID], kind="stable").reset_index(drop=True)


def true_affinities(traits: ItemTraits, num_users: int, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The simulator's ground truth for `simulate(traits, num_users, seed)`: (user id -> affinity [n], latent popularity [n]).

    Affinity minus popularity is the part of a user's taste that content
    (category, photo colour, sound) can reveal; benchmarks use both as ceilings.
    """
    quality, users = _users(traits, num_users, seed)
    return {user: affinity for user, affinity, *_ in users}, quality

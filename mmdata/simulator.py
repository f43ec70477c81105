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


@dataclass(frozen=True)
class _Codes:
    """The traits as integer codes: per item its category, leaf and colour index; per leaf its category."""

    categories: np.ndarray
    category_of: np.ndarray
    leaves: np.ndarray
    leaf_of: np.ndarray
    colours: np.ndarray
    colour_of: np.ndarray
    leaf_category: np.ndarray
    sound: np.ndarray  # float [n]: 1 for items that make a sound

    @classmethod
    def of(cls, traits: ItemTraits) -> _Codes:
        categories, category_of = np.unique(traits.category, return_inverse=True)
        leaves, leaf_of = np.unique(traits.leaf, return_inverse=True)
        colours, colour_of = np.unique(traits.colour, return_inverse=True)
        leaf_category = np.array([np.searchsorted(categories, leaf.split("/")[0]) for leaf in leaves])
        return cls(categories, category_of, leaves, leaf_of, colours, colour_of, leaf_category, np.asarray(traits.has_sound, np.float64))


def _users(traits: ItemTraits, num_users: int, seed: int):
    """-> (latent item popularity [n], generator of (user id, affinity [n], chosen positions, timestamps, ratings))."""
    rng = np.random.default_rng(seed)
    n = len(traits.item_ids)
    codes = _Codes.of(traits)
    categories, category_of, leaves, leaf_of = codes.categories, codes.category_of, codes.leaves, codes.leaf_of
    colours, colour_of, leaf_category, sound = codes.colours, codes.colour_of, codes.leaf_category, codes.sound
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


def posterior_predictive(
    traits: ItemTraits, quality: np.ndarray, seen: np.ndarray, samples: int, rng: np.random.Generator
) -> tuple[np.ndarray, float]:
    """How likely each item is to be a user's next choice given the items they chose so far, under the simulator's
    priors, with every item's traits and latent quality known: the best a recommender could do without knowing
    the user's own latent taste (an approximation: see below).

    The user's taste (category preference, favourite subfolders, colour, sound lover) is inferred from `seen` by
    self-normalised importance sampling: `samples` category tastes from Dirichlet(concentration + the seen
    items' category counts), favourite subfolders drawn with weights boosted by how often `seen` holds them, and
    every colour and sound-lover value enumerated; each weighted by prior / proposal x the likelihood of `seen`
    as successive softmax draws without replacement in the given order (the simulator draws the set at once
    and shuffles it: the ordered likelihood approximates that). The prediction is the weighted mean of the next
    draw's softmax over the items not yet chosen.

    Args:
      traits: the catalog's traits (n items); quality: float [n], the latent quality (true_affinities' second value).
      seen: positions (traits order) of the items the user chose, oldest first.
      samples: taste samples (x colours x 2 sound values configurations are weighed).
    Returns:
      (float [n] probabilities, 0 for seen items; the effective sample size of the weights).
    """
    from scipy.special import gammaln, logsumexp

    codes = _Codes.of(traits)
    seen = np.asarray(seen, np.int64)
    n, num_categories, num_leaves = len(quality), len(codes.categories), len(codes.leaves)
    concentration = np.full(num_categories, CATEGORY_CONCENTRATION)
    posterior = concentration + np.bincount(codes.category_of[seen], minlength=num_categories)
    taste = np.maximum(rng.dirichlet(posterior, size=samples), 1e-300)
    log_dirichlet = lambda alpha: gammaln(alpha.sum()) - gammaln(alpha).sum() + ((alpha - 1.0) * np.log(taste)).sum(axis=1)
    log_weight = log_dirichlet(concentration) - log_dirichlet(posterior)
    # favourite leaves: FAVOURITE_LEAVES drawn without replacement, prior weights taste[leaf's category]
    prior_leaf = taste[:, codes.leaf_category] + 1e-12
    proposal_leaf = prior_leaf * (1.0 + 3.0 * np.bincount(codes.leaf_of[seen], minlength=num_leaves))[None, :]
    favourite = np.zeros([samples, num_leaves], bool)
    for row in range(samples):
        prior, proposal = prior_leaf[row].copy(), proposal_leaf[row].copy()
        for _ in range(min(FAVOURITE_LEAVES, num_leaves)):
            prior, proposal = prior / prior.sum(), proposal / proposal.sum()
            leaf = rng.choice(num_leaves, p=proposal)
            log_weight[row] += np.log(prior[leaf]) - np.log(proposal[leaf])
            favourite[row, leaf] = True
            prior[leaf] = proposal[leaf] = 0.0
    base = np.log(taste[:, codes.category_of] + 1e-6) + quality[None, :] + LEAF_BOOST * favourite[:, codes.leaf_of]  # [S, n]
    colour = COLOUR_BOOST * (codes.colour_of[None, :] == np.arange(len(codes.colours))[:, None])  # [colours, n]
    sound = SOUND_BOOST * np.array([0.0, 1.0])[:, None] * codes.sound[None, :]  # [2, n]
    affinity = (base[:, None, None, :] + colour[None, :, None, :] + sound[None, None, :, :]).reshape(-1, n)
    prior_colour_sound = np.log([1.0 - SOUND_LOVER_SHARE, SOUND_LOVER_SHARE])[None, None, :] - np.log(len(codes.colours))
    log_weight = np.broadcast_to(log_weight[:, None, None] + prior_colour_sound, (samples, len(codes.colours), 2)).reshape(-1)
    scaled = np.exp(affinity - affinity.max(axis=1, keepdims=True))
    total = scaled.sum(axis=1)
    chosen = scaled[:, seen]
    remaining = total[:, None] - np.concatenate([np.zeros([len(total), 1]), np.cumsum(chosen, axis=1)[:, :-1]], axis=1)
    log_weight = log_weight + (np.log(chosen) - np.log(remaining)).sum(axis=1)
    weights = np.exp(log_weight - logsumexp(log_weight))
    left = total - chosen.sum(axis=1)
    predictive = (weights / left) @ scaled
    predictive[seen] = 0.0
    return predictive, float(1.0 / np.sum(weights**2))

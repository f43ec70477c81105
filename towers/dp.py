"""Differentially private training of the two towers: DP-SGD with RDP accounting.

Each step, every training example's gradient (over all trainable weights of
both towers) is computed on its own, clipped to L2 norm `clip`, summed, and
Gaussian noise of standard deviation `noise_multiplier * clip` is added before
the Adam update (Abadi et al. 2016). The privacy cost of all steps is tracked
by the RDP accountant of Google's `dp-accounting` as a Poisson-sampled
Gaussian mechanism with sampling rate batch_size / examples; `mmtower run
--dp-epsilon E` picks the smallest noise multiplier whose (E, delta) holds for
the whole training.

One example's loss must depend on no other example, so the in-batch softmax
(whose negatives are the other examples' items) is replaced by a softmax over
`negatives` items sampled uniformly from the vocabulary (public, no user data).

The unit protected is one training example: an event with the history that
precedes it. An event is also in the history of up to HISTORY_LENGTH later
examples of the same user, so one event is covered by group privacy over at
most HISTORY_LENGTH + 1 examples, and a user over all their examples (roughly
that many times epsilon): docs/privacy.md says what is and is not covered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import dp_accounting
import numpy as np
import tensorflow as tf

from towers import features as F
from towers.hparams import HParams

CHUNK = 128  # examples whose per-example gradients are held at once (memory: CHUNK x weights)
MAX_NOISE_MULTIPLIER = 1000.0


def private(hp: HParams) -> HParams:
    """`hp` as DP training runs it: the query tower reads no user id (a user's own embedding row would be
    learned from their events alone) and no co-occurrence item graph is built (its counts are not noised)."""
    return hp.replace(query_features=tuple(f for f in hp.query_features if f != "id"), item_graph=False)


def default_delta(examples: int) -> float:
    """delta = 1 / (10 x training examples): below 1 / n, as DP practice asks, rounded down to 1, 2 or 5 x 10^-k."""
    raw = 1.0 / (10.0 * max(examples, 1))
    exponent = math.floor(math.log10(raw))
    mantissa = max(m for m in (1, 2, 5) if m * 10.0**exponent <= raw)
    return mantissa * 10.0**exponent


def epsilon(noise_multiplier: float, sampling_rate: float, steps: int, delta: float) -> float:
    """The epsilon of `steps` Poisson-sampled Gaussian steps (RDP accountant); inf without noise."""
    if noise_multiplier <= 0:
        return math.inf
    accountant = dp_accounting.rdp.RdpAccountant()
    event = dp_accounting.PoissonSampledDpEvent(sampling_rate, dp_accounting.GaussianDpEvent(noise_multiplier))
    accountant.compose(dp_accounting.SelfComposedDpEvent(event, steps))
    return float(accountant.get_epsilon(delta))


def noise_multiplier_for(target_epsilon: float, sampling_rate: float, steps: int, delta: float, tolerance: float = 1e-3) -> float:
    """The smallest noise multiplier (to `tolerance`) whose epsilon is at most `target_epsilon` (bisection)."""
    if not target_epsilon > 0:
        raise ValueError(f"target epsilon must be > 0, got {target_epsilon}")
    low, high = 0.0, 1.0
    while epsilon(high, sampling_rate, steps, delta) > target_epsilon:
        low, high = high, 2 * high
        if high > MAX_NOISE_MULTIPLIER:
            raise ValueError(f"epsilon {target_epsilon} is out of reach for {steps} steps at sampling rate {sampling_rate:.2g}")
    while high - low > tolerance:
        middle = (low + high) / 2
        if epsilon(middle, sampling_rate, steps, delta) > target_epsilon:
            low = middle
        else:
            high = middle
    return high


@dataclass(frozen=True)
class Budget:
    """What the accountant guarantees for a training: (epsilon, delta) over `steps` steps of `batch_size` of `examples`."""

    epsilon: float
    delta: float
    noise_multiplier: float
    clip: float
    examples: int
    batch_size: int
    steps: int
    negatives: int

    @classmethod
    def plan(cls, target_epsilon: float, delta: float, clip: float, examples: int, batch_size: int, epochs: int, negatives: int) -> Budget:
        """The noise for `target_epsilon` (inf: none) over `epochs` passes (batches of `batch_size`, the last partial one dropped)."""
        if batch_size > examples:
            raise ValueError(f"differentially private training needs at least one full batch: {examples} examples, batch {batch_size}")
        steps = epochs * (examples // batch_size)
        delta = delta or default_delta(examples)
        # epsilon inf: the same clipped training without noise (what DP costs, measured apart from the noise)
        sigma = 0.0 if math.isinf(target_epsilon) else noise_multiplier_for(target_epsilon, batch_size / examples, steps, delta)
        spent = epsilon(sigma, batch_size / examples, steps, delta)
        return cls(spent, delta, sigma, clip, examples, batch_size, steps, negatives)

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def clipped_sum(per_example: list[tf.Tensor], clip: float) -> list[tf.Tensor]:
    """Per-example gradients (each [batch, *weight shape]) -> the sum over the batch of each example's gradient
    scaled to global L2 norm at most `clip` (its norm over every weight together)."""
    squares = [tf.reduce_sum(tf.reshape(tf.square(g), [tf.shape(g)[0], -1]), axis=1) for g in per_example]
    norms = tf.sqrt(tf.add_n(squares))
    scale = tf.minimum(1.0, clip / tf.maximum(norms, 1e-12))
    return [tf.tensordot(scale, g, axes=1) for g in per_example]


def noisy_mean(summed: list[tf.Tensor], clip: float, noise_multiplier: float, batch_size: int) -> list[tf.Tensor]:
    """Clipped sums + N(0, (noise_multiplier * clip)^2) on every coordinate, divided by the (fixed) batch size."""
    return [(s + tf.random.normal(tf.shape(s), stddev=noise_multiplier * clip)) / batch_size for s in summed]


def item_feature_table(dataset: tf.data.Dataset, names: tuple[str, ...], rows: int) -> tuple[dict[str, np.ndarray], int]:
    """Each item's candidate-tower inputs by item index (the catalog's public attributes as Transform wrote them),
    from one pass over training batches; -> (name -> [rows, ...] (zeros for items never seen), examples read)."""
    table: dict[str, np.ndarray] = {}
    examples = 0
    for batch in dataset:
        index = batch[F.ITEM_INDEX].numpy()
        examples += len(index)
        for name in names:
            values = batch[name].numpy()
            if name not in table:
                table[name] = np.zeros((rows,) + values.shape[1:], values.dtype)
            table[name][index] = values
    return table, examples

"""A ScaNN index inside the serving SavedModel (served by the ScaNN-enabled TF Serving image).

The index is kept as the tensors ScaNN serializes to, in variables of unknown
shape, so a loaded model can get a rebuilt index (more items) and be saved as
a new version. The searcher is recreated from those tensors by the first call
of each loaded graph and reused after that (ScaNN's resource kernel caches it).
Saving needs `SAVE_OPTIONS` (the Scann op namespace); loading needs
`import scann` (which registers the ops).
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

TENSOR_NAMES = (
    "scann_config",
    "serialized_partitioner",
    "datapoint_to_token",
    "ah_codebook",
    "hashed_dataset",
    "int8_dataset",
    "int8_multipliers",
    "dp_norms",
    "dataset",
)
SAVE_OPTIONS = tf.saved_model.SaveOptions(namespace_whitelist=["Scann"])


def load_ops() -> bool:
    """Registers the Scann* TF ops (needed before loading a ScaNN-indexed SavedModel); False if scann is not installed."""
    try:
        import scann  # noqa: F401 - importing registers the ops
    except ImportError:
        return False
    return True


def _ops():
    from scann.scann_ops.py import scann_ops

    return scann_ops


def num_leaves(n: int) -> int:
    """Partitions of a tree over `n` items (none under 2,000 items: every item is scored)."""
    return max(2, int(math.sqrt(n))) if n >= 2000 else 0


def build_searcher(embeddings: np.ndarray, k: int, leaves_fraction: float = 0.3, reorder: int | None = None):
    """A dot-product ScaNN searcher over `embeddings`: tree partitioning (about sqrt(N) leaves, `leaves_fraction`
    of them searched), asymmetric hashing, exact re-scoring of the best `reorder` (default max(10 k, 1000)).

    The defaults were chosen on item embeddings grown around trained ones (bench/serving.py): searching 30%
    of the leaves gave recall@10 0.95-0.995 at 100k items and 0.97-0.996 at 1M in two models (20%: 0.91-0.99;
    5%: 0.67); see bench/results/serving.md for the latest speed and recall per share of leaves."""
    embeddings = np.asarray(embeddings, np.float32)
    n = len(embeddings)
    builder = _ops().builder(embeddings, k, "dot_product")
    leaves = num_leaves(n)
    if leaves:
        builder = builder.tree(
            num_leaves=leaves, num_leaves_to_search=max(1, int(leaves * leaves_fraction)), training_sample_size=min(n, 250_000)
        )
    return builder.score_ah(2, anisotropic_quantization_threshold=0.2).reorder(reorder or max(10 * k, 1000)).build()


class ScannIndex(tf.Module):
    """ScaNN's serialized searcher, as variables of unknown shape (replaceable in a loaded model)."""

    def __init__(self, searcher):
        super().__init__()
        for name, value in zip(TENSOR_NAMES, _ops().scann_to_tensors(searcher.searcher_handle)):
            setattr(self, name, tf.Variable(value, shape=tf.TensorShape(None), trainable=False, name=name))

    def search(self, queries: tf.Tensor, k: int) -> tuple[tf.Tensor, tf.Tensor]:
        """-> (row indices int32 [batch, k], scores [batch, k]), best first."""
        ops = _ops()
        handle = ops.tensors_to_scann(*(getattr(self, name) for name in ("dataset",) + TENSOR_NAMES[:-1]))
        result = ops.ScannSearcher(handle).search_batched(queries, final_num_neighbors=k)
        return result.indices, result.distances


def replace(index, searcher) -> None:
    """Points a (loaded) ScannIndex at another searcher, e.g. one over more items."""
    for name, value in zip(TENSOR_NAMES, _ops().scann_to_tensors(searcher.searcher_handle)):
        getattr(index, name).assign(value)

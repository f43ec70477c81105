"""Warm-starting a model from an earlier one whose vocabularies differ (incremental training).

Transform rebuilds its vocabularies on every span: a new id gets a row, and the
others move with their frequency. Loading an embedding table as it is would
give every id another id's row. `save` stores a trained model's weights with
the vocabularies its tables are indexed by; `restore` copies each id's row to
where the new vocabulary puts it (the estimator-era `WarmStartSettings` +
`VocabInfo`, for Keras), leaves the rows of new ids as initialised, and copies
every other weight as it is.

Only trainable weights are saved: the non-trainable ones are tables derived
from the data (content by item index) that the Trainer rebuilds.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import asdict, dataclass

import numpy as np
import tensorflow as tf

STATE_FILE = "state.json"
WEIGHTS_FILE = "weights.npz"


@dataclass(frozen=True)
class VocabRows:
    """An embedding table indexed by a Transform vocabulary: row `offset + i` is vocabulary entry i.

    `offset` rows come first (1 for token tables whose row 0 is padding); the
    rows after the vocabulary are its OOV buckets.
    """

    vocab: str
    offset: int = 0


class WarmStartError(ValueError):
    """The saved model does not fit the new one (another architecture or hyperparameters)."""


def index_by(layer: tf.keras.layers.Embedding, vocab: str, offset: int = 0) -> tf.keras.layers.Embedding:
    """Marks an Embedding layer's table as indexed by vocabulary `vocab` (see VocabRows)."""
    layer.vocab_rows = VocabRows(vocab, offset)
    return layer


def _vocab_rows(model: tf.keras.Model) -> dict:
    """variable.ref() -> VocabRows, for the marked Embedding layers of `model` (already built; a layer the model
    never calls, e.g. the history table of a query tower that reads only the user id, has no table)."""
    return {
        layer.embeddings.ref(): layer.vocab_rows
        for layer in model.submodules
        if isinstance(layer, tf.keras.layers.Embedding) and getattr(layer, "vocab_rows", None) is not None and layer.built
    }


def save(model: tf.keras.Model, vocabularies: dict[str, list[str]], path: str, **facts) -> None:
    """Writes `model`'s trainable weights, the vocabularies its tables use and `facts` (JSON values) to folder `path`."""
    tables = _vocab_rows(model)
    weights = model.trainable_weights
    rows = [tables.get(w.ref()) for w in weights]
    used = sorted({r.vocab for r in rows if r is not None})
    state = {
        "names": [w.name for w in weights],
        "vocab_rows": [asdict(r) if r is not None else None for r in rows],
        "vocabularies": {name: list(vocabularies[name]) for name in used},
        "facts": facts,
    }
    tf.io.gfile.makedirs(path)
    with tf.io.gfile.GFile(os.path.join(path, STATE_FILE), "w") as f:
        json.dump(state, f)
    buffer = io.BytesIO()  # np.savez seeks, which a GFile (gs://, ...) cannot
    np.savez(buffer, *[w.numpy() for w in weights])
    with tf.io.gfile.GFile(os.path.join(path, WEIGHTS_FILE), "wb") as f:
        f.write(buffer.getvalue())


def facts(path: str) -> dict:
    """The `facts` saved with a state."""
    with tf.io.gfile.GFile(os.path.join(path, STATE_FILE)) as f:
        return json.load(f)["facts"]


def exists(path: str) -> bool:
    return tf.io.gfile.exists(os.path.join(path, STATE_FILE))


def remap_rows(old: np.ndarray, new: np.ndarray, old_vocab: list[str], new_vocab: list[str], offset: int) -> tuple[np.ndarray, int]:
    """`new` with each id's row taken from `old` where the id is in both vocabularies.

    The `offset` rows before the vocabulary and the OOV rows after it are taken
    from `old` too; rows of ids only in `new_vocab` stay as they are.
    Returns (table, number of ids whose row was kept).
    """
    out = new.copy()
    position = {item: i for i, item in enumerate(old_vocab)}
    pairs = np.array([(j, position[item]) for j, item in enumerate(new_vocab) if item in position], np.int64).reshape(-1, 2)
    out[offset + pairs[:, 0]] = old[offset + pairs[:, 1]]
    out[:offset] = old[:offset]
    oov_new, oov_old = new.shape[0] - offset - len(new_vocab), old.shape[0] - offset - len(old_vocab)
    if oov_new != oov_old:
        raise WarmStartError(f"OOV rows differ: {oov_old} saved, {oov_new} now")
    if oov_new:
        out[-oov_new:] = old[-oov_old:]
    return out, len(pairs)


def restore(model: tf.keras.Model, path: str, vocabularies: dict[str, list[str]]) -> dict[str, dict[str, int]]:
    """Loads the weights `save` wrote into `model` (built, same architecture), remapping vocabulary-indexed rows.

    Returns, per vocabulary: ids kept (row copied), new (row initialised), dropped (saved, no longer in the vocabulary).
    Raises WarmStartError when the weights do not line up (another architecture or sizes).
    """
    with tf.io.gfile.GFile(os.path.join(path, STATE_FILE)) as f:
        state = json.load(f)
    with tf.io.gfile.GFile(os.path.join(path, WEIGHTS_FILE), "rb") as f:
        saved = np.load(io.BytesIO(f.read()))
    arrays = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    weights = model.trainable_weights
    tables = _vocab_rows(model)
    if len(weights) != len(arrays):
        raise WarmStartError(f"the saved model has {len(arrays)} trainable weights, this one {len(weights)}")
    report: dict[str, dict[str, int]] = {}
    values = []
    for weight, old, name, saved_rows in zip(weights, arrays, state["names"], state["vocab_rows"]):
        rows = tables.get(weight.ref())
        if (rows is None) != (saved_rows is None) or (rows is not None and asdict(rows) != saved_rows):
            raise WarmStartError(f"weight {weight.name} does not line up with the saved {name}")
        if rows is None:
            if tuple(weight.shape) != old.shape:
                raise WarmStartError(f"weight {weight.name} has shape {tuple(weight.shape)}, the saved {name} {old.shape}")
            values.append(old)
            continue
        if tuple(weight.shape[1:]) != old.shape[1:]:
            raise WarmStartError(f"table {weight.name} has rows of {tuple(weight.shape[1:])}, the saved {name} {old.shape[1:]}")
        old_vocab, new_vocab = state["vocabularies"][rows.vocab], vocabularies[rows.vocab]
        table, kept = remap_rows(old, weight.numpy(), old_vocab, new_vocab, rows.offset)
        values.append(table)
        report[rows.vocab] = {"kept": kept, "new": len(new_vocab) - kept, "dropped": len(old_vocab) - kept}
    for weight, value in zip(weights, values):
        weight.assign(value)
    return report

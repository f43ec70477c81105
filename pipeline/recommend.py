"""`mmtower recommend`: top-K for one user from the newest pushed model, in process."""
from __future__ import annotations

import os
import time

from datasets.records import CATALOG_FILE, EXAMPLES_DIR, TRAIN_SPLIT, USERS_FILE, read_records
from pipeline.runs import RunPaths, latest_version_dir
from towers import features as F


class SetupError(RuntimeError):
    """Something a previous command should have produced is missing."""


def load_model(paths: RunPaths):
    """The newest pushed SavedModel under <output>/serving/<model>/."""
    import tensorflow as tf

    version_dir = latest_version_dir(paths.serving_model_dir())
    if version_dir is None:
        raise SetupError(f"no pushed model under {paths.serving_model_dir()}: run `mmtower run --output {paths.output}` (or `make run`) first")
    return tf.saved_model.load(version_dir), version_dir


def _read(paths: RunPaths, relative: str) -> list[dict]:
    path = os.path.join(paths.data_dir, relative)
    if not os.path.exists(path):
        raise SetupError(f"{path} is missing: run `mmtower run --dataset {paths.dataset} --output {paths.output}` first")
    return read_records(path)


def query_inputs(signature, user: dict, timestamp: int) -> dict:
    """Raw inputs of the `query` signature for one user (with their latest items), batch of one.

    The signature names the query features the dataset has (user attributes
    vary); its other inputs (`exclude_seen`, `item_ids`) are the caller's.
    """
    import tensorflow as tf

    values = {**user, F.TIMESTAMP: timestamp}
    specs = signature.structured_input_signature[1]
    scalars = [name for name in specs if name in F.QUERY_FEATURES and name != F.HISTORY]  # not e.g. exclude_seen
    inputs = {name: tf.constant([values[name]], dtype=specs[name].dtype) for name in scalars}
    inputs[F.HISTORY] = tf.constant([values[F.HISTORY]], dtype=tf.string, shape=[1, len(values[F.HISTORY])])
    return inputs


def recommend(model, user: dict, k: int, timestamp: int | None = None, exclude_seen: bool = True, rank: bool = True) -> list[tuple[str, float]]:
    """(item_id, score) best first: the `recommend` signature (retrieve, then rank; score = engagement
    probability), or with rank=False the `query` signature (retrieval alone, dot-product score)."""
    import tensorflow as tf

    from towers import exporter

    if rank:
        signature = model.signatures[exporter.RECOMMEND_SIGNATURE]
        outputs = signature(**query_inputs(signature, user, int(timestamp or time.time())), exclude_seen=tf.constant([exclude_seen]))
    else:
        signature = model.signatures[exporter.QUERY_SIGNATURE]
        outputs = signature(**query_inputs(signature, user, int(timestamp or time.time())))
    ids = [v.decode() for v in outputs[exporter.ITEM_IDS_OUTPUT].numpy()[0][:k]]
    return list(zip(ids, outputs[exporter.SCORES_OUTPUT].numpy()[0][:k].tolist()))


def popular_items(paths: RunPaths, k: int) -> list[tuple[str, float]]:
    """Most-popular fallback: (item_id, training interactions) best first."""
    from components.baseline import read_events

    counts: dict[str, int] = {}
    for _, item, _ in read_events(os.path.join(paths.data_dir, EXAMPLES_DIR, TRAIN_SPLIT)):
        counts[item.decode()] = counts.get(item.decode(), 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]


def main(output: str, dataset: str, user_id: str, k: int, exclude_seen: bool = True, rank: bool = True) -> int:
    paths = RunPaths(os.path.abspath(output), dataset)
    model, version_dir = load_model(paths)
    users = {row[F.USER_ID]: row for row in _read(paths, USERS_FILE)}
    titles = {row[F.ITEM_ID]: row[F.TITLE] for row in _read(paths, CATALOG_FILE)}
    if user_id in users:
        how = "retrieved and ranked" if rank else "retrieved"
        print(f"Top {k} for user {user_id} from {version_dir} ({how}{', already seen items included' if not exclude_seen else ''}):")
        results = recommend(model, users[user_id], k, exclude_seen=exclude_seen, rank=rank)
        score_label = "engagement" if rank else "score"
    else:
        print(f"User {user_id!r} is not in dataset {dataset} ({len(users)} users); showing the {k} most popular items instead.")
        results, score_label = popular_items(paths, k), "interactions"
    for rank, (item_id, score) in enumerate(results, start=1):
        print(f"{rank:>3}. {titles.get(item_id, '?'):<60} {score_label} {score:.4f}  (item {item_id})")
    return 0

"""Raw rows -> tf.Example records, the temporal split, and the quarantine file.

Everything the dataset builders share: they produce pandas frames of raw rows
(column names from towers.features), this module splits them by time and writes
what ImportExampleGen reads.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from towers import features as F
from towers.contract import (
    CATALOG_FILE,
    COLD_ITEMS_FILE,
    EXAMPLES_DIR,
    MANIFEST_FILE,
    QUARANTINE_FILE,
    RECORD_FILE,
    SPAN_DIR,
    SPLITS,
    USERS_FILE,
    VALIDATION_COLD_ITEMS_FILE,
)

if TYPE_CHECKING:  # frames come from the dataset builders; reading records needs no pandas (a fast `mmtower recommend`)
    import pandas as pd


@dataclass
class QuarantinedRow:
    """A source row with a field that could not be converted, and the reason.

    `kept` rows stay in the dataset without that field's value (e.g. an item whose
    year is unreadable); the others were left out.
    """

    source: str
    line: int
    field: str
    reason: str
    raw: str
    kept: bool = False


TEMPORAL = "temporal"  # split kinds (write_dataset)
RANDOM = "random"


@dataclass
class Manifest:
    """What a dataset build produced; written next to the records."""

    dataset: str
    cutoff_timestamp: int
    eval_fraction: float
    num_train: int
    num_eval: int
    num_items: int
    num_users: int
    num_quarantined: int
    max_users: int | None = None
    cold_item_fraction: float = 0.0
    num_cold_items: int = 0
    num_validation_cold_items: int = 0  # the validation period's own new items (not in cold_items.txt)
    quarantined_by_field: dict = field(default_factory=dict)
    split: str = TEMPORAL
    spans: int = 1
    span_train_until: list = field(default_factory=list)  # per span: its latest training timestamp
    span_sizes: list = field(default_factory=list)  # per span: [train, validation, eval] interactions
    validation_fraction: float = 0.0
    num_validation: int = 0
    features: dict = field(default_factory=dict)  # the dataset's FeatureRoles, as a dict
    source: str = ""  # a user's dataset: the fingerprint of its contract and files (DataContract.fingerprint)
    pseudonym_key_id: str = ""  # user ids are pseudonyms made with the key of this id (towers.privacy.key_id); "": raw ids

    @property
    def roles(self) -> F.FeatureRoles:
        return F.FeatureRoles(**{name: tuple(columns) for name, columns in self.features.items()})

    def write(self, data_dir: str) -> None:
        with open(os.path.join(data_dir, MANIFEST_FILE), "w") as f:
            json.dump(asdict(self), f, indent=2)

    @classmethod
    def read(cls, data_dir: str) -> Manifest:
        with open(os.path.join(data_dir, MANIFEST_FILE)) as f:
            return cls(**json.load(f))


def temporal_cutoff(interactions: pd.DataFrame, eval_fraction: float) -> int:
    """The timestamp at the (1 - eval_fraction) quantile: later interactions are evaluation data."""
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    return int(np.quantile(interactions[F.TIMESTAMP].to_numpy(), 1.0 - eval_fraction, method="lower"))


def temporal_split(interactions: pd.DataFrame, eval_fraction: float, cutoff: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Splits interactions at one global time cutoff.

    Every interaction strictly after the cutoff is evaluation data; the cutoff is
    the timestamp at the (1 - eval_fraction) quantile, so ties at the cutoff stay
    in training and no evaluation event precedes a training event.

    Args:
      interactions: rows with a `timestamp` column.
      eval_fraction: wanted share of evaluation rows, in (0, 1).
      cutoff: split here instead (a cutoff fixed before rows were removed).

    Returns:
      (train, eval, cutoff_timestamp).
    """
    cutoff = temporal_cutoff(interactions, eval_fraction) if cutoff is None else cutoff
    times = interactions[F.TIMESTAMP].to_numpy()
    is_eval = times > cutoff
    return interactions[~is_eval], interactions[is_eval], cutoff


def random_split(interactions: pd.DataFrame, eval_fraction: float, seed: int = 42) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A seeded random share `eval_fraction` of the interactions is evaluation data (the TFRS tutorials' protocol)."""
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    is_eval = np.zeros(len(interactions), bool)
    is_eval[np.random.default_rng(seed).permutation(len(interactions))[: int(round(eval_fraction * len(interactions)))]] = True
    return interactions[~is_eval], interactions[is_eval]


def history_from_training(train: pd.DataFrame, evaluation: pd.DataFrame, length: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """F.HISTORY for a random split: each event sees only the user's *training* items before its time.

    With a random split, eval events are scattered through time; a history
    built from all interactions would put eval items into training features.
    """
    train = add_history(train, length)
    by_user = {user: (rows[F.TIMESTAMP].to_numpy(), rows[F.ITEM_ID].tolist()) for user, rows in train.groupby(F.USER_ID, sort=False)}
    histories = []
    for user, timestamp in zip(evaluation[F.USER_ID], evaluation[F.TIMESTAMP]):
        times, items = by_user.get(user, (np.zeros(0), []))
        end = int(np.searchsorted(times, timestamp, side="left"))  # strictly before the event
        histories.append(items[max(0, end - length) : end])
    return train, evaluation.assign(**{F.HISTORY: histories})


def add_history(interactions: pd.DataFrame, length: int) -> pd.DataFrame:
    """Adds F.HISTORY: each user's latest `length` items strictly before the event's time.

    Items rated at the same second as the event are left out, so no event sees
    itself or a simultaneous one. Sorted by time; evaluation events see earlier
    evaluation events too, as a deployed model would see a user's latest
    interactions at query time.

    Args:
      interactions: rows with user_id, item_id, timestamp.
      length: most items kept, oldest first.
    """
    ordered = interactions.sort_values([F.TIMESTAMP, F.USER_ID, F.ITEM_ID], kind="stable").reset_index(drop=True)
    histories: list[list[str]] = [[] for _ in range(len(ordered))]
    for _, rows in ordered.groupby(F.USER_ID, sort=False):
        items, times = rows[F.ITEM_ID].tolist(), rows[F.TIMESTAMP].tolist()
        start = 0  # first row of the current same-timestamp group
        for i, index in enumerate(rows.index):
            if times[i] != times[start]:
                start = i
            histories[index] = items[max(0, start - length) : start]
    return ordered.assign(**{F.HISTORY: histories})


def latest_history(interactions: pd.DataFrame, users: pd.DataFrame, length: int) -> pd.DataFrame:
    """Adds F.HISTORY to `users`: their latest `length` items overall (for serving queries)."""
    ordered = interactions.sort_values([F.TIMESTAMP, F.ITEM_ID], kind="stable")
    latest = ordered.groupby(F.USER_ID)[F.ITEM_ID].agg(lambda items: list(items)[-length:])
    return users.assign(**{F.HISTORY: [latest.get(user, []) for user in users[F.USER_ID]]})


def pick_cold_items(evaluation: pd.DataFrame, fraction: float, seed: int = 7) -> list[str]:
    """A seeded `fraction` of the items seen in evaluation, sorted: the new items of the hold-out."""
    if fraction <= 0:
        return []
    candidates = sorted(evaluation[F.ITEM_ID].unique())
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(candidates, size=max(1, int(round(fraction * len(candidates)))), replace=False).tolist())


def hold_out_items(interactions: pd.DataFrame, cold: list[str], cutoff: int) -> pd.DataFrame:
    """A true new-item hold-out: every interaction with a `cold` item at or before `cutoff` is removed.

    Run before histories are built, so a cold item exists only from the
    evaluation period on: no training target and no training history holds
    it, as for an item added to the catalog after the model was trained.
    """
    return interactions[~(interactions[F.ITEM_ID].isin(cold) & (interactions[F.TIMESTAMP] <= cutoff))]


def to_example(row: dict):
    """One raw row (feature name -> value) as a tf.train.Example; the feature kind follows the value's type.

    str -> bytes_list (UTF-8), bytes -> bytes_list, int (and bool) -> int64_list, float -> float_list (NaN =
    unknown), list of str -> bytes_list; None leaves the feature out (an item without a sound).
    """
    import tensorflow as tf

    feats = {}
    for name, value in row.items():
        if value is None:
            continue
        if isinstance(value, str):
            feats[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))
        elif isinstance(value, bytes):
            feats[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        elif isinstance(value, bool | int | np.integer):
            feats[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
        elif isinstance(value, float | np.floating):
            feats[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))
        elif isinstance(value, list | tuple | np.ndarray):
            feats[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(v).encode() for v in value]))
        else:
            raise TypeError(f"column {name!r}: cannot write a {type(value).__name__} into a tf.Example")
    return tf.train.Example(features=tf.train.Features(feature=feats))


def write_records(frame: pd.DataFrame, path: str) -> int:
    """Writes every row of `frame` as a gzipped TFRecord of tf.Examples."""
    import tensorflow as tf

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for row in frame.to_dict("records"):
            writer.write(to_example(row).SerializeToString())
    return len(frame)


def read_records(path: str, lists: tuple[str, ...] = (F.HISTORY,)) -> list[dict]:
    """Reads a TFRecord file written by `write_records` back into plain dicts.

    `lists`: features read as lists (the others as their one value); pass the dataset's
    FeatureRoles.list_features for records holding multi-valued columns.
    """
    from mmdata.tfrecord import read_examples  # no TensorFlow import: a fast `mmtower recommend`

    rows = []
    for ex in read_examples(path):
        row = {}
        for name, feat in ex.features.feature.items():
            kind = feat.WhichOneof("kind")
            values = list(getattr(feat, kind).value)
            if kind == "bytes_list" and name not in F.RAW_BYTES_FEATURES:
                values = [v.decode() for v in values]
            row[name] = values if name in lists else (values[0] if values else None)
        rows.append(row)
    return rows


def span_dir(data_dir: str, span: int) -> str:
    return os.path.join(data_dir, EXAMPLES_DIR, SPAN_DIR.replace("{SPAN}", str(span)))


def latest_span(data_dir: str) -> int:
    """The highest span number under `<data_dir>/examples/` (what ExampleGen ingests by default)."""
    root = os.path.join(data_dir, EXAMPLES_DIR)
    prefix = SPAN_DIR.split("{")[0]
    spans = (
        [int(name[len(prefix) :]) for name in os.listdir(root) if name.startswith(prefix) and name[len(prefix) :].isdigit()]
        if os.path.isdir(root)
        else []
    )
    if not spans:
        raise FileNotFoundError(f"no {SPAN_DIR} folder under {root}: build the dataset first (mmtower run)")
    return max(spans)


def split_dir(data_dir: str, split: str, span: int | None = None) -> str:
    """`<data_dir>/examples/span-<span>/<split>` (None: the latest span)."""
    return os.path.join(span_dir(data_dir, latest_span(data_dir) if span is None else span), split)


def snapshot_spans(interactions: pd.DataFrame, spans: int) -> list[pd.DataFrame]:
    """Cumulative snapshots: span k of `spans` holds every interaction up to the k/spans time quantile.

    A span is the interaction log as exported at the end of a period, so span k
    contains span k-1 plus what happened since; the last span is everything.
    """
    if spans < 1:
        raise ValueError(f"spans must be >= 1, got {spans}")
    times = interactions[F.TIMESTAMP].to_numpy()
    ends = [int(np.quantile(times, k / spans, method="lower")) for k in range(1, spans)] + [int(times.max())]
    return [interactions[times <= end] for end in ends]


def write_dataset(
    name: str,
    roles: F.FeatureRoles,
    data_dir: str,
    interactions: pd.DataFrame,
    catalog: pd.DataFrame,
    users: pd.DataFrame,
    quarantined: list[QuarantinedRow],
    eval_fraction: float,
    max_users: int | None = None,
    cold_item_fraction: float = 0.0,
    split: str = TEMPORAL,
    spans: int = 1,
    validation_fraction: float = 0.1,
    source: str = "",
    pseudonym_key_id: str = "",
) -> Manifest:
    """Splits and writes a dataset: examples/span-<k>/{train,validation,eval}, catalog, users, quarantine, manifest.

    Args:
      name: registry name of the dataset.
      roles: its declared features (recorded in the manifest; readers of the built data take them from there).
      data_dir: output folder.
      interactions: one row per interaction, with user and item features joined.
      catalog: one row per item (item_id, its declared features, its content: F.CONTENT_FEATURES); the full candidate set.
      users: one row per user with the user features; their latest items are
        added (for serving queries).
      quarantined: rows the builder could not convert.
      eval_fraction: share of interactions (latest by time) held out.
      max_users: recorded in the manifest (the loader applied it).
      cold_item_fraction: share of the eval split's items that are new items:
        their interactions before the eval period are removed before
        histories are built (pick_cold_items, hold_out_items). The validation
        split gets its own new items the same way (the same share of its
        items, their interactions before the validation period removed).
      split: TEMPORAL (the latest eval_fraction by time; histories from all
        earlier interactions) or RANDOM (random_split; histories from training
        interactions only, see history_from_training).
      validation_fraction: share of the training interactions (the latest by
        time; random ones for RANDOM) written as the validation split, on
        which early stopping, settings and baseline parameters are chosen.
      source: recorded in the manifest (a user's dataset: the fingerprint of its contract and files).
      pseudonym_key_id: recorded in the manifest: the user ids are pseudonyms of that key (towers.privacy).
      spans: number of cumulative snapshots (snapshot_spans), each split by
        time on its own; spans 1..spans-1 stand for the data of earlier
        scheduled runs, the last span is the whole dataset. Temporal split only.
    """
    if split == TEMPORAL:
        cutoff = temporal_cutoff(interactions, eval_fraction)
        cold_items = pick_cold_items(interactions[interactions[F.TIMESTAMP] > cutoff], cold_item_fraction)
        interactions = hold_out_items(interactions, cold_items, cutoff)
        # The validation period gets new items of its own, so that cold-start choices can be made on it.
        training_period = interactions[interactions[F.TIMESTAMP] <= cutoff]
        validation_cutoff = temporal_cutoff(training_period, validation_fraction)
        recent = training_period[(training_period[F.TIMESTAMP] > validation_cutoff) & ~training_period[F.ITEM_ID].isin(cold_items)]
        validation_cold = pick_cold_items(recent, cold_item_fraction, seed=8)
        interactions = add_history(hold_out_items(interactions, validation_cold, validation_cutoff), F.HISTORY_LENGTH)
        snapshots = snapshot_spans(interactions, spans)
        # the last span is split at the cutoffs the new items were chosen by (rows were removed since)
        splits = []
        for snapshot in snapshots[:-1]:
            train, evaluation, _ = temporal_split(snapshot, eval_fraction)
            splits.append((*temporal_split(train, validation_fraction)[:2], evaluation))
        train, evaluation, _ = temporal_split(snapshots[-1], eval_fraction, cutoff)
        splits.append((*temporal_split(train, validation_fraction, validation_cutoff)[:2], evaluation))
    elif split == RANDOM:
        if spans != 1:
            raise ValueError("spans > 1 need the temporal split (a span is a period of time)")
        train, evaluation = random_split(interactions, eval_fraction)
        cold_items = pick_cold_items(evaluation, cold_item_fraction)
        train, validation = random_split(train[~train[F.ITEM_ID].isin(cold_items)], validation_fraction, seed=43)
        validation_cold = pick_cold_items(validation, cold_item_fraction, seed=8)
        train = train[~train[F.ITEM_ID].isin(validation_cold)]
        _, validation = history_from_training(train, validation, F.HISTORY_LENGTH)
        splits = [history_from_training(train, evaluation, F.HISTORY_LENGTH)]
        splits = [(splits[0][0], validation, splits[0][1])]
        cutoff = int(splits[0][0][F.TIMESTAMP].max())
    else:
        raise ValueError(f"unknown split {split!r}; known: {TEMPORAL}, {RANDOM}")
    train, validation, evaluation = splits[-1]
    os.makedirs(data_dir, exist_ok=True)
    for file_name, items in ((COLD_ITEMS_FILE, cold_items), (VALIDATION_COLD_ITEMS_FILE, validation_cold)):
        with open(os.path.join(data_dir, file_name), "w") as f:
            f.write("".join(f"{item}\n" for item in items))
    shutil.rmtree(os.path.join(data_dir, EXAMPLES_DIR), ignore_errors=True)  # an earlier build's spans would be ingested
    span_train_until, span_sizes = [], []
    for span, frames in enumerate(splits, start=1):
        for split_name, frame in zip(SPLITS, frames):
            write_records(frame, os.path.join(split_dir(data_dir, split_name, span), RECORD_FILE))
        span_train_until.append(int(frames[0][F.TIMESTAMP].max()))
        span_sizes.append([len(frame) for frame in frames])
    write_records(catalog, os.path.join(data_dir, CATALOG_FILE))
    write_records(latest_history(interactions, users, F.HISTORY_LENGTH), os.path.join(data_dir, USERS_FILE))
    with open(os.path.join(data_dir, QUARANTINE_FILE), "w") as f:
        for row in quarantined:
            f.write(json.dumps(asdict(row)) + "\n")
    by_field: dict[str, int] = {}
    for row in quarantined:
        by_field[row.field] = by_field.get(row.field, 0) + 1
    manifest = Manifest(
        dataset=name,
        cutoff_timestamp=cutoff,
        eval_fraction=eval_fraction,
        num_train=len(train),
        num_eval=len(evaluation),
        validation_fraction=validation_fraction,
        num_validation=len(validation),
        num_items=len(catalog),
        num_users=int(interactions[F.USER_ID].nunique()),
        num_quarantined=len(quarantined),
        max_users=max_users,
        cold_item_fraction=cold_item_fraction,
        num_cold_items=len(cold_items),
        num_validation_cold_items=len(validation_cold),
        split=split,
        quarantined_by_field=by_field,
        spans=spans,
        span_train_until=span_train_until,
        span_sizes=span_sizes,
        features=json.loads(roles.to_json()),
        source=source,
        pseudonym_key_id=pseudonym_key_id,
    )
    manifest.write(data_dir)
    return manifest

"""A loader's frames written as a user's files would be: items.csv, events.csv, users.csv and their mmtower.yaml.

The built-in datasets are instances of the data contract: their loaders
(mmdata.movielens, mmdata.tuxpaint) read the packaged sources, and
mmdata.registry.build writes what they read here and builds it like a user's
dataset (mmdata.files / mmdata.beam_build). Media are not copied: the items file
names them relative to the folder they already are in (`media_root`).
"""

from __future__ import annotations

import csv
import math
import os

import pandas as pd
import yaml

from mmdata.contract import CONTRACT_FILE
from towers import features as F

ITEMS_FILE, EVENTS_FILE, USERS_FILE = "items.csv", "events.csv", "users.csv"
SEPARATOR = "|"  # between the values of a multi-valued cell


def write_contract(
    out_dir: str,
    name: str,
    roles: F.FeatureRoles,
    interactions: pd.DataFrame,
    catalog: pd.DataFrame,
    users: pd.DataFrame,
    media_root: str | None = None,
    media: dict[str, list[str]] | None = None,
) -> str:
    """Writes the files and the contract declaring them into `out_dir`; returns the contract's path.

    Args:
      out_dir: created if needed; earlier files there are replaced.
      name: the contract's dataset name.
      roles: the dataset's feature columns by role (catalog and users columns).
      interactions: F.USER_ID, F.ITEM_ID, F.TIMESTAMP (unix seconds), F.RATING per event (other columns ignored).
      catalog: F.ITEM_ID, the item feature columns and F.ITEM_TEXT (what the text encoder reads: the
        contract's encoder_text column).
      users: F.USER_ID and the user feature columns (no users file when there are none).
      media_root: the folder the media paths are relative to.
      media: F.IMAGE / F.AUDIO / F.VIDEO -> one path per catalog row ("" = none).
    """
    os.makedirs(out_dir, exist_ok=True)
    media = media or {}
    items = catalog[[F.ITEM_ID, *roles.item_features, F.ITEM_TEXT]].copy()
    for column in roles.item_multivalued:
        items[column] = [_joined(values, column) for values in items[column]]
    for medium, paths in media.items():
        items[medium] = paths
    _write_csv(os.path.join(out_dir, ITEMS_FILE), items)
    _write_csv(os.path.join(out_dir, EVENTS_FILE), interactions[[F.USER_ID, F.ITEM_ID, F.TIMESTAMP, F.RATING]])
    contract = {
        "name": name,
        "items": {
            "path": ITEMS_FILE,
            "id": F.ITEM_ID,
            **_listed(("text", roles.item_text), ("categorical", roles.item_categorical), ("numeric", roles.item_numeric)),
            **({"multi_valued": {column: SEPARATOR for column in roles.item_multivalued}} if roles.item_multivalued else {}),
            "encoder_text": F.ITEM_TEXT,
            **({"media_root": os.path.abspath(media_root)} if media else {}),
            **{medium: medium for medium in media},
        },
        "events": {"path": EVENTS_FILE, "user": F.USER_ID, "item": F.ITEM_ID, "timestamp": F.TIMESTAMP, "rating": F.RATING},
    }
    user_features = [*roles.user_categorical, *roles.user_numeric]
    if user_features:
        _write_csv(os.path.join(out_dir, USERS_FILE), users[[F.USER_ID, *user_features]])
        contract["users"] = {
            "path": USERS_FILE,
            "id": F.USER_ID,
            **_listed(("categorical", roles.user_categorical), ("numeric", roles.user_numeric)),
        }
    path = os.path.join(out_dir, CONTRACT_FILE)
    with open(path, "w") as f:
        f.write(f"# Written by mmdata.export from the built-in {name} loader; `mmtower run --dataset {name}` rewrites it.\n")
        yaml.safe_dump(contract, f, sort_keys=False)
    return path


def _listed(*pairs: tuple[str, tuple[str, ...]]) -> dict:
    return {key: list(columns) for key, columns in pairs if columns}


def _joined(values, column: str) -> str:
    values = [str(value) for value in values]
    if any(SEPARATOR in value for value in values):
        raise ValueError(f"{column}: a value holds the separator {SEPARATOR!r}: {values}")
    return SEPARATOR.join(values)


def _write_csv(path: str, frame: pd.DataFrame) -> None:
    """`frame` as CSV: NaN as an empty cell, whole floats of integer columns as they are."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(frame.columns)
        for row in frame.itertuples(index=False):
            writer.writerow(["" if isinstance(value, float) and math.isnan(value) else value for value in row])

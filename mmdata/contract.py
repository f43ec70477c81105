"""The data contract: a YAML file (mmtower.yaml) in which a user declares their own items, events and users.

A user brings files (CSV, Parquet, JSON lines or TFRecord of tf.Example) and
writes, without code, which column plays which role:

    name: my-shop                 # dataset name (letters, digits, - _)
    items:
      path: items.csv             # relative to this file, or gs://...
      id: item_id
      text: [title, description]  # the first is the display name; all feed the text encoder
      encoder_text: blurb         # optional: the column the text encoder reads instead (not a feature)
      categorical: [brand]
      multi_valued: {tags: "|"}   # column -> separator inside a CSV cell
      numeric: [price]
      media_root: media           # folder the media paths are relative to (default: this file's folder)
      image: photo                # optional columns holding media file paths
      audio: sound
      video: clip
    events:
      path: events.csv
      user: user_id
      item: item_id
      timestamp: ts               # unix seconds, or ISO 8601 text
      rating: stars               # optional; 1.0 when absent
    users:                        # optional
      path: users.csv
      id: user_id
      categorical: [country]
      numeric: [age]
    split:                        # optional; these are the defaults
      eval_fraction: 0.1
      validation_fraction: 0.1
      cold_items: 0.0

`load` checks the contract against the files' columns and names the file and
key of every mistake; `draft` guesses a contract from the files. The files are
read into column lists by `read_table` (shared with mmdata.files, which turns
them into the built-in loaders' frames).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import posixpath
import re
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime

import yaml

from towers import features as F

CONTRACT_FILE = "mmtower.yaml"
SAMPLE_ROWS = 1000  # rows read to check the declared columns (JSON lines / TFRecord: the keys seen there) and to draft
NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
MAX_CELL_CHARS = 16 * 1024 * 1024  # a CSV cell (a long description) may hold this much; Python's csv stops at 128 KiB

# File formats by file name ending (the longest ending wins).
CSV, PARQUET, JSONL, TFRECORD = "csv", "parquet", "jsonl", "tfrecord"
FORMATS = {".csv": CSV, ".parquet": PARQUET, ".jsonl": JSONL, ".json": JSONL, ".tfrecord": TFRECORD, ".tfrecord.gz": TFRECORD}

# Media file endings, by modality (values of the image / audio / video columns).
MEDIA_SUFFIXES = {
    F.IMAGE: (".png", ".jpg", ".jpeg", ".webp"),
    F.AUDIO: (".wav", ".ogg", ".flac", ".mp3"),
    F.VIDEO: (".mp4", ".webm", ".mkv", ".mov", ".avi"),
}
TEXT_MODALITY = "text"

# The project's raw names, and the only contract keys whose column may carry them (the reader renames
# those columns to exactly that name). Any other column named so would clash with the project's own.
RESERVED = {
    F.USER_ID: ("events.user", "users.id"),
    F.ITEM_ID: ("items.id", "events.item"),
    F.TIMESTAMP: ("events.timestamp",),
    F.RATING: ("events.rating",),
    F.IMAGE: ("items.image",),
    F.AUDIO: ("items.audio",),
    F.VIDEO: ("items.video",),
    F.HISTORY: (),
    F.ITEM_TEXT: ("items.encoder_text",),
    F.SEEN_ITEMS: (),
}
# Transformed features every dataset has: a feature column whose transformed name is one of them would clash.
ALWAYS_TRANSFORMED = (F.USER_INDEX, F.ITEM_INDEX, F.HISTORY_TOKENS, F.TIME_CONTEXT, F.RECENCY_BUCKET)


class ContractError(ValueError):
    """A data contract that does not match its files (the message names the file and the key)."""


@dataclass(frozen=True)
class ItemsSpec:
    """The items file: one row per item. Paths are resolved (absolute, or gs://...)."""

    path: str
    id: str
    text: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    multi_valued: tuple[tuple[str, str], ...] = ()  # (column, separator inside a CSV cell)
    numeric: tuple[str, ...] = ()
    media_root: str = ""  # folder the media paths are relative to; the contract's folder when not declared
    encoder_text: str | None = None  # the column the text encoder reads; None: the text columns joined with ". "
    image: str | None = None
    audio: str | None = None
    video: str | None = None

    @property
    def multi_valued_columns(self) -> tuple[str, ...]:
        return tuple(column for column, _ in self.multi_valued)

    @property
    def media(self) -> dict[str, str]:
        """Declared media columns by raw feature name (F.IMAGE / F.AUDIO / F.VIDEO)."""
        declared = {F.IMAGE: self.image, F.AUDIO: self.audio, F.VIDEO: self.video}
        return {medium: column for medium, column in declared.items() if column}


@dataclass(frozen=True)
class EventsSpec:
    """The events file: one row per interaction (user, item, time and an optional rating)."""

    path: str
    user: str
    item: str
    timestamp: str
    rating: str | None = None


@dataclass(frozen=True)
class UsersSpec:
    """The optional users file: one row per user with its attributes."""

    path: str
    id: str
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()


@dataclass(frozen=True)
class SplitSpec:
    """How the events are split (mmdata.records.write_dataset)."""

    eval_fraction: float = 0.1
    validation_fraction: float = 0.1
    cold_items: float = 0.0


@dataclass(frozen=True)
class DataContract:
    """A loaded, checked data contract; `file` is the YAML file it came from."""

    name: str
    items: ItemsSpec
    events: EventsSpec
    users: UsersSpec | None = None
    split: SplitSpec = field(default_factory=SplitSpec)
    file: str = CONTRACT_FILE
    # Set by the build, never read from the YAML: user ids are replaced by their pseudonyms (towers.privacy) as they
    # are read, and rows that failed to parse are quarantined without their raw text. None: raw ids are kept.
    privacy_key: bytes | None = field(default=None, repr=False, compare=False)
    # Set by the build: users to leave out entirely (`mmtower forget`), by their stored id (the pseudonym, if any).
    forgotten: frozenset = field(default=frozenset(), repr=False, compare=False)

    def fingerprint(self) -> str:
        """Changes when the contract or one of its files changes (size or modification time): a new build is due."""
        import tensorflow as tf

        parts = [self.file]
        for path in (self.file, self.items.path, self.events.path, self.users.path if self.users else None):
            if path:
                stat = tf.io.gfile.stat(path)
                parts.append(f"{path}:{stat.length}:{stat.mtime_nsec}")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]

    @property
    def dataset(self) -> str:
        """The dataset's name in the registry, the output folders and the pipeline name ([a-z0-9-])."""
        return self.name.lower().replace("_", "-")

    @property
    def roles(self) -> F.FeatureRoles:
        """The optional feature columns by role, under the names the user gave them."""
        users = self.users or UsersSpec(path="", id="")
        return F.FeatureRoles(
            user_categorical=users.categorical,
            user_numeric=users.numeric,
            item_text=self.items.text,
            item_categorical=self.items.categorical,
            item_multivalued=self.items.multi_valued_columns,
            item_numeric=self.items.numeric,
        )

    @property
    def modalities(self) -> tuple[str, ...]:
        """The item content the catalog carries: "text" when there is a text or encoder_text column, then the declared media."""
        text = self.items.text or self.items.encoder_text
        return ((TEXT_MODALITY,) if text else ()) + tuple(self.items.media)


# --- Reading the files -------------------------------------------------------------------------------------


@dataclass
class Table:
    """A data file read into columns.

    Attributes:
      file: the file's name (for messages and quarantine rows).
      columns: column -> one value per row: text for CSV; JSON values for JSON lines; Python values
        (lists, numbers, datetimes) for Parquet; for TFRecord, a feature's single value or its list of
        values (bytes decoded as UTF-8). None where a row has no value.
      lines: each row's 1-based line in the file (CSV: the header is line 1; JSON lines: its physical
        line), or its record number (Parquet, TFRecord).
      bad_rows: rows that could not be read at all, as (line, reason, short raw text).
    """

    file: str
    columns: dict[str, list]
    lines: list[int]
    bad_rows: list[tuple[int, str, str]] = field(default_factory=list)

    def take(self, rows: list[int]) -> Table:
        """The table restricted to the row positions `rows`."""
        columns = {name: [values[i] for i in rows] for name, values in self.columns.items()}
        return Table(self.file, columns, [self.lines[i] for i in rows], self.bad_rows)


def file_format(path: str) -> str | None:
    """CSV / PARQUET / JSONL / TFRECORD from the file name, or None."""
    endings = sorted((ending for ending in FORMATS if path.lower().endswith(ending)), key=len)
    return FORMATS[endings[-1]] if endings else None


def short(value, limit: int = 80) -> str:
    """A value's repr, cut to `limit` characters (quarantine rows and messages never carry more)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_table(path: str, limit: int | None = None) -> Table:
    """Reads a data file (CSV, Parquet, JSON lines, TFRecord; local or gs://) into columns.

    Args:
      path: the file.
      limit: read at most this many rows (None: all).

    Returns:
      The Table.

    Raises:
      ContractError: the file is missing, of an unknown kind, or cannot be parsed at all.
    """
    kind = file_format(path)
    if kind is None:
        raise ContractError(f"{path}: unknown file kind; known endings: {', '.join(FORMATS)}")
    if not _exists(path):
        raise ContractError(f"{path}: file not found")
    readers = {CSV: _read_csv, PARQUET: _read_parquet, JSONL: _read_jsonl, TFRECORD: _read_tfrecord}
    return readers[kind](path, limit)


def _exists(path: str) -> bool:
    if "://" in path:
        import tensorflow as tf

        return tf.io.gfile.exists(path)
    return os.path.isfile(path)


def _open(path: str):
    """A binary stream of the file (gs://...: read whole through tf.io.gfile)."""
    if "://" in path:
        import tensorflow as tf

        with tf.io.gfile.GFile(path, "rb") as f:
            return io.BytesIO(f.read())
    return open(path, "rb")


def iter_csv(stream, path: str):
    """Reads a CSV file's byte stream: yields its header (column names) first, then (line, fields) for each
    well-formed row and (line, reason, raw) for a row with the wrong number of fields. A quoted cell may span
    lines: a row's line is where it starts (the header is line 1); a blank line is no row.

    Raises ContractError naming `path` for an empty file, a repeated column, or bytes that are not UTF-8 CSV.
    """
    csv.field_size_limit(max(csv.field_size_limit(), MAX_CELL_CHARS))  # process-wide; only ever raised
    reader = csv.reader(io.TextIOWrapper(stream, encoding="utf-8-sig", newline=""))
    try:
        header = [name.strip() for name in next(reader, [])]
        if not header:
            raise ContractError(f"{path}: empty CSV file (no header line)")
        if len(set(header)) < len(header):
            raise ContractError(f"{path}: the header names a column twice: {', '.join(header)}")
        yield header
        start = reader.line_num + 1
        for row in reader:
            if len(row) == len(header):
                yield start, row
            elif row:
                yield start, f"{len(row)} fields where the header has {len(header)}; row dropped", short(",".join(row))
            start = reader.line_num + 1
    except (UnicodeDecodeError, csv.Error) as error:
        raise ContractError(f"{path}: not a readable UTF-8 CSV file (near line {reader.line_num + 1}): {error}") from None


def _read_csv(path: str, limit: int | None) -> Table:
    rows, lines, bad = [], [], []
    with _open(path) as stream:
        records = iter_csv(stream, path)
        header = next(records)
        for record in records:
            if len(record) == 2:
                lines.append(record[0])
                rows.append(record[1])
            else:
                bad.append(record)
            if limit is not None and len(rows) >= limit:
                break
    columns = {name: [row[i] for row in rows] for i, name in enumerate(header)}
    return Table(os.path.basename(path), columns, lines, bad)


def _read_jsonl(path: str, limit: int | None) -> Table:
    records, lines, bad = [], [], []
    with _open(path) as stream:
        for number, raw in enumerate(stream, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except ValueError as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
                bad.append((number, f"not a JSON line ({type(error).__name__}); row dropped", short(raw[:60])))
                continue
            if not isinstance(record, dict):
                bad.append((number, "not a JSON object; row dropped", short(record)))
                continue
            records.append(record)
            lines.append(number)
            if limit is not None and len(records) >= limit:
                break
    if bad and not records:
        raise ContractError(f"{path}: not a JSON lines file (line {bad[0][0]}: {bad[0][1]})")
    return _table_of_records(os.path.basename(path), records, lines, bad)


def _table_of_records(file: str, records: list[dict], lines: list[int], bad: list) -> Table:
    names = list(dict.fromkeys(name for record in records for name in record))  # first seen order
    return Table(file, {name: [record.get(name) for record in records] for name in names}, lines, bad)


def _read_parquet(path: str, limit: int | None) -> Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with _open(path) as stream:
        try:
            parquet = pq.ParquetFile(stream)
            if limit is None:
                table = parquet.read()
            else:
                table = next(parquet.iter_batches(batch_size=limit), None) or parquet.schema_arrow.empty_table()
            columns = table.to_pydict()
        except (pa.ArrowException, OSError) as error:
            raise ContractError(f"{path}: not a readable Parquet file: {error}") from None
    rows = len(next(iter(columns.values()), []))
    return Table(os.path.basename(path), columns, list(range(1, rows + 1)))


def _read_tfrecord(path: str, limit: int | None) -> Table:
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    compression = "GZIP" if path.lower().endswith(".gz") else ""
    records = []
    try:
        for raw in tf.data.TFRecordDataset(path, compression_type=compression).take(-1 if limit is None else limit):
            example = tf.train.Example.FromString(raw.numpy())
            record = {}
            for name, feature in sorted(example.features.feature.items()):  # a map: no order of its own
                kind = feature.WhichOneof("kind")
                values = list(getattr(feature, kind).value) if kind else []
                values = [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else v for v in values]
                record[name] = None if not values else values[0] if len(values) == 1 else values
            records.append(record)
    except (tf.errors.OpError, DecodeError) as error:  # a corrupt record; a record that is no tf.Example
        message = getattr(error, "message", str(error)).split(" [Op:")[0]
        raise ContractError(f"{path}: not a readable TFRecord file of tf.Example: {type(error).__name__}: {message}") from None
    return _table_of_records(os.path.basename(path), records, list(range(1, len(records) + 1)), [])


def parse_timestamp(value) -> int | None:
    """Unix seconds from a number, a numeric text, an ISO 8601 text or a datetime (naive = UTC); None if none of these."""
    if isinstance(value, bool):
        return None
    if isinstance(value, datetime):
        return int((value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp())
    if isinstance(value, int | float):
        return int(value) if math.isfinite(value) else None
    if not isinstance(value, str):
        return None
    text = value.strip()
    try:
        return parse_timestamp(float(text))
    except ValueError:
        pass
    try:
        return parse_timestamp(datetime.fromisoformat(text))
    except ValueError:
        return None


# --- Loading and checking a contract ---------------------------------------------------------------------------


class _Section:
    """One mapping of the contract (e.g. `items`): typed access to its keys, errors naming file and key."""

    def __init__(self, file: str, name: str, mapping, known: tuple[str, ...]):
        self.file, self.name, self.mapping = file, name, mapping
        if not isinstance(mapping, dict):
            raise self.error("", f"expected a mapping of {', '.join(known)}")
        unknown = sorted(str(key) for key in mapping if key not in known)
        if unknown:
            raise self.error(unknown[0], f"unknown key; known keys: {', '.join(known)}")

    def error(self, key: str, message: str) -> ContractError:
        where = ".".join(part for part in (self.name, key) if part)
        return ContractError(f"{self.file}: {where}: {message}" if where else f"{self.file}: {message}")

    def text(self, key: str, required: bool = False) -> str | None:
        value = self.mapping.get(key)
        if value is None:
            if required:
                raise self.error(key, "missing")
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"expected a column or file name (quote it if it looks like a number), got {value!r}")
        return value

    def names(self, key: str) -> tuple[str, ...]:
        value = self.mapping.get(key)
        if value is None:
            return ()
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not all(isinstance(v, str) and v.strip() for v in values):
            raise self.error(key, f"expected a list of column names (quote ones that look like numbers), got {value!r}")
        return tuple(values)

    def separators(self, key: str) -> tuple[tuple[str, str], ...]:
        value = self.mapping.get(key)
        if value is None:
            return ()
        if not isinstance(value, dict):
            raise self.error(key, f'expected a mapping of column -> separator, e.g. {{tags: "|"}}, got {value!r}')
        for column, separator in value.items():
            if not isinstance(column, str) or not isinstance(separator, str) or not separator:
                raise self.error(key, f"expected column -> separator (a non-empty text), got {column!r}: {separator!r}")
        return tuple(value.items())

    def fraction(self, key: str, default: float, zero_allowed: bool = False) -> float:
        value = self.mapping.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1 or (value == 0 and not zero_allowed):
            raise self.error(key, f"expected a number in {'[' if zero_allowed else '('}0, 1), got {value!r}")
        return float(value)


def _section_keys(spec) -> tuple[str, ...]:
    return tuple(f.name for f in fields(spec))


def _resolve(base: str, path: str) -> str:
    """A contract path made absolute: relative ones are relative to the contract's folder `base`."""
    if "://" in path or os.path.isabs(path):
        return path
    if "://" in base:
        return posixpath.join(base, path)
    return os.path.normpath(os.path.join(base, path))


def load(path: str) -> DataContract:
    """Reads and checks a data contract: its keys, its values, and its columns against the files' first rows.

    Args:
      path: the YAML file (local or gs://); the data paths in it are relative to its folder.

    Returns:
      The DataContract, its paths resolved.

    Raises:
      ContractError: the first mistake found, naming the file and the key.
    """
    path = str(path)
    if not _exists(path):
        raise ContractError(f"{path}: file not found")
    try:
        with _open(path) as stream:
            document = yaml.safe_load(stream)
    except yaml.YAMLError as error:
        raise ContractError(f"{path}: not valid YAML: {error}") from None
    top = _Section(path, "", document, ("name", "items", "events", "users", "split"))
    base = posixpath.dirname(path) if "://" in path else os.path.dirname(os.path.abspath(path))
    name = top.text("name", required=True)
    if not NAME_PATTERN.fullmatch(name):
        raise top.error("name", f"{name!r}: use letters, digits, - and _ only")
    for key in ("items", "events"):
        if document.get(key) is None:
            raise top.error(key, "missing")
    items = _Section(path, "items", document["items"], _section_keys(ItemsSpec))
    events = _Section(path, "events", document["events"], _section_keys(EventsSpec))
    users = _Section(path, "users", document["users"], _section_keys(UsersSpec)) if document.get("users") is not None else None
    split = _Section(path, "split", document.get("split") or {}, _section_keys(SplitSpec))
    contract = DataContract(
        name=name,
        items=ItemsSpec(
            path=_resolve(base, items.text("path", required=True)),
            id=items.text("id", required=True),
            text=items.names("text"),
            categorical=items.names("categorical"),
            multi_valued=items.separators("multi_valued"),
            numeric=items.names("numeric"),
            media_root=_resolve(base, items.text("media_root") or "."),
            encoder_text=items.text("encoder_text"),
            image=items.text("image"),
            audio=items.text("audio"),
            video=items.text("video"),
        ),
        events=EventsSpec(
            path=_resolve(base, events.text("path", required=True)),
            user=events.text("user", required=True),
            item=events.text("item", required=True),
            timestamp=events.text("timestamp", required=True),
            rating=events.text("rating"),
        ),
        users=None
        if users is None
        else UsersSpec(
            path=_resolve(base, users.text("path", required=True)),
            id=users.text("id", required=True),
            categorical=users.names("categorical"),
            numeric=users.names("numeric"),
        ),
        split=SplitSpec(
            eval_fraction=split.fraction("eval_fraction", SplitSpec.eval_fraction),
            validation_fraction=split.fraction("validation_fraction", SplitSpec.validation_fraction),
            cold_items=split.fraction("cold_items", SplitSpec.cold_items, zero_allowed=True),
        ),
        file=path,
    )
    _check_columns(contract, items, events, users)
    return contract


def _roles(contract: DataContract) -> dict[str, list[tuple[str, str]]]:
    """Section -> [(key, column)] of every column the contract uses, in the order they are checked."""
    items, events = contract.items, contract.events
    roles = {
        "items": [("id", items.id)]
        + [("text", c) for c in items.text]
        + [("categorical", c) for c in items.categorical]
        + [("multi_valued", c) for c in items.multi_valued_columns]
        + [("numeric", c) for c in items.numeric]
        + ([("encoder_text", items.encoder_text)] if items.encoder_text else [])
        + [(medium, column) for medium, column in items.media.items()],
        "events": [("user", events.user), ("item", events.item), ("timestamp", events.timestamp)]
        + ([("rating", events.rating)] if events.rating else []),
    }
    if contract.users:
        roles["users"] = (
            [("id", contract.users.id)]
            + [("categorical", c) for c in contract.users.categorical]
            + [("numeric", c) for c in contract.users.numeric]
        )
    return roles


def name_problem(section: str, key: str, column: str) -> str | None:
    """Why `column` may not play role `section.key` (a reserved or clashing name), or None."""
    role = f"{section}.{key}"
    if column in RESERVED and role not in RESERVED[column]:
        allowed = " or ".join(RESERVED[column]) or "no role"
        return f"column {column!r} is named like the project's own {column!r} feature (allowed for {allowed}); rename it"
    transformed = {"categorical": F.index_feature, "numeric": F.z_feature, "text": F.tokens_feature, "multi_valued": F.tokens_feature}
    if key in transformed and transformed[key](column) in ALWAYS_TRANSFORMED:
        return f"column {column!r} would become {transformed[key](column)!r}, a feature the project computes itself; rename it"
    return None


def _check_columns(contract: DataContract, *sections: _Section | None) -> None:
    """Every declared column exists in its file, plays one role, and clashes with no project name."""
    paths = {"items": contract.items.path, "events": contract.events.path, "users": contract.users.path if contract.users else ""}
    features: dict[str, str] = {}  # feature column -> the key that declared it (items and users are joined into one row)
    for section in (s for s in sections if s is not None):
        try:
            table = read_table(paths[section.name], SAMPLE_ROWS)
        except ContractError as error:
            raise section.error("path", str(error)) from None
        seen: dict[str, str] = {}
        for key, column in _roles(contract)[section.name]:
            if column not in table.columns:
                listed = ", ".join(table.columns) or "none"
                raise section.error(key, f"column {column!r} is not in {table.file} (columns: {listed})")
            if column in seen:
                raise section.error(key, f"column {column!r} is already {section.name}.{seen[column]}; a column plays one role")
            seen[column] = key
            if problem := name_problem(section.name, key, column):
                raise section.error(key, problem)
            if key in ("text", "categorical", "multi_valued", "numeric"):
                if column in features:
                    raise section.error(key, f"column {column!r} is also {features[column]}; user and item features need distinct names")
                features[column] = f"{section.name}.{key}"
    root = contract.items.media_root
    if contract.items.media and "://" not in root and not os.path.isdir(root):
        raise sections[0].error("media_root", f"folder not found: {root}")


# --- Drafting a contract from the files ----------------------------------------------------------------------

ITEM_ID_NAMES = ("item_id", "product_id", "itemid", "productid", "item", "product", "sku", "id")
USER_ID_NAMES = ("user_id", "customer_id", "userid", "customerid", "user", "customer", "client_id", "member_id", "uid", "id")
TIMESTAMP_NAMES = ("timestamp", "ts", "time", "datetime", "date", "event_time", "created_at", "time_stamp")
RATING_NAMES = ("rating", "stars", "score")
DISPLAY_NAMES = ("title", "name", "product_name", "item_name", "caption")  # the first text column: what recommend prints
TEXT_NAMES = DISPLAY_NAMES + ("description", "summary", "text", "body", "overview")
SEPARATORS = ("|", ";")
UNIX_SECONDS = (946_684_800, 4_102_444_800)  # 2000-01-01 .. 2100-01-01: numbers that are most likely times
NUMERIC_SHARE = 0.8  # a column is numeric when this share of its sampled values are numbers (the others become unknown)
COMMENT_COLUMN = 40  # the drafted YAML's comments start here


def _normal(column: str) -> str:
    return re.sub(r"[\s-]+", "_", column.strip().lower())


def _pick(columns, names: tuple[str, ...], taken=()) -> str | None:
    """The column whose name comes first in `names` (compared lower-cased), not among `taken`."""
    by_name = {_normal(column): column for column in columns if column not in taken}
    return next((by_name[name] for name in names if name in by_name), None)


def _present(values: list) -> list:
    return [v for v in values if v is not None and v != "" and not (isinstance(v, float) and math.isnan(v))]


def _is_number(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return math.isfinite(value)
    text = str(value).strip()
    if re.fullmatch(r"0\d+", text):  # a code with a leading zero ("007", zip codes) is text
        return False
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _share(values: list, test) -> float:
    return sum(map(test, values)) / len(values) if values else 0.0


def _is_time(value) -> bool:
    """A date, or a number that is most likely unix seconds."""
    return _is_date(value) or (_is_number(value) and UNIX_SECONDS[0] <= float(value) < UNIX_SECONDS[1])


def _is_date(value) -> bool:
    return isinstance(value, datetime) or (isinstance(value, str) and not _is_number(value) and parse_timestamp(value) is not None)


def guess_role(column: str, values: list) -> tuple[str | None, str]:
    """Guesses an item column's role from its name and a sample of its values.

    Returns:
      (role, detail): role is one of "text", "categorical", "multi_valued" (detail: the separator),
      "numeric", F.IMAGE / F.AUDIO / F.VIDEO, or None (detail: why the column is left out).
    """
    present = _present(values)
    if not present:
        return None, "empty in the sample"
    if any(isinstance(v, list) for v in present):
        return "multi_valued", SEPARATORS[0]
    strings = [str(v).strip() for v in present]
    for medium, suffixes in MEDIA_SUFFIXES.items():
        if sum(s.lower().endswith(suffixes) for s in strings) >= 0.5 * len(strings):
            return medium, f"values are {'/'.join(suffixes)} files"
    name = _normal(column)
    id_like = name == "id" or name.endswith("_id")
    few = len(set(strings)) <= 0.5 * len(strings)
    if id_like:
        return ("categorical", "few distinct ids") if few else (None, "looks like an id (many distinct values)")
    if sum(map(_is_number, present)) >= NUMERIC_SHARE * len(present):
        return "numeric", "numbers"
    if all(_is_date(v) for v in present):
        return None, "dates are not a feature (only events have a time)"
    for separator in SEPARATORS:
        pieces = [piece.strip() for s in strings for piece in s.split(separator)]
        if sum(separator in s for s in strings) >= 0.2 * len(strings) and sum(map(len, pieces)) <= 30 * len(pieces):
            return "multi_valued", separator
    mean_length = sum(map(len, strings)) / len(strings)
    mean_spaces = sum(s.count(" ") for s in strings) / len(strings)
    if name in TEXT_NAMES or mean_length > 30 or mean_spaces >= 3:
        return "text", "free text"
    if few:
        return "categorical", "few distinct values"
    return None, f"{len(set(strings))} distinct values in {len(strings)} rows, not free text"


def _scalar(value: str) -> str:
    """`value` as a YAML scalar: plain when that reads back as the same text, else double-quoted."""
    if re.fullmatch(r"[A-Za-z0-9_./][A-Za-z0-9_.\-/]*", value) and yaml.safe_load(value) == value:
        return value
    return json.dumps(value)


def _line(indent: int, text: str, comment: str) -> str:
    return f"{' ' * indent}{text}".ljust(COMMENT_COLUMN - 1) + f" # {comment}"


def _dataset_name(path: str) -> str:
    folder = os.path.basename(os.path.dirname(os.path.abspath(path))) if "://" not in path else posixpath.basename(posixpath.dirname(path))
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", folder).strip("-")
    return name or "my-dataset"


def _role_line(key: str, required: bool, column: str | None, why: str, choices) -> str:
    if column:
        return _line(2, f"{key}: {_scalar(column)}", why)
    listed = ", ".join(choices) or "none"
    return _line(2, f"# {key}: TODO", f"{'required' if required else 'optional'}: no column named like it; columns: {listed}")


def _feature_lines(section: str, table: Table, taken: set[str], features: set[str], media_root: str | None = None) -> list[str]:
    """Role lines, then left-out comment lines, for the remaining columns of an items or users file.

    Args:
      section: "items" or "users".
      table: a sample of the file.
      taken: columns already given a role (the id).
      features: feature columns chosen so far (items' and users' must differ); this file's are added.
      media_root: written as given when there are media columns.
    """
    roles: dict[str, list] = {"text": [], "categorical": [], "multi_valued": [], "numeric": []}
    media: dict[str, str] = {}
    left_out = []
    allowed = ("text", "categorical", "multi_valued", "numeric", *MEDIA_SUFFIXES) if section == "items" else ("categorical", "numeric")
    for column, values in table.columns.items():
        if column in taken:
            continue
        role, detail = guess_role(column, values)
        if role in MEDIA_SUFFIXES and role in media:
            role, detail = None, f"a second {role} column ({media[role]} is the {role})"
        elif role is not None and role not in allowed:
            role, detail = None, f"looks like {role}, which is not a {section[:-1]} feature"
        elif role is not None and (problem := name_problem(section, role, column)):
            role, detail = None, problem
        elif role in roles and column in features:
            role, detail = None, f"an item feature has the same name {column!r}; rename one to use both"
        if role is None:
            left_out.append(_line(2, f"# {_scalar(column)}: left out", detail))
        elif role in MEDIA_SUFFIXES:
            media[role] = column
        else:
            roles[role].append((column, detail))
            features.add(column)
    roles["text"].sort(key=lambda pair: _normal(pair[0]) not in DISPLAY_NAMES)  # the display name first (stable)
    lines = []
    if roles["text"]:
        names = [column for column, _ in roles["text"]]
        lines.append(
            _line(2, f"text: [{', '.join(map(_scalar, names))}]", f"free text; {names[0]} is the display name; all feed the text encoder")
        )
    if roles["categorical"]:
        lines.append(
            _line(2, f"categorical: [{', '.join(_scalar(c) for c, _ in roles['categorical'])}]", "few distinct values: one vocabulary each")
        )
    if roles["multi_valued"]:
        pairs = ", ".join(f"{_scalar(c)}: {json.dumps(sep)}" for c, sep in roles["multi_valued"])
        lines.append(_line(2, f"multi_valued: {{{pairs}}}", "lists in one cell, split at the separator"))
    if roles["numeric"]:
        lines.append(
            _line(2, f"numeric: [{', '.join(_scalar(c) for c, _ in roles['numeric'])}]", "numbers (unreadable ones become unknown)")
        )
    if media and media_root:
        lines.append(_line(2, f"media_root: {_scalar(media_root)}", "folder the media paths are relative to"))
    elif media:
        lines.append(_line(2, "# media_root: TODO", "optional: folder the media paths are relative to (default: this file's folder)"))
    for medium, column in media.items():
        lines.append(_line(2, f"{medium}: {_scalar(column)}", f"{medium} file paths, relative to media_root"))
    return lines + left_out


def draft(
    items_path: str, events_path: str, users_path: str | None = None, media_root: str | None = None, contract_dir: str | None = None
) -> str:
    """Drafts a data contract from the files' columns and a sample of their values.

    Every line carries a comment saying what it is or why it was guessed; what cannot be guessed is a
    commented-out `TODO` line, and columns left out are listed as comments. Local paths are written relative to
    `contract_dir` (the folder the contract will be saved in; None: as given).

    Args:
      items_path: the items file.
      events_path: the events file.
      users_path: the optional users file.
      media_root: the folder media paths are relative to (default: the contract's folder).
      contract_dir: where the contract will be saved.

    Returns:
      The YAML text; it loads with `load` when every guess was made.
    """
    items, events = read_table(items_path, SAMPLE_ROWS), read_table(events_path, SAMPLE_ROWS)

    def written(path: str | None) -> str | None:
        if path is None or contract_dir is None or "://" in path:
            return path
        return os.path.relpath(os.path.abspath(path), os.path.abspath(contract_dir))

    out = [
        f"# mmtower data contract drafted from {items.file} and {events.file}: check every guess; TODO lines need you.",
        _line(0, f"name: {_scalar(_dataset_name(items_path))}", "dataset name (letters, digits, - _)"),
        _line(0, "items:", "one row per item"),
        _line(2, f"path: {_scalar(written(items_path))}", "items file (relative to this file, or gs://...)"),
    ]
    item_id = _pick(items.columns, ITEM_ID_NAMES)
    out.append(_role_line("id", True, item_id, "item id column (by its name)", items.columns))
    features: set[str] = set()
    out += _feature_lines("items", items, {item_id}, features, written(media_root))
    out += _events_lines(written(events_path), events, item_id)
    if users_path:
        users = read_table(users_path, SAMPLE_ROWS)
        user_id = _pick(users.columns, USER_ID_NAMES)
        out += [_line(0, "users:", "optional: one row per user"), _line(2, f"path: {_scalar(written(users_path))}", "users file")]
        out.append(_role_line("id", True, user_id, "user id column (by its name)", users.columns))
        out += _feature_lines("users", users, {user_id}, features)
    out += [
        _line(0, "split:", "optional; these are the defaults"),
        _line(2, f"eval_fraction: {SplitSpec.eval_fraction}", "latest share of events held out for evaluation"),
        _line(2, f"validation_fraction: {SplitSpec.validation_fraction}", "latest share of the rest, for choices"),
        _line(2, f"cold_items: {SplitSpec.cold_items}", "share of evaluation items held out of training (new items)"),
    ]
    return "\n".join(out) + "\n"


def _events_lines(events_path: str, events: Table, item_id: str | None) -> list[str]:
    user = _pick(events.columns, USER_ID_NAMES)
    item = _pick(events.columns, ((_normal(item_id),) if item_id else ()) + ITEM_ID_NAMES, taken={user})
    timestamp = _pick(events.columns, TIMESTAMP_NAMES, taken={user, item})
    how = "by its name"
    if timestamp is None:  # most values are dates or unix seconds of this century (a few may be broken)
        timed = [c for c, values in events.columns.items() if c not in (user, item) and _share(_present(values), _is_time) >= NUMERIC_SHARE]
        timestamp, how = (timed[0] if timed else None), "its values are times"
    rating = _pick(events.columns, RATING_NAMES, taken={user, item, timestamp})
    out = [_line(0, "events:", "one row per interaction"), _line(2, f"path: {_scalar(events_path)}", "events file")]
    out.append(_role_line("user", True, user, "user id column (by its name)", events.columns))
    out.append(_role_line("item", True, item, "item id column (by its name)", events.columns))
    out.append(_role_line("timestamp", True, timestamp, f"unix seconds or ISO 8601 ({how})", events.columns))
    if rating:
        out.append(_line(2, f"rating: {_scalar(rating)}", "rating of the event (by its name)"))
    else:
        out.append(_line(2, "# rating:", "optional: no column named rating/stars/score; every event counts 1.0"))
    return out

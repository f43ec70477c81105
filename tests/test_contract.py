"""The user-written data contract (mmdata.contract) and the reader of the files it names (mmdata.files)."""

import csv
import json
import math
import os
import wave
from datetime import UTC, datetime

import pandas as pd
import pytest
from PIL import Image

from mmdata import contract, files
from towers import features as F

pytestmark = pytest.mark.unit

ITEM_COLUMNS = ("item_id", "title", "description", "brand", "tags", "price", "code", "photo", "sound")
ABSOLUTE = "<absolute>"  # replaced by an absolute path to a real image inside media_root


def _items(media_root: str) -> list[dict]:
    """The items, format-neutral: tags as lists; a multi-line description; bad rows on CSV lines 3 (price) and 5 to 9."""
    rows = [
        (
            "007",
            "Red chair",
            "A comfortable red chair for the living room",
            "acme",
            ["furniture", "red"],
            49.5,
            "A-1",
            "red.png",
            "chair.wav",
        ),
        ("i2", "Blue lamp", "A bright blue lamp,\nwith a long neck", "acme", ["lighting", " blue "], "abc", "B-2", "blue.png", None),
        ("i3", "Green sofa", "A large green sofa that seats three people", "globex", ["furniture"], 300, "C-3", "../outside.png", None),
        ("i4", "Oak table", "A solid oak table with four matching chairs", "globex", [], 120, "D-4", ABSOLUTE, None),
        ("i5", "Yellow rug", "A soft yellow rug for a cold bedroom floor", "globex", [], 80, "E-5", "link.png", None),
        (None, "Nameless", "An item row without any id at all in it", "acme", [], 1, "F-6", None, None),
        ("i2", "Blue lamp again", "A duplicate row of the blue lamp item", "acme", [], 2, "G-7", None, None),
    ]
    absolute = os.path.join(media_root, "red.png")
    return [dict(zip(ITEM_COLUMNS, row), photo=absolute if row[7] == ABSOLUTE else row[7]) for row in rows]


EVENTS = [  # CSV line 2 onwards
    ("u1", "007", 1700000000, 5),
    ("u1", "i2", "2023-11-15T10:00:00Z", 4),
    ("u2", "i3", 1700000100, 3),
    ("u2", "i4", "2023-11-15T12:00:00+01:00", 2.5),
    ("u3", "i2", 1700000400, 4),
    ("u4", "007", 1700000500, 5),  # line 7: u4 is not in the users file
    ("u1", "nope", 1700000600, 3),  # line 8: unknown item
    (None, "i2", 1700000700, 3),  # line 9: empty user id
    ("u2", "007", "yesterday", 3),  # line 10: bad timestamp
    ("u3", "i3", 1700000800, "great"),  # line 11: bad rating
    ("u1", "i4", "2023-11-16", 4),
    ("u5", "i5", 1700000900, 1),
]
EVENT_COLUMNS = ("user_id", "item_id", "ts", "stars")
USERS = [("u1", "fr", 34), ("u2", "de", "n/a"), ("u3", "fr", 27), ("u5", "de", 40), ("u6", "fr", 31)]  # line 3: bad age
USER_COLUMNS = ("user_id", "country", "age")

CONTRACT = """\
name: test-shop
items:
  path: items.{ext}
  id: item_id
  text: [title, description]
  categorical: [brand]
  multi_valued: {{tags: "|"}}
  numeric: [price]
  media_root: media
  image: photo
  audio: sound
events:
  path: events.{ext}
  user: user_id
  item: item_id
  timestamp: ts
  rating: stars
users:
  path: users.{ext}
  id: user_id
  categorical: [country]
  numeric: [age]
"""
ROLES = F.FeatureRoles(
    user_categorical=("country",),
    user_numeric=("age",),
    item_text=("title", "description"),
    item_categorical=("brand",),
    item_multivalued=("tags",),
    item_numeric=("price",),
)


def _png(path, colour) -> None:
    Image.new("RGB", (4, 4), colour).save(path)


def _wav(path) -> None:
    with wave.open(str(path), "wb") as sound:
        sound.setnchannels(1)
        sound.setsampwidth(2)
        sound.setframerate(8000)
        sound.writeframes(b"\x00\x00" * 80)


def _write(path, columns, rows: list[dict], ext: str) -> None:
    """Writes rows as CSV (lists joined with "|", None as ""), JSON lines (None keys left out) or Parquet (text columns)."""
    if ext == "csv":
        with open(path, "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(columns)
            for row in rows:
                writer.writerow(["|".join(v) if isinstance(v, list) else "" if v is None else v for v in (row[c] for c in columns)])
    elif ext == "jsonl":
        with open(path, "w") as f:
            f.writelines(json.dumps({c: v for c, v in row.items() if v is not None}) + "\n" for row in rows)
    else:  # Parquet columns have one type: every scalar as text
        frame = pd.DataFrame([{c: v if v is None or isinstance(v, list) else str(v) for c, v in row.items()} for row in rows])
        frame.to_parquet(path)


def _make_shop(tmp_path, ext: str) -> None:
    """A shop's files in one format (media: two PNGs, one WAV, a PNG outside media_root and a link to it) and its contract."""
    media = tmp_path / "media"
    media.mkdir()
    _png(media / "red.png", "red")
    _png(media / "blue.png", "blue")
    _wav(media / "chair.wav")
    _png(tmp_path / "outside.png", "green")
    os.symlink(tmp_path / "outside.png", media / "link.png")
    _write(tmp_path / f"items.{ext}", ITEM_COLUMNS, _items(str(media)), ext)
    _write(tmp_path / f"events.{ext}", EVENT_COLUMNS, [dict(zip(EVENT_COLUMNS, row)) for row in EVENTS], ext)
    _write(tmp_path / f"users.{ext}", USER_COLUMNS, [dict(zip(USER_COLUMNS, row)) for row in USERS], ext)
    (tmp_path / "mmtower.yaml").write_text(CONTRACT.format(ext=ext))


@pytest.fixture(params=["csv", "jsonl", "parquet"])
def shop(tmp_path, request):
    """(folder, file ending) of a shop made by _make_shop."""
    _make_shop(tmp_path, request.param)
    return tmp_path, request.param


def _load_with(tmp_path, text: str) -> contract.DataContract:
    path = tmp_path / "mmtower.yaml"
    path.write_text(text)
    return contract.load(str(path))


def test_contract_loads_with_roles_modalities_and_defaults(shop):
    tmp_path, ext = shop
    loaded = contract.load(str(tmp_path / "mmtower.yaml"))
    assert loaded.name == "test-shop"
    assert loaded.roles == ROLES
    assert loaded.modalities == ("text", "image", "audio")
    assert loaded.items.path == str(tmp_path / f"items.{ext}") and loaded.items.media_root == str(tmp_path / "media")
    assert loaded.items.multi_valued == (("tags", "|"),)
    assert loaded.split == contract.SplitSpec(eval_fraction=0.1, validation_fraction=0.1, cold_items=0.0)
    no_media = CONTRACT.format(ext=ext).replace("  image: photo\n  audio: sound\n", "")
    assert _load_with(tmp_path, no_media).modalities == ("text",)


@pytest.mark.parametrize("shop", ["csv"], indirect=True)
@pytest.mark.parametrize(
    "old, new, message",
    [
        (
            "text: [title, description]",
            "text: [title, descr]",
            "mmtower.yaml: items.text: column 'descr' is not in items.csv (columns: item_id, title,",
        ),
        (
            "  numeric: [price]\n",
            "  numeric: [price]\n  colour: brand\n",
            "mmtower.yaml: items.colour: unknown key; known keys: path, id, text,",
        ),
        ("name: test-shop", "name: test-shop\nextra: 1", "mmtower.yaml: extra: unknown key; known keys: name, items, events, users, split"),
        ("categorical: [brand]", "categorical: [title]", "mmtower.yaml: items.categorical: column 'title' is already items.text"),
        ("categorical: [country]", "categorical: [brand]", "mmtower.yaml: users.categorical: column 'brand' is not in users.csv"),
        ("timestamp: ts", "timestamp: stars", "mmtower.yaml: events.rating: column 'stars' is already events.timestamp"),
        ("  user: user_id\n", "", "mmtower.yaml: events.user: missing"),
        ("path: users.csv", "path: people.csv", "mmtower.yaml: users.path: "),
        ("name: test-shop", "name: test shop!", "mmtower.yaml: name: 'test shop!': use letters"),
        ("users:\n", "split:\n  eval_fraction: 1.5\nusers:\n", "mmtower.yaml: split.eval_fraction: expected a number in (0, 1), got 1.5"),
    ],
)
def test_contract_errors_name_the_file_and_the_key(shop, old, new, message):
    tmp_path, _ = shop
    text = CONTRACT.format(ext="csv")
    assert old in text
    with pytest.raises(contract.ContractError) as error:
        _load_with(tmp_path, text.replace(old, new, 1))
    assert message in str(error.value)


def test_reserved_and_shared_feature_names_are_refused(tmp_path):
    (tmp_path / "items.csv").write_text("sku,rating,item,country\na,1,x,fr\n")
    (tmp_path / "events.csv").write_text("user_id,item_id,timestamp\nu,a,1\n")
    (tmp_path / "users.csv").write_text("user_id,country\nu,fr\n")
    base = "name: s\nitems: {{path: items.csv, id: sku, {items}}}\nevents: {{path: events.csv, user: user_id, item: item_id, timestamp: timestamp}}\n"
    with pytest.raises(contract.ContractError, match=r"items\.numeric: column 'rating' is named like the project's own 'rating'"):
        _load_with(tmp_path, base.format(items="numeric: [rating]"))
    with pytest.raises(contract.ContractError, match=r"items\.categorical: column 'item' would become 'item_index'"):
        _load_with(tmp_path, base.format(items="categorical: [item]"))
    users = "users: {path: users.csv, id: user_id, categorical: [country]}\n"
    with pytest.raises(contract.ContractError, match=r"users\.categorical: column 'country' is also items\.categorical"):
        _load_with(tmp_path, base.format(items="categorical: [country]") + users)
    assert _load_with(tmp_path, base.format(items="categorical: [country]")).roles.item_categorical == ("country",)


def test_reader_returns_the_built_in_shape(shop):
    tmp_path, _ = shop
    interactions, catalog, users, quarantined = files.load(contract.load(str(tmp_path / "mmtower.yaml")))
    items = catalog.set_index(F.ITEM_ID)
    assert list(catalog[F.ITEM_ID]) == ["007", "i2", "i3", "i4", "i5"]  # "007" stays text; no id, the duplicate i2 dropped
    assert items.loc["i2", "description"] == "A bright blue lamp,\nwith a long neck"
    assert items.loc["007", F.ITEM_TEXT] == "Red chair. A comfortable red chair for the living room"
    assert items.loc["i2", "tags"] == ["lighting", "blue"] and items.loc["i4", "tags"] == []
    assert items.loc["007", "price"] == 49.5 and math.isnan(items.loc["i2", "price"])
    assert items.loc["007", F.IMAGE] == (tmp_path / "media" / "red.png").read_bytes()
    assert items.loc["i2", F.IMAGE].startswith(b"\x89PNG") and items.loc["007", F.AUDIO].startswith(b"RIFF")
    assert [items.loc[i, F.IMAGE] for i in ("i3", "i4", "i5")] == [None, None, None]  # refused, items kept
    assert items.loc["i2", F.AUDIO] is None
    assert list(users[F.USER_ID]) == ["u1", "u2", "u3", "u5", "u6", "u4"]  # u4 (events only) added, attributes unknown
    u4 = users.set_index(F.USER_ID).loc["u4"]
    assert u4["country"] == "" and math.isnan(u4["age"])
    expected_columns = [F.USER_ID, F.ITEM_ID, F.TIMESTAMP, F.RATING, "country", "age", "title", "description", "brand", "tags", "price"]
    assert list(interactions.columns) == expected_columns
    iso = lambda *args: int(datetime(*args, tzinfo=UTC).timestamp())
    assert list(interactions[F.TIMESTAMP]) == [
        1700000000,
        iso(2023, 11, 15, 10),
        1700000100,
        iso(2023, 11, 15, 11),  # +01:00
        1700000400,
        1700000500,
        iso(2023, 11, 16),
        1700000900,
    ]
    assert list(interactions[F.RATING]) == [5.0, 4.0, 3.0, 2.5, 4.0, 5.0, 4.0, 1.0]
    assert interactions[F.TIMESTAMP].dtype == "int64" and interactions[F.RATING].dtype == "float64"
    assert list(interactions["country"]) == ["fr", "fr", "de", "de", "fr", "", "fr", "de"]
    assert list(interactions["brand"]) == ["acme", "acme", "globex", "globex", "acme", "acme", "globex", "globex"]
    assert interactions.loc[1, "tags"] == ["lighting", "blue"]


def test_every_bad_value_is_quarantined_with_file_line_and_column(shop):
    tmp_path, ext = shop
    *_, quarantined = files.load(contract.load(str(tmp_path / "mmtower.yaml")))
    found = {(q.source, q.line, q.field, q.kept) for q in quarantined}
    shift = {"csv": 1, "jsonl": 0, "parquet": 0}[ext]  # CSV: the header is line 1, the i2 description spans two lines
    items, events, users = f"items.{ext}", f"events.{ext}", f"users.{ext}"
    assert found == {
        (items, 2 + shift, "price", True),
        (items, 3 + 2 * shift, "photo", True),  # ../outside.png
        (items, 4 + 2 * shift, "photo", True),  # absolute
        (items, 5 + 2 * shift, "photo", True),  # link.png -> outside media_root
        (items, 6 + 2 * shift, "item_id", False),  # empty id
        (items, 7 + 2 * shift, "item_id", False),  # duplicate i2
        (events, 6 + shift, "user_id", True),  # u4 not in the users file
        (events, 7 + shift, "item_id", False),
        (events, 8 + shift, "user_id", False),
        (events, 9 + shift, "ts", False),
        (events, 10 + shift, "stars", False),
        (users, 2 + shift, "age", True),
    }
    reasons = {(q.field, q.line - shift): q.reason for q in quarantined if q.source == events}
    assert reasons[("item_id", 7)] == f"item 'nope' is not in items.{ext}; event dropped"
    assert reasons[("user_id", 8)] == "empty user id; event dropped"
    assert reasons[("ts", 9)].startswith("neither unix seconds nor an ISO 8601 time")
    assert reasons[("stars", 10)].startswith("empty or not a finite number")
    assert "u4" in reasons[("user_id", 6)] and f"users.{ext}" in reasons[("user_id", 6)]
    photo = {q.raw: q.reason for q in quarantined if q.field == "photo"}
    assert photo["'../outside.png'"].startswith("path leaving media_root")
    assert photo["'link.png'"].startswith("symbolic link leading outside media_root")
    assert next(reason for raw, reason in photo.items() if raw.startswith("'/")).startswith("absolute path refused")
    assert all(q.reason and len(q.raw) <= 80 for q in quarantined)


def test_every_format_gives_the_same_frames(tmp_path):
    results = {}
    for ext in ("csv", "jsonl", "parquet"):
        folder = tmp_path / ext
        folder.mkdir()
        _make_shop(folder, ext)
        results[ext] = files.load(contract.load(str(folder / "mmtower.yaml")))
    for ext in ("jsonl", "parquet"):
        for expected, frame in zip(results["csv"][:3], results[ext][:3]):
            pd.testing.assert_frame_equal(frame, expected)
        assert sorted((q.field, q.kept) for q in results[ext][3]) == sorted((q.field, q.kept) for q in results["csv"][3])


def test_oversized_media_is_refused_and_its_item_kept(shop, monkeypatch):
    tmp_path, _ = shop
    monkeypatch.setattr(files.media, "MAX_MEDIA_BYTES", 20)
    _, catalog, _, quarantined = files.load(contract.load(str(tmp_path / "mmtower.yaml")))
    assert catalog[F.IMAGE].isna().all() and len(catalog) == 5
    assert any(q.field == "sound" and "over the 20-byte limit" in q.reason and q.kept for q in quarantined)


def test_max_users_keeps_the_first_users_by_id(shop):
    tmp_path, _ = shop
    interactions, catalog, users, _ = files.load(contract.load(str(tmp_path / "mmtower.yaml")), max_users=2)
    assert sorted(interactions[F.USER_ID].unique()) == ["u1", "u2"] and list(users[F.USER_ID]) == ["u1", "u2"]
    assert len(catalog) == 5


def test_unparseable_file_names_the_file(shop):
    tmp_path, ext = shop
    loaded = contract.load(str(tmp_path / "mmtower.yaml"))
    if ext == "csv":
        (tmp_path / "events.csv").write_bytes(b"user_id,item_id\n\xff\xfe\x00garbage\x89")
    else:
        (tmp_path / f"events.{ext}").write_bytes(b"\xff\xfe\x00garbage\x89\n")
    with pytest.raises(contract.ContractError, match=f"events.{ext}"):
        files.load(loaded)


def test_timestamps_parse_as_unix_seconds_or_iso_8601():
    assert contract.parse_timestamp("1700000000") == contract.parse_timestamp(1700000000) == 1700000000
    assert contract.parse_timestamp("2023-11-14T22:13:20Z") == 1700000000
    assert contract.parse_timestamp("2023-11-14T23:13:20+01:00") == 1700000000
    assert contract.parse_timestamp("2023-11-14 22:13:20") == 1700000000  # naive: UTC
    assert contract.parse_timestamp(datetime(2023, 11, 14, 22, 13, 20)) == 1700000000
    assert [contract.parse_timestamp(v) for v in ("yesterday", "", None, True, "nan")] == [None] * 5


def test_draft_guesses_a_contract_that_loads(shop):
    tmp_path, ext = shop
    paths = [str(tmp_path / f"{name}.{ext}") for name in ("items", "events", "users")]
    text = contract.draft(*paths, media_root=str(tmp_path / "media"))
    assert all("#" in line for line in text.splitlines() if line.strip())
    assert "TODO" not in text.split("\n", 1)[1]  # below the heading
    assert "# code: left out" in text
    drafted = _load_with(tmp_path, text)
    assert drafted.roles == ROLES
    assert drafted.modalities == ("text", "image", "audio")
    assert (drafted.items.id, drafted.items.image, drafted.items.audio) == ("item_id", "photo", "sound")
    assert drafted.events == contract.EventsSpec(path=paths[1], user="user_id", item="item_id", timestamp="ts", rating="stars")
    assert files.load(drafted)[1][F.ITEM_ID].tolist() == ["007", "i2", "i3", "i4", "i5"]


@pytest.mark.parametrize("shop", ["csv"], indirect=True)
def test_draft_writes_todo_for_what_it_cannot_guess(shop):
    tmp_path, _ = shop
    (tmp_path / "clicks.csv").write_text("who,what,when\nu1,007,sometime\nu2,i2,later\n")
    text = contract.draft(str(tmp_path / "items.csv"), str(tmp_path / "clicks.csv"))
    assert "  # user: TODO" in text and "  # item: TODO" in text and "  # timestamp: TODO" in text
    assert "media_root: TODO" in text  # media columns found, no media_root given
    with pytest.raises(contract.ContractError, match="events.user: missing"):
        _load_with(tmp_path, text)
    (tmp_path / "clicks.csv").write_text("who,what,when\nu1,007,2023-11-14\nu2,i2,2023-11-15T08:00:00\n")
    assert "  timestamp: when " in contract.draft(str(tmp_path / "items.csv"), str(tmp_path / "clicks.csv"))


def _tfrecord(source, target) -> None:
    """Rewrites a JSON lines file as TFRecord of tf.Example (gzipped when `target` ends with .gz)."""
    import tensorflow as tf

    def feature(value):
        if isinstance(value, int):
            return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
        if isinstance(value, float):
            return tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
        values = value if isinstance(value, list) else [value]
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(v).encode() for v in values]))

    with tf.io.TFRecordWriter(str(target), options="GZIP" if str(target).endswith(".gz") else None) as writer:
        for line in open(source):
            example = tf.train.Example(features=tf.train.Features(feature={k: feature(v) for k, v in json.loads(line).items()}))
            writer.write(example.SerializeToString())


@pytest.mark.parametrize("shop", ["jsonl"], indirect=True)
def test_tfrecord_gives_the_same_frames(shop):
    tmp_path, _ = shop
    text = (tmp_path / "mmtower.yaml").read_text()
    for name, ending in (("items", "tfrecord.gz"), ("events", "tfrecord"), ("users", "tfrecord.gz")):
        _tfrecord(tmp_path / f"{name}.jsonl", tmp_path / f"{name}.{ending}")
        text = text.replace(f"{name}.jsonl", f"{name}.{ending}")
    expected = files.load(contract.load(str(tmp_path / "mmtower.yaml")))
    got = files.load(_load_with(tmp_path, text))
    for want, frame in zip(expected[:3], got[:3]):
        pd.testing.assert_frame_equal(frame, want)
    assert [(q.line, q.field, q.kept) for q in got[3]] == [(q.line, q.field, q.kept) for q in expected[3]]
    (tmp_path / "events.tfrecord").write_bytes(b"not a record" * 4)
    with pytest.raises(contract.ContractError, match=r"events\.tfrecord: not a readable TFRecord"):
        files.load(_load_with(tmp_path, text))


@pytest.mark.parametrize("shop", ["csv"], indirect=True)
def test_without_a_users_file_users_are_the_events_users(shop):
    tmp_path, _ = shop
    text = CONTRACT.format(ext="csv").split("users:\n")[0]
    interactions, _, users, quarantined = files.load(_load_with(tmp_path, text))
    assert list(users.columns) == [F.USER_ID] and list(users[F.USER_ID]) == ["u1", "u2", "u3", "u4", "u5"]
    assert list(interactions.columns)[:5] == [F.USER_ID, F.ITEM_ID, F.TIMESTAMP, F.RATING, "title"]
    assert not any(q.source.startswith("users") or q.kept and q.field == "user_id" for q in quarantined)

"""The Beam dataset build (mmdata.beam_build) writes what files.load + records.write_dataset write."""

import csv
import json
import math
import os
import random

import pytest

from mmdata import beam_build, contract, files, records
from towers import features as F
from towers.contract import CATALOG_FILE, COLD_ITEMS_FILE, MANIFEST_FILE, QUARANTINE_FILE, SPLITS, USERS_FILE, VALIDATION_COLD_ITEMS_FILE

pytestmark = pytest.mark.unit

BEAM_ARGS = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
CONTRACT = """\
name: Beam_Shop
items:
  path: items.csv
  id: item_id
  text: [title, description]
  categorical: [brand]
  multi_valued: {{tags: "|"}}
  numeric: [price]
  image: photo
events:
  path: events.csv
  user: user_id
  item: item_id
  timestamp: ts
  rating: stars
users:
  path: users.csv
  id: user_id
  categorical: [country]
  numeric: [age]
split:
  eval_fraction: 0.15
  validation_fraction: 0.2
  cold_items: {cold}
"""


def _write_csv(path, header, rows) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def make_shop(folder, cold: float, events: int = 400, seed: int = 3) -> contract.DataContract:
    """A shop of 40 items, 30 users and `events` events (many same-second ones) with bad rows of every kind."""
    rng = random.Random(seed)
    (folder / "photo.png").write_bytes(b"\x89PNG fake")
    items = [
        (f"i{k:02d}", f"Item {k}", f"A thing, number {k}\nover two lines" if k % 7 == 0 else f"thing {k}", f"b{k % 3}")
        + ("|".join(rng.sample(["red", "big", "new", "old"], k % 3)), "abc" if k == 5 else str(k * 1.5), "photo.png" if k % 4 == 0 else "")
        for k in range(40)
    ]
    items += [("", "No id", "", "b0", "", "1", ""), ("i03", "Duplicate", "", "b0", "", "2", "")]
    _write_csv(folder / "items.csv", ("item_id", "title", "description", "brand", "tags", "price", "photo"), items)
    users = [(f"u{k:02d}", rng.choice(["fr", "de", ""]), "n/a" if k == 4 else str(20 + k)) for k in range(25)]  # u25..u29: missing
    _write_csv(folder / "users.csv", ("user_id", "country", "age"), users + [("u01", "fr", "1")])
    rows = []
    for _ in range(events):
        timestamp = 1_700_000_000 + rng.randrange(0, 300) * 60  # 300 distinct minutes: many ties
        rows.append([f"u{rng.randrange(30):02d}", f"i{rng.randrange(40):02d}", str(timestamp), str(rng.choice([1, 2, 3.5, 4, 5]))])
    rows[3][2] = "2023-11-14T22:20:00+00:00"  # ISO 8601
    rows[10][1] = "nope"  # unknown item
    rows[11][0] = ""  # empty user
    rows[12][2] = "yesterday"  # bad timestamp
    rows[13][3] = "great"  # bad rating
    rows[14] = rows[14][:3]  # too few fields
    rows[15][1], rows[15][3] = "", "x"  # two problems in one row
    _write_csv(folder / "events.csv", ("user_id", "item_id", "ts", "stars"), rows)
    (folder / "mmtower.yaml").write_text(CONTRACT.format(cold=cold))
    return contract.load(str(folder / "mmtower.yaml"))


def _canonical(path: str, roles) -> list[str]:
    """A records file's rows as sorted JSON texts (NaN as NaN, bytes as hex): comparable whatever their order."""
    rows = records.read_records(path, roles.list_features)
    return sorted(json.dumps(row, sort_keys=True, default=lambda b: b.hex()) for row in rows)


def _files(root: str) -> set[str]:
    return {os.path.relpath(os.path.join(folder, name), root) for folder, _, names in os.walk(root) for name in names}


@pytest.mark.parametrize("cold", [0.0, 0.2])
def test_beam_build_writes_the_same_dataset_as_write_dataset(tmp_path, cold):
    declared = make_shop(tmp_path, cold)
    expected_dir, beam_dir = str(tmp_path / "pandas"), str(tmp_path / "beam")
    os.makedirs(os.path.join(beam_dir, "examples", "span-2", "train"))  # an earlier build's span: replaced
    (tmp_path / "beam" / "examples" / "span-2" / "train" / "data.tfrecord.gz").write_bytes(b"old")
    (tmp_path / "beam" / "keep.txt").write_text("not the build's")  # not the build's: kept
    expected = files.build(declared, expected_dir)
    got = beam_build.build(declared, beam_dir, BEAM_ARGS)

    assert got == expected == records.Manifest.read(beam_dir)
    with open(os.path.join(expected_dir, MANIFEST_FILE)) as want, open(os.path.join(beam_dir, MANIFEST_FILE)) as have:
        assert have.read() == want.read()  # the same text: quarantined_by_field in the same order
    assert expected.num_train and expected.num_validation and expected.num_eval and expected.num_quarantined >= 12
    assert (expected.num_cold_items > 0 and expected.num_validation_cold_items > 0) == (cold > 0)
    assert _files(beam_dir) == _files(expected_dir) | {"keep.txt"}
    for name in (COLD_ITEMS_FILE, VALIDATION_COLD_ITEMS_FILE):
        with open(os.path.join(expected_dir, name)) as want, open(os.path.join(beam_dir, name)) as have:
            assert have.read() == want.read()
    with open(os.path.join(expected_dir, QUARANTINE_FILE)) as want, open(os.path.join(beam_dir, QUARANTINE_FILE)) as have:
        want_lines, have_lines = want.read().splitlines(), have.read().splitlines()
    assert sorted(have_lines) == sorted(want_lines) and len(set(want_lines)) == len(want_lines)
    roles = declared.roles
    for name in [os.path.join("examples", "span-1", split, "data.tfrecord.gz") for split in SPLITS] + [CATALOG_FILE, USERS_FILE]:
        want_rows, have_rows = _canonical(os.path.join(expected_dir, name), roles), _canonical(os.path.join(beam_dir, name), roles)
        assert have_rows == want_rows, name
        assert want_rows
    train = records.read_records(os.path.join(beam_dir, "examples", "span-1", "train", "data.tfrecord.gz"), roles.list_features)
    assert any(row[F.HISTORY] for row in train) and any(math.isnan(row["age"]) for row in train)  # histories; a missing user's age


def test_lower_quantile_matches_numpy():
    import numpy as np

    rng = np.random.default_rng(0)
    for size in (1, 2, 3, 10, 101, 1000):
        times = rng.integers(0, max(2, size // 3), size)
        counts = dict(zip(*np.unique(times, return_counts=True)))
        for q in (0.0, 0.1, 0.5, 0.8, 0.85, 0.9, 0.999):
            assert beam_build.lower_quantile(counts, q) == int(np.quantile(times, q, method="lower"))


def _expected_rows(path: str, columns: tuple[str, ...]) -> tuple[list, list]:
    table = contract.read_table(path)
    good = [(line, {c: table.columns.get(c, [None] * len(table.lines))[i] for c in columns}) for i, line in enumerate(table.lines)]
    return good, [tuple(row) for row in table.bad_rows]


def _streamed_rows(path: str, columns: tuple[str, ...]) -> tuple[list, list]:
    kind = contract.file_format(path)
    if kind == contract.PARQUET:
        rows = [row for part in beam_build._parquet_row_groups(path) for row in beam_build._parquet_rows(part, columns)]
    else:
        readers = {contract.CSV: beam_build._csv_rows, contract.JSONL: beam_build._jsonl_rows, contract.TFRECORD: beam_build._tfrecord_rows}
        rows = list(readers[kind](path, columns))
    return [row for row in rows if len(row) == 2], [row for row in rows if len(row) == 3]


def test_streamed_readers_give_read_tables_rows_and_lines(tmp_path):
    """Each format's streaming reader yields the rows, values and line / record numbers contract.read_table gives."""
    import pandas as pd
    import tensorflow as tf

    make_shop(tmp_path, 0.0, events=120)
    columns = ("user_id", "item_id", "ts", "stars")
    frame = pd.read_csv(tmp_path / "events.csv", dtype=str, keep_default_na=False)
    records_ = [{c: v for c, v in row.items() if v != ""} for row in frame.to_dict("records")]
    records_[5]["stars"] = 4.5  # a number, not text
    with open(tmp_path / "events.jsonl", "w") as f:
        for k, record in enumerate(records_):
            f.write(json.dumps(record) + "\n" + ("{broken\n" if k == 7 else "[1, 2]\n" if k == 9 else "\n" if k == 11 else ""))
    pd.DataFrame(frame).to_parquet(tmp_path / "events.parquet", row_group_size=25)  # 5 row groups
    with tf.io.TFRecordWriter(str(tmp_path / "events.tfrecord.gz"), options="GZIP") as writer:
        for record in records_:
            feature = {
                c: tf.train.Feature(float_list=tf.train.FloatList(value=[v]))
                if isinstance(v, float)
                else tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(v).encode()]))
                for c, v in record.items()
            }
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    for name in ("events.csv", "events.jsonl", "events.parquet", "events.tfrecord.gz"):
        expected = _expected_rows(str(tmp_path / name), columns)
        assert _streamed_rows(str(tmp_path / name), columns) == expected, name
        assert len(expected[0]) >= 110
    assert len(_expected_rows(str(tmp_path / "events.jsonl"), columns)[1]) == 2 and _expected_rows(str(tmp_path / "events.csv"), columns)[1]

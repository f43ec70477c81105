"""`mmtower index add-items` input: each bad line is quarantined with its line and field; media stay in the
items file's folder, are regular files and within the size limit; unsupported files are refused in one line."""

import json
import os

import pytest
import tensorflow as tf

from app.add_items import read_items
from mmdata.registry import MOVIELENS_FEATURES
from towers import features as F
from towers.encoders import media

pytestmark = pytest.mark.unit


def _write(folder, lines) -> str:
    path = folder / "items.jsonl"
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return str(path)


def test_bad_lines_are_quarantined_by_line_and_field_and_good_ones_read(tmp_path):
    (tmp_path / "ok.png").write_bytes(b"\x89PNG fake")
    path = _write(
        tmp_path,
        [
            {"item_id": "good", "title": "Good", "genres": ["a", "b"], "year": 1999, "image": "ok.png"},
            "{not json",
            {"item_id": "typo", "titel": "x"},
            {"item_id": "stringy", "genres": "Comedy"},
            {"item_id": 7},
            {"item_id": "yes", "year": True},
            [1, 2],
            {"item_id": "deep", "genres": [["nested"]]},
        ],
    )
    records, quarantined = read_items(path, MOVIELENS_FEATURES)
    assert len(records) == 1
    good = tf.train.Example.FromString(records[0]).features.feature
    assert list(good[F.GENRES].bytes_list.value) == [b"a", b"b"] and good[F.IMAGE].bytes_list.value[0] == b"\x89PNG fake"
    by_line = {q["line"]: q for q in quarantined}
    assert sorted(by_line) == [2, 3, 4, 5, 6, 7, 8]
    assert by_line[2]["reason"].startswith("not JSON")
    assert "unknown field(s) 'titel'" in by_line[3]["reason"] and by_line[3]["item_id"] == "typo"
    assert "field 'genres': expected a list of strings" in by_line[4]["reason"]  # not one-letter genres
    assert "field 'item_id'" in by_line[5]["reason"]
    assert "field 'year': expected float, got bool" in by_line[6]["reason"]
    assert "JSON object" in by_line[7]["reason"]
    assert "list of strings" in by_line[8]["reason"]


def test_media_paths_are_confined_regular_and_capped(tmp_path):
    items = tmp_path / "items"
    items.mkdir()
    (tmp_path / "secret.txt").write_text("root:x:0:0")
    os.mkfifo(items / "fifo.wav")
    os.symlink(tmp_path / "secret.txt", items / "link.png")
    with open(items / "big.wav", "wb") as f:
        f.truncate(media.MAX_MEDIA_BYTES + 1)  # sparse: big, cheap
    path = _write(
        items,
        [
            {"item_id": "up", "image": "../secret.txt"},
            {"item_id": "abs", "image": str(tmp_path / "secret.txt")},
            {"item_id": "link", "image": "link.png"},
            {"item_id": "fifo", "audio": "fifo.wav"},  # opening it would hang
            {"item_id": "big", "audio": "big.wav"},
            {"item_id": "gone", "audio": "missing.wav"},
        ],
    )
    records, quarantined = read_items(path, MOVIELENS_FEATURES)
    assert records == []
    reasons = {q["item_id"]: q["reason"] for q in quarantined}
    assert "outside the items file's folder" in reasons["up"] and "absolute path" in reasons["abs"]
    assert "outside the items file's folder" in reasons["link"]
    assert "not a regular file" in reasons["fifo"] and "over the" in reasons["big"] and "does not exist" in reasons["gone"]
    assert not any("root:x" in r for r in reasons.values())  # nothing of the file is echoed


def test_unsupported_or_unreadable_files_are_one_clear_error(tmp_path):
    (tmp_path / "items.csv").write_text("item_id,title\n1,x\n")
    with pytest.raises(ValueError, match="unsupported file type"):
        read_items(str(tmp_path / "items.csv"), MOVIELENS_FEATURES)
    (tmp_path / "items.tfrecord").write_bytes(b"garbage that is not a TFRecord")
    with pytest.raises(ValueError, match="not a readable TFRecord"):
        read_items(str(tmp_path / "items.tfrecord"), MOVIELENS_FEATURES)
    with pytest.raises(FileNotFoundError):
        read_items(str(tmp_path / "nope.jsonl"), MOVIELENS_FEATURES)

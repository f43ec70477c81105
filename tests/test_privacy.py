"""Pseudonymous user ids (towers.privacy): the key, the dataset build (Beam and in memory), the serving edge."""

import csv
import gzip
import json
import os
import stat

import numpy as np
import pytest

from mmdata import registry
from mmdata.records import Manifest, read_records, split_dir
from towers import privacy
from towers.contract import QUARANTINE_FILE, USERS_FILE

pytestmark = pytest.mark.unit

KEY = b"k" * 32
EMAILS = ["alice.smith@example.com", "bob.jones@example.com", "carol.white@example.com"]
CONTRACT = """\
name: private-shop
items: {path: items.csv, id: item_id, text: [title]}
events: {path: events.csv, user: email, item: item_id, timestamp: ts}
users: {path: users.csv, id: email, categorical: [country]}
"""


def _write(folder) -> str:
    def table(name, header, rows):
        with open(folder / name, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)

    table("items.csv", ["item_id", "title"], [[f"i{k}", f"Item {k}"] for k in range(6)])
    table("users.csv", ["email", "country"], [[e, "fr"] for e in EMAILS] + [[EMAILS[0], "de"]])  # a duplicate row
    events = [[EMAILS[k % 3], f"i{k % 6}", str(1_700_000_000 + 60 * k)] for k in range(60)]
    events += [[EMAILS[1], "nope", "1700009999"], ["dave.brown@example.com", "i1", "1700000001"]]  # unknown item; user not in users.csv
    table("events.csv", ["email", "item_id", "ts"], events)
    with open(folder / "events.csv", "a") as f:
        f.write('"broken.quote@example.com,i1,1700000002\n')  # a row that cannot be parsed
    (folder / "mmtower.yaml").write_text(CONTRACT)
    return str(folder / "mmtower.yaml")


def _contents(root: str) -> bytes:
    """Every file under `root`, gzip files decompressed."""
    out = []
    for folder, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(folder, name), "rb") as f:
                data = f.read()
            out.append(gzip.decompress(data) if name.endswith(".gz") else data)
    return b"\n".join(out)


def test_pseudonyms_are_stable_keyed_and_opaque():
    first = privacy.pseudonym(KEY, "alice")
    assert first == privacy.pseudonym(KEY, "alice") and privacy.is_pseudonym(first)
    assert first != privacy.pseudonym(b"o" * 32, "alice") and first != privacy.pseudonym(KEY, "alicf")
    assert "alice" not in first and privacy.pseudonym(KEY, "") == ""
    assert privacy.key_id(KEY) != privacy.key_id(b"o" * 32) and KEY.hex() not in privacy.key_id(KEY)


def test_the_key_comes_from_the_environment_a_file_or_a_new_private_file(tmp_path, monkeypatch):
    monkeypatch.delenv(privacy.KEY_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    created = privacy.load_key()
    path = tmp_path / ".config" / "mmtower" / "pseudonym.key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and len(created) == 64
    assert privacy.load_key() == created  # created once
    (tmp_path / "mine.key").write_text("my own key of enough length\n")
    assert privacy.load_key(str(tmp_path / "mine.key")) == b"my own key of enough length"
    monkeypatch.setenv(privacy.KEY_ENV, "from the environment, long enough")
    assert privacy.load_key(str(tmp_path / "mine.key")) == b"from the environment, long enough"
    monkeypatch.setenv(privacy.KEY_ENV, "short")
    with pytest.raises(ValueError, match="at least 16 bytes"):
        privacy.load_key()


@pytest.mark.parametrize("max_users", [None, 10])  # None: the Beam build; 10: the in-memory one
def test_a_pseudonymised_build_holds_no_raw_user_id(tmp_path, max_users):
    spec = registry.from_contract(_write(tmp_path))
    data_dir = str(tmp_path / "data")
    manifest = registry.build(spec.name, data_dir, max_users=max_users, privacy_key=KEY)
    assert manifest.pseudonym_key_id == privacy.key_id(KEY)
    contents = _contents(data_dir)
    for raw in EMAILS + ["dave.brown", "broken.quote", "example.com"]:
        assert raw.encode() not in contents, raw
    assert KEY not in contents
    users = {row["user_id"] for row in read_records(os.path.join(data_dir, USERS_FILE))}
    assert {privacy.pseudonym(KEY, e) for e in EMAILS} <= users
    train = read_records(os.path.join(split_dir(data_dir, "train"), "data.tfrecord.gz"))
    assert all(privacy.is_pseudonym(row["user_id"]) for row in train)
    quarantine = [json.loads(line) for line in open(os.path.join(data_dir, QUARANTINE_FILE))]
    assert {row["field"] for row in quarantine} >= {"*", "email", "item_id"}  # still counted and named, without raw ids
    # The same key again: reused; another key (or none): built again.
    assert registry.build(spec.name, data_dir, max_users=max_users, privacy_key=KEY) == manifest
    assert registry.build(spec.name, data_dir, max_users=max_users).pseudonym_key_id == ""
    assert EMAILS[0].encode() in _contents(data_dir)


def test_a_built_in_dataset_writes_its_files_with_pseudonyms(tmp_path):
    manifest = registry.build("movielens-100k", str(tmp_path), max_users=3, privacy_key=KEY)
    with open(tmp_path / registry.SOURCE_DIR / "events.csv") as f:
        users = {row["user_id"] for row in csv.DictReader(f)}
    assert users == {privacy.pseudonym(KEY, u) for u in ("1", "2", "3")} and manifest.pseudonym_key_id


def test_the_serving_edge_pseudonymises_raw_ids_and_passes_pseudonyms():
    from serving.predict import pseudonymised

    already = privacy.pseudonym(KEY, "bob")
    inputs = {"user_id": np.array([b"alice", already.encode()], object), "history": np.array([[b"i1"], [b""]], object)}
    out = pseudonymised(inputs, KEY)
    assert out["user_id"].tolist() == [privacy.pseudonym(KEY, "alice").encode(), already.encode()]
    assert out["history"] is inputs["history"]
    assert pseudonymised({"examples": np.array([b"x"], object)}, KEY)["examples"].tolist() == [b"x"]


def test_logged_requests_are_pseudonymised_like_the_data(tmp_path):
    from mmdata import requests
    from mmdata.registry import MOVIELENS_FEATURES

    log = tmp_path / "requests.jsonl"
    log.write_text(json.dumps({"user_id": "alice"}) + "\nnot json alice\n")
    rows, quarantined = requests.read_requests(str(log), MOVIELENS_FEATURES, KEY)
    assert rows == [{"user_id": privacy.pseudonym(KEY, "alice")}]
    assert [row.raw for row in quarantined] == [""]


def test_recommend_finds_a_user_by_raw_id_or_pseudonym_and_refuses_another_key(monkeypatch):
    from app.recommend import SetupError, stored_user_id

    monkeypatch.setenv(privacy.KEY_ENV, KEY.decode())
    manifest = Manifest("d", 0, 0.1, 0, 0, 0, 0, 0, pseudonym_key_id=privacy.key_id(KEY))
    assert stored_user_id(manifest, "alice") == privacy.pseudonym(KEY, "alice")
    assert stored_user_id(manifest, privacy.pseudonym(KEY, "alice")) == privacy.pseudonym(KEY, "alice")
    assert stored_user_id(Manifest("d", 0, 0.1, 0, 0, 0, 0, 0), "alice") == "alice"
    monkeypatch.setenv(privacy.KEY_ENV, "another key, long enough")
    with pytest.raises(SetupError, match="another key"):
        stored_user_id(manifest, "alice")


@pytest.mark.parametrize("max_users", [None, 10])
def test_forgotten_users_are_left_out_of_the_build(tmp_path, max_users):
    spec = registry.from_contract(_write(tmp_path))
    data_dir = str(tmp_path / "data")
    gone = privacy.pseudonym(KEY, EMAILS[1])
    kept = registry.build(spec.name, data_dir, max_users=max_users, privacy_key=KEY)
    assert gone.encode() in _contents(data_dir)
    manifest = registry.build(spec.name, data_dir, max_users=max_users, privacy_key=KEY, forgotten=frozenset({gone}))
    assert manifest.source != kept.source  # a new forget list rebuilds
    assert gone.encode() not in _contents(data_dir)
    assert manifest.num_train + manifest.num_validation + manifest.num_eval == kept.num_train + kept.num_validation + kept.num_eval - 20


def test_forget_lists_the_artifacts_that_hold_a_user(tmp_path):
    from app import forget
    from towers.contract import RunPaths

    paths = RunPaths(str(tmp_path), "shop")
    version = tmp_path / "serving" / "recommender" / "7" / "assets"
    version.mkdir(parents=True)
    (version / "vocab.txt").write_text("p0123456789abcdef\n")
    transformed = tmp_path / "pipeline" / "mmtower-shop" / "Transform" / "transformed_examples" / "12" / "Split-train"
    transformed.mkdir(parents=True)
    (transformed / "part.gz").write_bytes(gzip.compress(b"..p0123456789abcdef.."))
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "run.log").write_text("nothing here")
    assert forget.record(paths, "p0123456789abcdef") and not forget.record(paths, "p0123456789abcdef")
    assert forget.holding(paths, "p0123456789abcdef") == [
        str(tmp_path / "pipeline" / "mmtower-shop" / "Transform" / "transformed_examples" / "12"),
        str(tmp_path / "serving" / "recommender" / "7"),
    ]

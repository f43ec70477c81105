"""The tuxpaint catalog (real photos, captions, sounds from the Debian package) and the interaction simulator."""

import os
import shutil

import numpy as np
import pytest

from mmdata import simulator, tuxpaint
from mmdata.records import read_records, write_dataset
from mmdata.registry import TUXPAINT_FEATURES
from towers import features as F

pytestmark = pytest.mark.unit

MAMMALS = os.path.join(tuxpaint.STAMPS_DIR, "animals", "mammals")


@pytest.fixture
def stamps(tmp_path):
    """A small stamps tree from real package files, plus a corrupt photo and a stamp with no caption."""
    root = tmp_path / "stamps"
    (root / "animals" / "mammals").mkdir(parents=True)
    (root / "food").mkdir()
    for name in ("badger.png", "badger.txt", "badger.ogg", "echidna.png", "echidna.txt"):
        shutil.copy(os.path.join(MAMMALS, name), root / "animals" / "mammals" / name)
    (root / "food" / "broken.png").write_bytes(open(os.path.join(MAMMALS, "echidna.png"), "rb").read()[:100])
    (root / "food" / "broken.txt").write_text("A broken picture.\nfr.utf8=Une image cassée.\n")
    shutil.copy(os.path.join(MAMMALS, "badger.png"), root / "food" / "no_caption.png")
    (root / "food" / "drawing.svg").write_text("<svg/>")  # vector-only stamps are not items
    return str(root)


def test_catalog_has_real_content_and_records_problems(stamps):
    catalog, traits, quarantined = tuxpaint.load_catalog(stamps)
    items = catalog.set_index(F.ITEM_ID)
    assert sorted(items.index) == ["animals/mammals/badger", "animals/mammals/echidna", "food/broken", "food/no_caption"]
    badger = items.loc["animals/mammals/badger"]
    assert badger[F.TITLE] == open(os.path.join(MAMMALS, "badger.txt")).readline().strip()
    assert badger[F.GENRES] == ["animals", "mammals"] and badger[F.ITEM_TEXT].endswith("animals, mammals")
    assert badger[F.IMAGE].startswith(b"\x89PNG") and badger[F.AUDIO].startswith(b"OggS")
    assert items.loc["animals/mammals/echidna", F.AUDIO] is None  # no sound of its own: no audio, not an error
    assert items.loc["food/broken", F.IMAGE] is None and items.loc["food/broken", F.ITEM_TEXT].startswith("A broken picture.")
    assert items.loc["food/no_caption", F.TITLE] == "no caption"
    problems = {(q.source, q.field, q.kept) for q in quarantined}
    assert problems == {("food/broken.png", F.IMAGE, True), ("food/no_caption.txt", F.ITEM_TEXT, True)}
    assert traits.has_sound == [True, False, False, False]
    assert traits.colour[2] == tuxpaint.UNKNOWN_COLOUR and traits.leaf[0] == "animals/mammals"


def test_dominant_colour_of_solid_pictures():
    import io

    from PIL import Image

    def png(rgb):
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), rgb).save(buffer, format="PNG")
        return buffer.getvalue()

    assert [tuxpaint.dominant_colour(png(c)) for c in [(220, 20, 20), (20, 200, 20), (20, 20, 220), (128, 128, 128)]] == [
        "red",
        "green",
        "blue",
        "grey",
    ]


TRAITS = simulator.ItemTraits(
    item_ids=[f"i{i}" for i in range(40)],
    category=["a"] * 20 + ["b"] * 20,
    leaf=["a/x"] * 10 + ["a/y"] * 10 + ["b/z"] * 20,
    colour=["red", "grey"] * 20,
    has_sound=[i % 4 == 0 for i in range(40)],
)


def test_simulator_is_seeded_and_well_formed():
    first = simulator.simulate(TRAITS, num_users=50, seed=3)
    assert first.equals(simulator.simulate(TRAITS, num_users=50, seed=3))
    assert not first.equals(simulator.simulate(TRAITS, num_users=50, seed=4))
    assert first[F.TIMESTAMP].is_monotonic_increasing
    assert set(first[F.RATING]) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    per_user = first.groupby(F.USER_ID)[F.ITEM_ID]
    assert (per_user.count() >= simulator.MIN_EVENTS).all()
    assert (per_user.nunique() == per_user.count()).all()  # no repeats within a user
    assert first[F.USER_ID].nunique() == 50


def test_simulated_users_follow_their_category_taste():
    frame = simulator.simulate(TRAITS, num_users=300, seed=0)
    category = frame[F.ITEM_ID].str[1:].astype(int) // 20  # 0 = "a", 1 = "b"
    share_a = category.groupby(frame[F.USER_ID]).mean()
    # Dirichlet(0.5) tastes over two categories: many users lean clearly one way.
    assert ((share_a < 0.25) | (share_a > 0.75)).mean() > 0.3


def test_written_tuxpaint_dataset_keeps_media_in_the_catalog_only(stamps, tmp_path):
    interactions, catalog, users, quarantined = tuxpaint.load(root=stamps, max_users=20)
    assert set(interactions.columns) == {F.USER_ID, F.ITEM_ID, F.RATING, F.TIMESTAMP, F.TITLE, F.GENRES}
    out = tmp_path / "data"
    write_dataset("tuxpaint", TUXPAINT_FEATURES, str(out), interactions, catalog, users, quarantined, eval_fraction=0.2)
    rows = {row[F.ITEM_ID]: row for row in read_records(str(out / "catalog" / "catalog.tfrecord.gz"))}
    assert F.AUDIO in rows["animals/mammals/badger"] and F.AUDIO not in rows["animals/mammals/echidna"]
    assert F.IMAGE not in rows["food/broken"]
    train = read_records(str(out / "examples" / "span-1" / "train" / "data.tfrecord.gz"))
    assert train and not any(F.IMAGE in row or F.AGE in row for row in train)
    np.testing.assert_equal(len(users), 20)


def test_true_affinities_explain_the_simulated_choices():
    frame = simulator.simulate(TRAITS, num_users=100, seed=5)
    affinity, popularity = simulator.true_affinities(TRAITS, num_users=100, seed=5)
    assert sorted(affinity) == sorted(frame[F.USER_ID].unique()) and popularity.shape == (40,)
    position = {item: i for i, item in enumerate(TRAITS.item_ids)}
    # Chosen items have higher affinity for their user than the average item.
    lift = [affinity[u][position[i]] - affinity[u].mean() for u, i in zip(frame[F.USER_ID], frame[F.ITEM_ID])]
    assert np.mean(lift) > 0.5


def test_the_posterior_predictive_infers_a_users_taste_from_their_first_choices():
    frame = simulator.simulate(TRAITS, num_users=60, seed=7)
    affinity, quality = simulator.true_affinities(TRAITS, num_users=60, seed=7)
    position = {item: i for i, item in enumerate(TRAITS.item_ids)}
    rng = np.random.default_rng(0)
    hits = {"posterior": [], "quality alone": [], "true affinity": []}  # share of the later choices in the top 10
    for user, rows in frame.groupby(F.USER_ID):
        chosen = [position[item] for item in rows.sort_values(F.TIMESTAMP)[F.ITEM_ID]]
        if len(chosen) < 8:
            continue
        seen, later = chosen[: len(chosen) // 2], chosen[len(chosen) // 2 :]
        predictive, effective = simulator.posterior_predictive(TRAITS, quality, np.array(seen), 100, rng)
        assert predictive[seen].sum() == 0 and abs(predictive.sum() - 1) < 1e-6 and 1 <= effective <= 100 * 2 * 2
        for name, scores in (("posterior", predictive), ("quality alone", quality), ("true affinity", affinity[user])):
            top = [i for i in np.argsort(-scores) if i not in seen][:10]
            hits[name].append(np.isin(later, top).mean())
    mean = {name: np.mean(values) for name, values in hits.items()}
    assert len(hits["posterior"]) > 20
    # The first choices tell the user's taste: the later ones rank higher than by popularity alone, and lower
    # than if the taste were known.
    assert mean["quality alone"] + 0.05 < mean["posterior"] < mean["true affinity"], mean


def test_a_decompression_bomb_and_a_latin1_caption_are_named_not_fatal(stamps):
    from tests.test_content_embedder import _png_header

    food = os.path.join(stamps, "food")
    with open(os.path.join(food, "bomb.png"), "wb") as f:
        f.write(_png_header(14000, 14000))
    with open(os.path.join(food, "bomb.txt"), "wb") as f:
        f.write("Crème brûlée\n".encode("latin-1"))
    catalog, _, quarantined = tuxpaint.load_catalog(stamps)
    bomb = catalog.set_index(F.ITEM_ID).loc["food/bomb"]
    assert bomb[F.IMAGE] is None and bomb[F.TITLE].startswith("Cr")  # kept, without the image
    reasons = {(q.source, q.field): q.reason for q in quarantined}
    assert "pixel limit" in reasons[("food/bomb.png", F.IMAGE)]
    assert "not UTF-8" in reasons[("food/bomb.txt", F.ITEM_TEXT)]

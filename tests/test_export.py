"""Built-in datasets as data contracts: their loaders' frames written as files read back the same through mmdata.files."""

import math
import os

import pandas as pd
import pytest

from mmdata import contract, export, files, movielens, registry, tuxpaint
from mmdata.records import read_records, split_dir
from towers import features as F

pytestmark = pytest.mark.unit

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "ml-mini")


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Same columns (any order), rows and values; NaN equals NaN, lists compare as lists."""
    assert sorted(a.columns) == sorted(b.columns)
    assert len(a) == len(b)
    for column in a.columns:
        for left, right in zip(a[column], b[column]):
            if isinstance(left, float) and math.isnan(left):
                assert isinstance(right, float) and math.isnan(right), column
            elif isinstance(left, list | tuple):
                assert list(left) == list(right), column
            else:
                assert left == right and isinstance(right, float) == isinstance(left, float), (column, left, right)


def _round_trip(tmp_path, name, roles, loaded, media_root=None, media=None):
    interactions, catalog, users, _ = loaded
    path = export.write_contract(str(tmp_path), name, roles, interactions, catalog, users, media_root, media)
    return interactions, catalog, users, files.load(contract.load(path))


def test_movielens_files_read_back_as_the_loader_read_them(tmp_path):
    loaded = movielens.load(root=FIXTURE)
    interactions, catalog, users, (interactions2, catalog2, users2, quarantined) = _round_trip(
        tmp_path, "ml-mini", registry.MOVIELENS_FEATURES, loaded
    )
    assert catalog[F.YEAR].isna().any()  # an unknown year travels as an empty cell and comes back NaN
    _same(interactions, interactions2)
    _same(catalog, catalog2)
    _same(users, users2)
    assert quarantined == []
    assert list(catalog2[F.ITEM_TEXT]) == [movielens.item_text(item) for item in catalog.to_dict("records")]


def test_tuxpaint_files_name_the_media_where_they_are(tmp_path):
    loaded = tuxpaint.load(max_users=20)
    root, media = tuxpaint.media_paths(loaded[1])
    interactions, catalog, users, (interactions2, catalog2, users2, quarantined) = _round_trip(
        tmp_path, "tux", registry.TUXPAINT_FEATURES, loaded, root, media
    )
    assert any(media[F.AUDIO]) and not all(media[F.AUDIO])
    _same(interactions, interactions2)
    _same(catalog, catalog2)  # the photos' and sounds' bytes, read from the stamps folder
    _same(users, users2)
    assert quarantined == []
    assert not any(name.endswith((".png", ".ogg", ".wav")) for name in os.listdir(tmp_path))  # media not copied


def test_a_value_holding_the_separator_is_refused(tmp_path):
    interactions, catalog, users, _ = movielens.load(root=FIXTURE)
    catalog.at[0, F.GENRES] = ["Drama|Comedy"]
    with pytest.raises(ValueError, match="genres"):
        export.write_contract(str(tmp_path), "x", registry.MOVIELENS_FEATURES, interactions, catalog, users)


def test_encoder_text_must_be_a_column_of_the_items_file(tmp_path):
    interactions, catalog, users, _ = movielens.load(root=FIXTURE)
    path = export.write_contract(str(tmp_path), "x", registry.MOVIELENS_FEATURES, interactions, catalog, users)
    with open(path) as f:
        text = f.read().replace("encoder_text: item_text", "encoder_text: blurb")
    with open(path, "w") as f:
        f.write(text)
    with pytest.raises(contract.ContractError, match="items.encoder_text.*'blurb'"):
        contract.load(path)


def test_a_built_in_dataset_is_built_from_its_contract_files(tmp_path):
    manifest = registry.build("movielens-100k", str(tmp_path), max_users=5)
    source = tmp_path / registry.SOURCE_DIR
    assert sorted(os.listdir(source)) == ["events.csv", "items.csv", "mmtower.yaml", "users.csv"]
    assert manifest.source == registry.BUILT_IN_SOURCE and manifest.max_users == 5
    events = pd.read_csv(source / "events.csv", dtype=str)
    assert events[F.USER_ID].nunique() == 5
    train = read_records(os.path.join(split_dir(str(tmp_path), "train"), "data.tfrecord.gz"))
    assert {row[F.USER_ID] for row in train} <= set(events[F.USER_ID])

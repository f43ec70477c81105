"""DatasetGen: a data contract built inside a TFX pipeline (LocalDagRunner, Beam DirectRunner), read by StatisticsGen."""

import glob
import json
import os

import pytest

from mmdata.records import Manifest
from tests.test_beam_build import make_shop
from towers.contract import MANIFEST_FILE, QUARANTINE_FILE, SPLITS

pytestmark = pytest.mark.e2e

BEAM_ARGS = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


def _count(path: str) -> int:
    import tensorflow as tf

    return sum(1 for _ in tf.data.TFRecordDataset(path, compression_type="GZIP"))


def _run(tmp_path, contract_path: str, data_dir: str, run: int) -> str:
    from tfx import v1 as tfx

    from components.dataset_gen import DatasetGen

    root = str(tmp_path / f"root-{run}")
    gen = DatasetGen(dataset=contract_path, data_dir=data_dir)
    statistics = tfx.components.StatisticsGen(examples=gen.outputs["examples"])
    pipeline = tfx.dsl.Pipeline(
        pipeline_name="dataset-gen-test",
        pipeline_root=root,
        components=[gen, statistics],
        enable_cache=False,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(str(tmp_path / f"m-{run}.db")),
        beam_pipeline_args=BEAM_ARGS,
    )
    tfx.orchestration.LocalDagRunner().run(pipeline)
    return root


def test_dataset_gen_builds_a_contract_in_the_pipeline_and_publishes_its_splits(tmp_path):
    folder = tmp_path / "shop"
    folder.mkdir()
    path = make_shop(folder, cold=0.1).file
    data_dir = str(tmp_path / "data")

    root = _run(tmp_path, path, data_dir, 1)
    manifest = Manifest.read(data_dir)
    train, validation, evaluation = manifest.span_sizes[0]
    assert manifest.num_quarantined > 0 and manifest.num_cold_items > 0
    published = {}
    for split in SPLITS:
        (file,) = glob.glob(os.path.join(root, "DatasetGen", "examples", "*", f"Split-{split}", "*.gz"))
        published[split] = _count(file)
    assert published == {"train": train, "validation": validation, "eval": evaluation}
    (catalog,) = glob.glob(os.path.join(root, "DatasetGen", "catalog", "*", "Split-catalog", "*.gz"))
    assert _count(catalog) == manifest.num_items
    for split in SPLITS:  # StatisticsGen read what DatasetGen published
        assert glob.glob(os.path.join(root, "StatisticsGen", "statistics", "*", f"Split-{split}", "FeatureStats.pb"))
    with open(os.path.join(data_dir, QUARANTINE_FILE)) as f:
        assert len([json.loads(line) for line in f]) == manifest.num_quarantined

    # A second run over unchanged files reuses the build; a changed file is built again.
    written = os.path.getmtime(os.path.join(data_dir, MANIFEST_FILE))
    _run(tmp_path, path, data_dir, 2)
    assert os.path.getmtime(os.path.join(data_dir, MANIFEST_FILE)) == written
    with open(folder / "events.csv", "a") as f:
        f.write("u01,i01,2030-01-01T00:00:00,4\n")
    _run(tmp_path, path, data_dir, 3)
    assert Manifest.read(data_dir).span_sizes[0][2] == evaluation + 1

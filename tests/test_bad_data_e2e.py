"""A run on data that breaks the curated schema stops before Transform and Trainer, naming the feature."""

import os

import pytest

from components.validation_gate import DataValidationError
from mmdata import movielens, registry
from mmdata.records import write_dataset
from pipeline import local_runner
from pipeline.config import Options
from tests.test_e2e import executed_nodes
from towers import features as F
from towers.contract import RunPaths
from towers.hparams import HParams

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "ml-mini")


def test_out_of_schema_rows_stop_the_pipeline(tmp_path):
    config = local_runner.RunConfig(output=str(tmp_path), options=Options(hparams=HParams(epochs=1)), direct_num_workers=1)
    paths = RunPaths(str(tmp_path), config.dataset)
    interactions, items, users, quarantined = movielens.load(root=FIXTURE)
    interactions.loc[0, F.OCCUPATION] = "astronaut"  # not in the curated occupation domain
    write_dataset(
        config.dataset, registry.get(config.dataset).features, paths.data_dir, interactions, items, users, quarantined, eval_fraction=0.34
    )

    from tfx import v1 as tfx

    with pytest.raises(DataValidationError, match="feature 'occupation'"):
        tfx.orchestration.LocalDagRunner().run(local_runner.build_pipeline(config, paths))
    ran = executed_nodes(paths)
    assert {"ImportExampleGen", "StatisticsGen", "ExampleValidator"} <= ran
    assert not ran & {"Transform", "Trainer", "Evaluator", "Pusher"}

"""Building the DAG (no execution): components, wiring, TFMA thresholds, cache key."""
import pytest
import tensorflow_model_analysis as tfma

from pipeline import code_version, eval_config, local_runner
from pipeline.runs import RunPaths
from towers import metrics
from towers.hparams import HParams

pytestmark = pytest.mark.pipeline

EXPECTED_COMPONENTS = [
    "ImportExampleGen",
    "CatalogExampleGen",
    "ContentEmbedder",
    "StatisticsGen",
    "ImportSchemaGen",
    "ExampleValidator",
    "ValidationGate",
    "Transform",
    "Trainer",
    "MostPopularBaseline",
    "latest_blessed_model_resolver",
    "Evaluator",
    "Pusher",
]


@pytest.fixture
def built(tmp_path):
    config = local_runner.RunConfig(output=str(tmp_path), hparams=HParams(epochs=1))
    return local_runner.build_pipeline(config, RunPaths(str(tmp_path), config.dataset))


def test_every_component_is_in_the_dag(built):
    assert sorted(c.id for c in built.components) == sorted(EXPECTED_COMPONENTS)


def test_gate_precedes_transform_and_pusher_needs_blessing(built):
    by_id = {c.id: c for c in built.components}
    assert by_id["ValidationGate"] in by_id["Transform"].upstream_nodes
    assert "model_blessing" in by_id["Pusher"].inputs
    assert by_id["Evaluator"] in by_id["Pusher"].upstream_nodes
    assert by_id["latest_blessed_model_resolver"] in by_id["Evaluator"].upstream_nodes
    assert by_id["ContentEmbedder"] in by_id["Trainer"].upstream_nodes
    assert "item_embeddings" in by_id["Trainer"].inputs


def test_code_change_changes_cache_key(tmp_path):
    (tmp_path / "components").mkdir()
    source = tmp_path / "components" / "m.py"
    source.write_text("x = 1\n")
    before = code_version.code_version(str(tmp_path), ("components",))
    source.write_text("x = 2\n")
    assert code_version.code_version(str(tmp_path), ("components",)) != before


def test_eval_config_gates_recall_at_100():
    config = eval_config.build(min_recall_at_100=0.07, max_regression=0.01)
    assert [spec.output_names[0] for spec in config.metrics_specs] == list(metrics.METRIC_NAMES)
    thresholds = {spec.output_names[0]: spec.metrics[0].threshold for spec in config.metrics_specs}
    gate = thresholds[metrics.recall_name(100)]
    assert gate.value_threshold.lower_bound.value == pytest.approx(0.07)
    assert gate.change_threshold.absolute.value == pytest.approx(-0.01)
    assert gate.change_threshold.direction == tfma.MetricDirection.HIGHER_IS_BETTER
    assert not thresholds[metrics.recall_name(10)].HasField("value_threshold")

"""LocalDagRunner end to end on tiny slices of both datasets.

tuxpaint (the default: 40 simulated users, the full catalog of photos,
captions and sounds through all three encoders) and MovieLens-100K (40 real
users, text only). Asserts that every component executed, that a blessed model was pushed in TF
Serving's layout, and that the pushed SavedModel, loaded in a fresh process,
returns K valid catalog item ids for a known user.
"""

import contextlib
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from app import report, summary
from mmdata.records import Manifest, read_records
from pipeline import local_runner
from pipeline.config import Options
from towers import contract, metrics
from towers import features as F
from towers.contract import CATALOG_FILE, USERS_FILE, RunPaths, latest_version_dir
from towers.hparams import HParams

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FRESH_PROCESS = """
import json, os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import tensorflow as tf
from towers import contract
model = tf.saved_model.load(sys.argv[1])
example = tf.train.Example.FromString(bytes.fromhex(sys.argv[2]))
out = model.signatures[contract.SERVING_DEFAULT](examples=tf.constant([example.SerializeToString()]))
sig = model.signatures[contract.SERVING_DEFAULT]
item = model.signatures[contract.EMBED_SIGNATURE](examples=tf.constant([bytes.fromhex(sys.argv[3])]))
from app.recommend import query_inputs
user = json.loads(sys.argv[4])
recommend = model.signatures[contract.RECOMMEND_SIGNATURE]
lists = {}
for exclude in (True, False):
    got = recommend(**query_inputs(recommend, user, 893286638), exclude_seen=tf.constant([exclude]))
    lists[exclude] = {name: got[name].numpy()[0].tolist() for name in (contract.ITEM_IDS_OUTPUT, contract.SCORES_OUTPUT)}
model.graph_mix.assign(tf.zeros_like(model.graph_mix))  # the ranker alone orders recommend's candidates
model.new_item_boost.assign(0.0)
neutral = recommend(**query_inputs(recommend, user, 893286638), exclude_seen=tf.constant([True]))
neutral = {name: value.numpy()[0].tolist() for name, value in neutral.items()}
rank = model.signatures[contract.RANK_SIGNATURE]
ranked = rank(**query_inputs(rank, user, 893286638), item_ids=tf.constant([neutral["item_ids"][:5] + [b"no-such-item"]]))
print(json.dumps({
    "neutral_scores": neutral[contract.SCORES_OUTPUT],
    "recommend": {str(k): {n: [x.decode() if isinstance(x, bytes) else x for x in v] for n, v in got.items()} for k, got in lists.items()},
    "rank_scores": ranked[contract.SCORES_OUTPUT].numpy()[0].tolist(),
    "item_ids": [v.decode() for v in out[contract.ITEM_IDS_OUTPUT].numpy()[0]],
    "scores": out[contract.SCORES_OUTPUT].numpy()[0].tolist(),
    "signatures": sorted(model.signatures.keys()),
    "inputs": sorted(sig.structured_input_signature[1].keys()),
    "outputs": sorted(sig.structured_outputs.keys()),
    "item_embedding_shape": list(item[contract.EMBEDDINGS_OUTPUT].shape),
    "modality_weights": item[contract.MODALITY_WEIGHTS_OUTPUT].numpy()[0].tolist(),
}))
"""


@pytest.fixture(scope="module", params=["tuxpaint", "movielens-100k"])
def run(request, tmp_path_factory):
    """One run per dataset, shared and never changed: a test that runs again, pushes or adds items works on own_copy()."""
    paths, wall_times = local_runner.run(_config(request.param, str(tmp_path_factory.mktemp("run"))))
    return paths, wall_times


def read_catalog(paths: RunPaths) -> list[dict]:
    """The built dataset's catalog rows (multi-valued columns as lists)."""
    return read_records(os.path.join(paths.data_dir, CATALOG_FILE), Manifest.read(paths.data_dir).roles.list_features)


def own_copy(run, tmp_path) -> RunPaths:
    """A test's own copy of the shared run (data, metadata, pipeline outputs, served models).

    Its dataset lives at a new path, so the first pipeline run in a copy re-runs the components that read it.
    """
    from serving import config as model_config

    paths, _ = run
    target = tmp_path / "run"
    shutil.copytree(paths.output, target, symlinks=True)
    copy = RunPaths(str(target), paths.dataset)
    model_config.write_for(copy.serving_dir)  # models.config names absolute paths: the copy's own models
    return copy


def _config(dataset: str, output: str, epochs: int = 5) -> local_runner.RunConfig:
    """40 users; 5 epochs train the tiny model well past its initialisation (the degraded-model test needs that)."""
    return local_runner.RunConfig(
        dataset=dataset,
        output=output,
        options=Options(
            hparams=HParams(epochs=epochs, batch_size=128, top_k=20), min_recall_at_100=0.0, min_auc=0.0
        ),  # wiring, not quality
        max_users=40,
        direct_num_workers=1,
    )


def executed_nodes(paths: RunPaths) -> set[str]:
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = paths.metadata_path
    store = metadata_store.MetadataStore(config)
    done = {metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED}
    nodes = set()
    for context in store.get_contexts_by_type("node"):
        if any(e.last_known_state in done for e in store.get_executions_by_context(context.id)):
            nodes.add(context.name.split(".", 1)[1])
    return nodes


def test_every_component_executed(run):
    from tests.test_pipeline import EXPECTED_COMPONENTS

    paths, wall_times = run
    # A first run has no drift baseline: TFX records the drift_baseline_resolver's execution as failed
    # (LatestArtifactStrategy returns None), and the DriftValidator runs without one.
    assert executed_nodes(paths) >= set(EXPECTED_COMPONENTS) - {"drift_baseline_resolver"}
    assert set(wall_times) >= set(EXPECTED_COMPONENTS) - {"latest_blessed_model_resolver", "drift_baseline_resolver"}


def test_blessed_model_pushed_in_tf_serving_layout(run):
    paths, _ = run
    result = summary.read(paths)
    assert result.blessed is True
    version_dir = latest_version_dir(paths.serving_model_dir())
    assert version_dir is not None and os.path.basename(version_dir).isdigit()
    assert os.path.exists(os.path.join(version_dir, "saved_model.pb"))
    assert result.pushed_to and os.path.samefile(result.pushed_to, version_dir)
    assert result.ranking_blessed is True
    for metric_values in (result.model_metrics, result.recommend_metrics):
        assert all(0.0 <= metric_values[name] <= 1.0 for name in metrics.METRIC_NAMES)


def test_every_simple_baseline_is_scored_and_compared_per_event_and_per_user(run):
    from components import baselines

    paths, _ = run
    result = summary.read(paths)
    expected = set(baselines.BASELINES)  # both datasets have text content, so content kNN runs too
    assert set(result.baselines["baselines"]) == expected and result.baselines["best"] in expected
    assert result.baselines["num_eval"] == result.retrieval_report["num_eval_records"] and result.baselines["num_validation"] > 0
    comparison = result.retrieval_report["comparison"][metrics.recall_name(10)]
    for view in ("per_event", "per_user"):
        assert set(comparison[view]) == expected | {"retrieval", "recommend"}
        for row in comparison[view].values():
            assert row["ci"][0] <= row["mean"] <= row["ci"][1]
    # per event, the comparison agrees with the plain means
    assert comparison["per_event"]["recommend"]["mean"] == pytest.approx(result.recommend_metrics[metrics.recall_name(10)], abs=1e-6)
    best = result.baselines["best"]
    assert comparison["per_event"][best]["mean"] == pytest.approx(
        result.baselines["baselines"][best]["overall"][metrics.recall_name(10)], abs=1e-6
    )
    assert set(comparison["ratios"]["recommend"]) == {best, baselines.MOST_POPULAR}
    beat = [check for check in result.retrieval_report["checks"] if "best simple baseline" in check["check"]]
    assert len(beat) == 1 and beat[0]["gate"] is False  # a warning unless --require-beat-baseline
    retrieval = result.retrieval_report["retrieval"]
    if paths.dataset == "tuxpaint":  # new items: scored among all items and among new items only
        assert retrieval["by_freshness"]["cold"]["count"] == retrieval["among_own_kind"]["cold"]["count"] > 0
    printed = report.format_run(result, {})
    assert f"Best simple baseline: {best}" in printed and "per user" in printed and "among cold items only" in printed
    assert "Drift: PASS, first run: no previous statistics" in printed
    assert {"like/auc", "like/calibration", "like/ndcg@10", "predicted_rating/root_mean_squared_error"} <= set(result.ranking_metrics)
    assert result.content_quarantined == 0  # the packaged photos, sounds and captions all encode
    catalog_size = len(read_records(os.path.join(paths.data_dir, CATALOG_FILE)))
    if paths.dataset == "tuxpaint":  # every stamp has a photo and a caption; 131 have a sound of their own
        assert result.content_items == {"text": catalog_size, "image": catalog_size, "audio": 131}
    else:
        assert result.content_items == {"text": catalog_size}


def test_served_blend_is_the_one_chosen_on_validation(run):
    import numpy as np

    from components import item_graph
    from components.retrieval_evaluator import executor

    paths, _ = run
    graph = summary.read(paths).item_graph
    assert graph["validation_events"] > 0 and all(graph["edges"][kind] > 0 for kind in item_graph.KINDS)
    chosen = graph["chosen"]
    eligible = [t for t in graph["tried"] if t["new_item_target_met"]] or graph["tried"]
    if chosen["new_item_target_met"]:
        assert chosen["recall_at_10"] == max(t["recall_at_10"] for t in eligible) and chosen["recall_at_10"] >= 0
    model = executor.load_model(summary.read(paths).model_uri)
    np.testing.assert_allclose(model.graph_mix.numpy(), [chosen["mix"][kind] for kind in item_graph.KINDS])
    assert int(model.graph_history.numpy()) == chosen["history_length"]
    assert float(model.new_item_boost.numpy()) == chosen["new_item_boost"]
    assert "recommend = ranker + item graph" in report.format_run(summary.read(paths), {})


def test_the_run_records_what_each_model_cost_to_train(run):
    paths, _ = run
    cost = summary.read(paths).training_cost
    for model in ("two_towers", "ranker"):
        timing = cost[model]
        assert timing["epochs"] >= 1 and timing["steps_per_epoch"] >= 1 and timing["ms_per_step"] > 0
        assert len(timing["seconds_per_epoch"]) == timing["epochs"] and min(timing["seconds_per_epoch"]) > 0
    assert set(cost["stage_seconds"]) == {"two_towers", "item_graph", "ranker", "graph_mix_choice", "export"}
    assert cost["stage_seconds"]["two_towers"] >= sum(cost["two_towers"]["seconds_per_epoch"])  # the epochs are part of the stage
    assert "Training cost: two towers" in report.format_run(summary.read(paths), {})


def test_both_evaluators_slice_by_item_and_user(run):
    import tensorflow_model_analysis as tfma

    paths, _ = run
    result = summary.read(paths)
    tfma_slices = {key.column for per_slice in tfma.load_metrics(result.evaluation_uri) for key in per_slice.slice_key.single_slice_keys}
    assert tfma_slices >= set(F.EVAL_SLICE_FEATURES)
    by_slice = result.retrieval_report["retrieval"]["by_slice"]
    assert set(by_slice) == set(F.EVAL_SLICE_FEATURES)
    counts = {value: row["count"] for value, row in by_slice[F.ITEM_FRESHNESS].items()}
    assert sum(counts.values()) == result.retrieval_report["num_eval_records"]
    if paths.dataset == "tuxpaint":  # the dataset holds some eval items out of training
        assert counts.get("cold", 0) > 0


def test_pushed_model_recommends_catalog_items_in_a_fresh_process(run):
    paths, _ = run
    from mmdata.records import to_example

    catalog_rows = read_catalog(paths)
    catalog = {row[F.ITEM_ID] for row in catalog_rows}
    roles = Manifest.read(paths.data_dir).roles
    item = to_example({name: catalog_rows[0][name] for name in roles.candidate_features})  # no content embeddings
    user = read_records(os.path.join(paths.data_dir, USERS_FILE))[0]
    query = {k: user[k] for k in roles.query_features if k != F.TIMESTAMP}
    example = to_example({**query, F.TIMESTAMP: 893286638})
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            FRESH_PROCESS,
            latest_version_dir(paths.serving_model_dir()),
            example.SerializeToString().hex(),
            item.SerializeToString().hex(),
            json.dumps(query),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(out["item_ids"]) == 20 and len(set(out["item_ids"])) == 20
    assert set(out["item_ids"]) <= catalog
    assert out["scores"] == sorted(out["scores"], reverse=True)
    assert out["signatures"] == sorted(contract.SIGNATURES)
    assert out["inputs"] == [contract.EXAMPLES_INPUT]
    assert out["outputs"] == sorted([contract.ITEM_IDS_OUTPUT, contract.SCORES_OUTPUT])
    assert out["item_embedding_shape"] == [1, HParams().embedding_dim]
    id_weight, metadata_weight, *content_weights = out["modality_weights"]  # order: id, metadata, content modalities
    assert len(content_weights) == {"tuxpaint": 3, "movielens-100k": 1}[paths.dataset]
    assert content_weights == [0.0] * len(content_weights) and abs(id_weight + metadata_weight - 1.0) < 1e-5
    # recommend: retrieve, rank (ranker + item graph + new-item boost), top K; the user's history is left out only when asked.
    excluded, kept = out["recommend"]["True"], out["recommend"]["False"]
    for listing in (excluded, kept):
        assert len(listing["item_ids"]) == 20 and len(set(listing["item_ids"])) == 20 and set(listing["item_ids"]) <= catalog
        assert listing["scores"] == sorted(listing["scores"], reverse=True)
        assert all(0.0 <= p <= 1.0 for p in listing["scores"])
    assert not set(excluded["item_ids"]) & set(user[F.HISTORY])
    # with the item graph and the new-item boost at 0, recommend's scores are the ranker's: rank alone scores
    # the same items the same way; an item not in the catalog scores 0.
    assert out["rank_scores"][:5] == pytest.approx(out["neutral_scores"][:5], abs=1e-5)
    assert out["rank_scores"][5] == 0.0


def test_recommend_cli(run):
    paths, _ = run
    cli = [sys.executable, "-m", "app.cli", "recommend", "--output", paths.output, "--dataset", paths.dataset]
    user = read_records(os.path.join(paths.data_dir, USERS_FILE))[0][F.USER_ID]
    known = subprocess.run(cli + ["--user", user], capture_output=True, text=True, check=True)
    lines = [line for line in known.stdout.splitlines() if re.match(r"\s*\d+\. ", line)]
    assert len(lines) == 10, known.stdout
    unknown = subprocess.run(cli + ["--user", "no-such-user"], capture_output=True, text=True, check=True)
    assert "not in dataset" in unknown.stdout and "Traceback" not in unknown.stderr


def test_fresh_history_in_the_request_changes_the_next_recommendation(run):
    """A click the data has never seen (`--history`) changes the next list, without retraining."""
    from app.recommend import load_model, new_user, recommend, with_fresh_history

    paths, _ = run
    model, _ = load_model(paths)
    catalog = read_catalog(paths)
    user = read_records(os.path.join(paths.data_dir, USERS_FILE))[0]
    before = [item for item, _ in recommend(model, user, 10)]
    clicked = before[0]
    after = [item for item, _ in recommend(model, with_fresh_history(user, [clicked], {row[F.ITEM_ID] for row in catalog}), 10)]
    assert clicked not in after  # now seen, so left out
    assert after[:9] != before[1:]  # not merely the old list without the click
    # A user the data does not know, recommended from a history of one category only: more of that category
    # comes back than for a history of another category.
    dtypes = {name: spec.dtype for name, spec in model.signatures[contract.RECOMMEND_SIGNATURE].structured_input_signature[1].items()}
    by_category: dict[str, list[str]] = {}
    for row in catalog:
        by_category.setdefault(row[F.GENRES][0], []).append(row[F.ITEM_ID])
    first, second = sorted(by_category, key=lambda c: -len(by_category[c]))[:2]

    def share(category: str, history_of: str) -> float:
        user = {**new_user("someone-new", dtypes), F.HISTORY: by_category[history_of][:10]}
        items = [item for item, _ in recommend(model, user, 20)]
        return sum(item in by_category[category] for item in items) / len(items)

    assert share(first, first) > share(first, second)
    assert share(second, second) > share(second, first)
    cli = [sys.executable, "-m", "app.cli", "recommend", "--output", paths.output, "--dataset", paths.dataset]
    fresh = subprocess.run(cli + ["--user", "someone-new", "--history", ",".join(by_category[first][:3])], capture_output=True, text=True)
    assert fresh.returncode == 0 and "from the --history items alone" in fresh.stdout, fresh.stderr
    bad = subprocess.run(cli + ["--user", user[F.USER_ID], "--history", "no-such-item"], capture_output=True, text=True)
    assert bad.returncode == 2 and "'no-such-item'" in bad.stderr and "Traceback" not in bad.stderr


def test_retrieval_evaluator_reports_unreadable_eval_records_and_does_not_bless(run):
    """Eval records the model cannot read (here: no timestamp, no user) are named, left out and block the blessing."""
    import tensorflow as tf

    from components import evaluation as ev
    from components.retrieval_evaluator import executor
    from mmdata.records import split_dir
    from towers.contract import EVAL_SPLIT

    paths, _ = run
    if paths.dataset != "tuxpaint":
        pytest.skip("one dataset is enough")
    records = ev.read_serialized(split_dir(paths.data_dir, EVAL_SPLIT))[:30]
    broken = tf.train.Example.FromString(records[3])
    del broken.features.feature[F.TIMESTAMP]
    del broken.features.feature[F.USER_ID]
    records[3] = broken.SerializeToString()
    model = executor.load_model(summary.read(paths).model_uri)
    result, problems, _, kept = executor.evaluate_model(model, records, with_slices=True)
    assert len(problems) == 1 and problems[0].startswith("eval record 3:")
    assert kept.tolist() == [n for n in range(30) if n != 3]
    assert result[executor.RETRIEVAL]["overall"]["count"] == 29
    checks = executor.checks(result, None, executor.Thresholds(min_recall_at_100=0.0), tfma_blessed=True, problems=problems)
    assert [c["check"] for c in checks if not c["passed"]] == ["every eval record readable"]


def test_evaluate_signatures_exclude_the_seen_items_they_are_given(run):
    """The full seen list the RetrievalEvaluator adds (F.SEEN_ITEMS) is left out of both evaluated lists."""
    import tensorflow as tf

    from components import evaluation as ev
    from components.retrieval_evaluator import executor
    from mmdata.records import split_dir
    from towers.contract import EVAL_SPLIT

    paths, _ = run
    if paths.dataset != "tuxpaint":
        pytest.skip("one dataset is enough")
    records = ev.read_serialized(split_dir(paths.data_dir, EVAL_SPLIT))[:20]
    model = executor.load_model(summary.read(paths).model_uri)
    for name in (contract.EVALUATE_SIGNATURE, contract.EVALUATE_RECOMMEND_SIGNATURE):
        before = model.signatures[name](examples=tf.constant(records))[contract.ITEM_IDS_OUTPUT].numpy()
        seen = [ev.with_seen_items(record, list(top)) for record, top in zip(records, before)]
        after = model.signatures[name](examples=tf.constant(seen))[contract.ITEM_IDS_OUTPUT].numpy()
        assert all(not set(a) & set(b) for a, b in zip(after, before)), name


def test_report_renders_plots_and_tables_in_headless_chromium(run, tmp_path):
    paths, _ = run
    target = tmp_path / "report.html"
    subprocess.run(
        [sys.executable, "-m", "app.cli", "report", "--output", paths.output, "--dataset", paths.dataset, "--html", str(target)],
        check=True,
        capture_output=True,
        text=True,
    )
    browser = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", target.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rendered = dict(re.findall(r'data-(plots-rendered|table-rows)="(\d+)"', browser.stdout))
    # overall bars, the modality mix per item slice, one bar chart per slice feature, the across-runs line chart
    assert int(rendered["plots-rendered"]) == 3 + len(F.EVAL_SLICE_FEATURES)
    assert int(rendered["table-rows"]) > 20


def test_notebooks_run_top_to_bottom(run, monkeypatch):
    import glob

    import nbformat
    from nbclient import NotebookClient

    paths, _ = run
    if paths.dataset != "tuxpaint":
        pytest.skip("one dataset is enough")
    monkeypatch.setenv("MMTOWER_OUTPUT", paths.output)
    monkeypatch.setenv("MMTOWER_DATASET", paths.dataset)
    folder = os.path.join(os.path.dirname(os.path.dirname(__file__)), "notebooks")
    notebooks = sorted(glob.glob(os.path.join(folder, "*.ipynb")))
    assert notebooks
    for path in notebooks:
        notebook = nbformat.read(path, as_version=4)
        NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": folder}}).execute()
        errors = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs if o.output_type == "error"]
        assert not errors, (path, errors)


def test_degraded_model_is_evaluated_not_blessed_not_pushed(run, tmp_path):
    """A model trained with a learning rate of ~0 is scored by both evaluators, refused, and not pushed."""
    if run[0].dataset != "tuxpaint":
        pytest.skip("one dataset is enough")
    paths = own_copy(run, tmp_path)
    versions_before = sorted(os.listdir(paths.serving_model_dir()))
    good = summary.read(paths)
    config = _config(paths.dataset, paths.output)
    config.options = dataclasses.replace(config.options, hparams=config.options.hparams.replace(learning_rate=1e-9))
    local_runner.run(config)
    degraded = summary.read(paths)
    assert degraded.model_uri != good.model_uri  # a new model was trained and evaluated
    assert degraded.retrieval_report["last_blessed_model"] is not None  # against the last blessed model
    failed = [c["check"] for c in degraded.retrieval_report["checks"] if not c["passed"]]
    assert any("last blessed" in check for check in failed), degraded.retrieval_report["checks"]
    assert degraded.blessed is False and degraded.pushed_to is None
    assert sorted(os.listdir(paths.serving_model_dir())) == versions_before


def test_cached_rerun_reports_its_own_model(run, tmp_path):
    """A cache hit reuses an older model, and the summary must name that one."""
    if run[0].dataset != "tuxpaint":
        pytest.skip("one dataset is enough")
    paths = own_copy(run, tmp_path)
    local_runner.run(_config(paths.dataset, paths.output))  # the copy's data path is new: this run trains
    first = summary.read(paths).model_uri
    versions = sorted(os.listdir(paths.serving_model_dir()))
    local_runner.run(_config(paths.dataset, paths.output))  # the same inputs again: a cache hit
    assert summary.read(paths).model_uri == first
    # Re-evaluated against itself (the last blessed model is now this one) and blessed, but not pushed again.
    assert sorted(os.listdir(paths.serving_model_dir())) == versions
    local_runner.run(_config(paths.dataset, paths.output, epochs=2))  # trains a newer model
    assert summary.read(paths).model_uri != first
    local_runner.run(_config(paths.dataset, paths.output))  # same inputs as the first run: the Trainer is a cache hit
    assert summary.read(paths).model_uri == first


FINE_TUNED_PROCESS = """
import json, os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import tensorflow as tf
import tensorflow_text  # the fine-tuned text encoder's WordPiece ops live in the model's graph
from towers import contract
model = tf.saved_model.load(sys.argv[1])
out = model.signatures[contract.EMBED_SIGNATURE](examples=tf.constant([bytes.fromhex(h) for h in sys.argv[2:]]))
print(json.dumps({"weights": out[contract.MODALITY_WEIGHTS_OUTPUT].numpy().tolist(), "shape": list(out[contract.EMBEDDINGS_OUTPUT].shape)}))
"""


def test_fine_tuned_text_model_trains_exports_and_embeds_from_text(run, tmp_path):
    """--fine-tune-text end to end; the exported model reads item_text."""
    if run[0].dataset != "tuxpaint":
        pytest.skip("one dataset is enough")
    paths = own_copy(run, tmp_path)
    from mmdata.records import to_example

    config = _config(paths.dataset, paths.output, epochs=1)  # ~6 s per fine-tuning step on 2 cores
    config.options = dataclasses.replace(config.options, hparams=config.options.hparams.replace(fine_tune_text=True))
    local_runner.run(config)
    model_dir = os.path.join(summary.read(paths).model_uri, "Format-Serving")
    row = read_catalog(paths)[0]
    item = {name: row[name] for name in Manifest.read(paths.data_dir).roles.candidate_features}
    with_text = to_example({**item, F.ITEM_TEXT: row[F.ITEM_TEXT]}).SerializeToString().hex()
    without_text = to_example(item).SerializeToString().hex()
    result = subprocess.run(
        [sys.executable, "-c", FINE_TUNED_PROCESS, model_dir, with_text, without_text],
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    out = json.loads(result.stdout.strip().splitlines()[-1])
    text = 2  # modality order: id, metadata, text, image, audio
    assert out["shape"] == [2, HParams().embedding_dim]
    assert out["weights"][0][text] > 0.0 and out["weights"][1][text] == 0.0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(run):
    """`mmtower serve` on the shared run's output (read-only use)."""
    with serve(run[0]) as served:
        yield served


@contextlib.contextmanager
def serve(paths: RunPaths):
    """`mmtower serve` on a run's output, in its own process (gRPC and REST on free loopback ports) -> (ports, client)."""
    from serving.client import GrpcClient
    from towers.contract import SERVED_MODELS

    grpc_port, rest_port = _free_port(), _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app.cli",
            "serve",
            "--output",
            paths.output,
            "--port",
            str(grpc_port),
            "--rest-port",
            str(rest_port),
            "--poll-seconds",
            "0.5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    client = GrpcClient(f"127.0.0.1:{grpc_port}")
    import time

    deadline = time.monotonic() + 120
    while True:
        try:
            if all(client.status(name)[-1][1] == "AVAILABLE" for name in SERVED_MODELS):
                break
        except Exception:
            pass
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, "the server did not load the pushed models"
        time.sleep(0.5)
    try:
        yield grpc_port, rest_port, client
    finally:
        client.close()
        process.terminate()
        process.wait()


def test_push_writes_three_models_and_a_tf_serving_model_config(run):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    from serving import config as model_config

    paths, _ = run
    parsed = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(open(os.path.join(paths.serving_dir, contract.MODEL_CONFIG_FILE)).read(), parsed)
    assert {c.name: c.base_path for c in parsed.model_config_list.config} == {
        name: paths.serving_model_dir(name) for name in contract.SERVED_MODELS
    }
    versions = {name: model_config.ready_versions(paths.serving_model_dir(name)) for name in contract.SERVED_MODELS}
    assert len({tuple(v) for v in versions.values()}) == 1, versions  # pushed together, same version
    assert not [n for name in contract.SERVED_MODELS for n in os.listdir(paths.serving_model_dir(name)) if not n.isdigit()]


def assert_same_ranking(got, want, tolerance=2e-4):
    """Same scores rank by rank (printed to 4 decimals) and the same items, except that items whose scores
    tie within `tolerance` may come in either order: the server and the CLI run the same graph in different
    processes, and float sums are not bit-identical across thread pools."""
    assert len(got) == len(want)
    want_scores = dict(want)
    for rank, ((got_item, got_score), (want_item, want_score)) in enumerate(zip(got, want), start=1):
        assert got_score == pytest.approx(want_score, abs=tolerance), (rank, got, want)
        if got_item != want_item:  # a tie: it scored the same there (or tied the last place, just outside the list)
            score_there = want_scores.get(got_item, want[-1][1])
            assert score_there == pytest.approx(want_score, abs=tolerance), (rank, got, want)


def test_served_models_answer_over_grpc_and_rest_like_in_process(run, server):
    """`mmtower recommend --server` (gRPC and REST) lists what `mmtower recommend` computes in process."""
    from serving.client import RestClient

    paths, _ = run
    grpc_port, rest_port, client = server
    cli = [sys.executable, "-m", "app.cli", "recommend", "--output", paths.output, "--dataset", paths.dataset]
    user = read_records(os.path.join(paths.data_dir, USERS_FILE))[0][F.USER_ID]

    def items(extra):
        """[(item id, printed score)] best first."""
        out = subprocess.run(cli + ["--user", user] + extra, capture_output=True, text=True, check=True).stdout
        lines = [line for line in out.splitlines() if re.match(r"\s*\d+\. ", line)]
        return [(m.group(2), float(m.group(1))) for m in (re.search(r" (-?[\d.]+)  \(item (.+)\)$", line) for line in lines)]

    local = items([])
    assert len(local) == 10
    assert_same_ranking(items(["--server", f"127.0.0.1:{grpc_port}"]), local)
    assert_same_ranking(items(["--server", f"http://127.0.0.1:{rest_port}"]), local)
    assert_same_ranking(items(["--server", f"127.0.0.1:{grpc_port}", "--retrieval-only"]), items(["--retrieval-only"]))

    def why(extra):
        """The --explain lines under the items."""
        out = subprocess.run(cli + ["--user", user, "--explain"] + extra, capture_output=True, text=True, check=True).stdout
        return [line.strip() for line in out.splitlines() if line.startswith("     ")]

    explained = why([])
    assert len(explained) == 10 and all("mostly" in line for line in explained)
    assert why(["--server", f"127.0.0.1:{grpc_port}"]) == explained  # the explanations travel in the served outputs
    assert why(["--server", f"http://127.0.0.1:{rest_port}"]) == explained
    signatures = client.metadata("ranker")
    assert set(signatures) == {contract.SERVING_DEFAULT, contract.RANK_SIGNATURE}
    assert set(client.metadata("item_encoder")) == {contract.SERVING_DEFAULT, contract.EMBED_SIGNATURE}
    assert set(RestClient(f"http://127.0.0.1:{rest_port}").metadata("recommender")) == set(contract.SIGNATURES)
    bad = subprocess.run(cli + ["--user", user, "--server", "127.0.0.1:1"], capture_output=True, text=True)
    assert bad.returncode == 2 and "UNAVAILABLE" in bad.stderr.upper() and "Traceback" not in bad.stderr


def test_new_item_is_recommended_from_content_without_retraining(run, tmp_path, request):
    """`mmtower index add-items`: a copy of a user's top item under a new id is embedded from its content,
    served by the new version the running server swaps to, and retrieved for that user."""
    import numpy as np
    import tensorflow as tf

    from app.recommend import query_arrays
    from serving import config as model_config

    paths = own_copy(run, tmp_path)
    stack = contextlib.ExitStack()
    request.addfinalizer(stack.close)
    grpc_port, _, client = stack.enter_context(serve(paths))
    user = read_records(os.path.join(paths.data_dir, USERS_FILE))[0]
    signature = client.metadata(contract.RECOMMENDER)[contract.QUERY_SIGNATURE]
    dtypes = {name: tf.as_dtype(info.dtype) for name, info in signature.inputs.items()}
    query = query_arrays(dtypes, user, 893286638)
    before = client.predict(contract.RECOMMENDER, query, contract.QUERY_SIGNATURE)[contract.ITEM_IDS_OUTPUT][0]
    top = before[0].decode()
    catalog = {row[F.ITEM_ID]: row for row in read_catalog(paths)}
    new_items = tmp_path / "new_items.jsonl"
    rows = []
    for number, (new_id, source) in enumerate(
        (("new-copy-of-top", catalog[top]), (top, catalog[top]))
    ):  # the second is already in the catalog
        row = {k: v for k, v in source.items() if k not in F.RAW_BYTES_FEATURES}
        for name in F.RAW_BYTES_FEATURES:
            if source.get(name):
                (tmp_path / f"item{number}.{name}").write_bytes(source[name])
                row[name] = f"item{number}.{name}"
        row[F.ITEM_ID] = new_id
        rows.append(json.dumps(row))
    new_items.write_text("\n".join(rows) + "\n")
    newest_before = {name: max(v for v, _ in client.status(name)) for name in (contract.RECOMMENDER, contract.RANKER)}
    add_items = [sys.executable, "-m", "app.cli", "index", "add-items", str(new_items), "--output", paths.output]
    # First a SIGKILL at the dangerous moment: the new ranker version is in place, the recommender's is not yet.
    import time

    ranker_dir = paths.serving_model_dir(contract.RANKER)
    ranker_before = set(model_config.ready_versions(ranker_dir))
    killed = subprocess.Popen(add_items, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not set(model_config.ready_versions(ranker_dir)) - ranker_before:
        assert killed.poll() is None and time.monotonic() < deadline, "add-items ended before its ranker version appeared"
        time.sleep(0.01)
    killed.kill()
    killed.wait()
    out = subprocess.run(add_items, capture_output=True, text=True, check=True).stdout  # the rerun
    assert "added 1 items (1 quarantined)" in out and "already in the catalog" in out, out
    assert "cut off" in out  # the killed run's versions were rolled back
    served = {name: model_config.ready_versions(paths.serving_model_dir(name)) for name in (contract.RECOMMENDER, contract.RANKER)}
    assert served[contract.RECOMMENDER][-1] == served[contract.RANKER][-1], served  # one version for both
    assert not [n for name in contract.SERVED_MODELS for n in os.listdir(paths.serving_model_dir(name)) if not n.isdigit()]

    deadline = time.monotonic() + 120
    for name, before in newest_before.items():  # the server polls the folder: each model swaps on its own
        while not any(v > before and state == "AVAILABLE" for v, state in client.status(name)):
            assert time.monotonic() < deadline, f"the server did not swap {name} to the new version"
            time.sleep(0.5)
    after = [v.decode() for v in client.predict(contract.RECOMMENDER, query, contract.QUERY_SIGNATURE)[contract.ITEM_IDS_OUTPUT][0]]
    assert "new-copy-of-top" in after, after[:20]
    ranked = client.predict(
        contract.RANKER,
        {**{k: v for k, v in query.items()}, contract.ITEM_IDS_INPUT: np.array([[b"new-copy-of-top", b"no-such-item"]], dtype=object)},
        contract.RANK_SIGNATURE,
    )[contract.SCORES_OUTPUT][0]
    assert ranked[0] > 0 and ranked[1] == 0


def test_recommend_explains_each_item_by_history_and_modality_mix(run):
    """`recommend` outputs, per item, the history items nearest it and its modality mix; `--explain` prints them."""
    import numpy as np

    from app.recommend import load_model, new_user, recommend_outputs

    paths, _ = run
    model, _ = load_model(paths)
    catalog = read_catalog(paths)
    category = {row[F.ITEM_ID]: row[F.GENRES][0] for row in catalog}
    largest = max(set(category.values()), key=list(category.values()).count)
    history = [item for item, c in category.items() if c == largest][:8]  # a history of one category
    dtypes = {name: spec.dtype for name, spec in model.signatures[contract.RECOMMEND_SIGNATURE].structured_input_signature[1].items()}
    outputs = recommend_outputs(model, {**new_user("someone-new", dtypes), F.HISTORY: history})
    because = outputs[contract.BECAUSE_ITEMS_OUTPUT][0]
    assert because.shape[0] == len(outputs[contract.ITEM_IDS_OUTPUT][0])
    assert {v.decode() for v in because.ravel() if v} <= set(history)  # the top contributors come from that category
    assert all(row[0] for row in because)  # every item is explained by at least one history item
    weights = outputs[contract.MODALITY_WEIGHTS_OUTPUT][0]
    names = [v.decode() for v in outputs[contract.MODALITIES_OUTPUT][0]]
    assert names[:2] == ["id", "metadata"] and np.allclose(weights.sum(axis=1), 1.0, atol=1e-4)
    cold = set(model.catalog_ids.numpy()[model.catalog_item_index.numpy() == model.oov_item_index.numpy()])
    for item, row in zip(outputs[contract.ITEM_IDS_OUTPUT][0], weights):
        if item in cold:
            assert row[names.index("id")] == 0.0  # a new item: content only
    from app import summary

    found = summary.read(paths).retrieval_report["recommend"]["attribution"]  # per run, by item slice
    assert found["modalities"] == names and abs(sum(found["overall"]) - 1.0) < 1e-4
    new_items_mix = found["by_slice"]["item_freshness"].get("cold")
    assert new_items_mix is None or new_items_mix["weights"][0] == 0.0  # new items in the lists: content only
    cli = [sys.executable, "-m", "app.cli", "recommend", "--output", paths.output, "--dataset", paths.dataset, "--explain"]
    shown = subprocess.run(cli + ["--user", "someone-new", "--history", ",".join(history[:3]), "--k", "3"], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert len(re.findall(r"because you had .*; mostly \w+ \d+%", shown.stdout)) == 3, shown.stdout


def test_recommend_diverse_caps_categories_and_spreads_the_list(run):
    """`recommend_diverse`: at most N items per category; MMR lowers the list's mean pairwise similarity."""
    import numpy as np

    from app.recommend import Diversity, load_model, recommend_outputs

    paths, _ = run
    model, _ = load_model(paths)
    category = {row[F.ITEM_ID]: row[F.GENRES][0] for row in read_catalog(paths)}
    user = read_records(os.path.join(paths.data_dir, USERS_FILE))[0]
    plain = recommend_outputs(model, user)
    capped = recommend_outputs(model, user, diversity=Diversity(0.0, 2))
    ids = [v.decode() for v in capped[contract.ITEM_IDS_OUTPUT][0]]
    over, listed = [], {}  # whether each item's category already had 2 items above it
    for item in ids:
        over.append(listed.get(category[item], 0) >= 2)
        listed[category[item]] = listed.get(category[item], 0) + 1
    first = over.index(True) if True in over else len(over)
    assert first >= 2 and all(over[first:]), over  # over the cap only once no other candidate is left, then only such items
    plain_ids = [v.decode() for v in plain[contract.ITEM_IDS_OUTPUT][0]]
    assert len({category[i] for i in ids[:first]}) >= len({category[i] for i in plain_ids[:first]})
    embeddings = {item.decode(): row for item, row in zip(model.catalog_ids.numpy(), model.catalog_embeddings.numpy())}

    def similarity(outputs) -> float:
        rows = np.array([embeddings[v.decode()] for v in outputs[contract.ITEM_IDS_OUTPUT][0]])
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        pairs = rows @ rows.T
        return float((pairs.sum() - np.trace(pairs)) / (len(rows) * (len(rows) - 1)))

    assert similarity(recommend_outputs(model, user, diversity=Diversity(0.8, 0))) < similarity(plain)
    cli = [sys.executable, "-m", "app.cli", "recommend", "--output", paths.output, "--dataset", paths.dataset, "--user", user[F.USER_ID]]
    bad = subprocess.run(cli + ["--diversity", "1.5"], capture_output=True, text=True)
    assert bad.returncode == 2 and "diversity must be in [0, 1]" in bad.stderr and "Traceback" not in bad.stderr


def test_dp_training_reports_its_budget_and_ranks_by_the_retrieval_score(run, tmp_path):
    """--dp-epsilon end to end: the budget in the summary and beside the model; the DP model's recommend orders the
    retrieved items by their retrieval score (no ranker trained on the events) and predicts no rating."""
    if run[0].dataset != "tuxpaint":
        pytest.skip("one dataset is enough")
    import tensorflow as tf

    from app.recommend import query_inputs

    paths = own_copy(run, tmp_path)
    config = _config(paths.dataset, paths.output, epochs=2)
    config.options = dataclasses.replace(config.options, hparams=config.options.hparams.replace(dp_epsilon=4.0))
    local_runner.run(config)
    found = summary.read(paths)
    budget = found.differential_privacy
    assert 3.5 < budget["epsilon"] <= 4.0 and budget["noise_multiplier"] > 0
    assert budget["steps"] == 2 * (budget["examples"] // 128) and budget["delta"] < 1 / budget["examples"]
    assert "Differential privacy: the two towers are (" in report.format_run(found, {})
    assert found.item_graph["edges"] == {}  # no co-occurrence graph under DP
    model = tf.saved_model.load(os.path.join(found.model_uri, "Format-Serving"))
    model.new_item_boost.assign(0.0)
    user = read_records(os.path.join(paths.data_dir, USERS_FILE))[0]
    query = {k: user[k] for k in Manifest.read(paths.data_dir).roles.query_features if k != F.TIMESTAMP}
    recommend, retrieve = model.signatures[contract.RECOMMEND_SIGNATURE], model.signatures[contract.SERVING_DEFAULT]
    served = recommend(**query_inputs(recommend, query, 893286638), exclude_seen=tf.constant([False]))
    from mmdata.records import to_example

    example = to_example({**query, F.TIMESTAMP: 893286638}).SerializeToString()
    retrieved = retrieve(examples=tf.constant([example]))
    assert served[contract.ITEM_IDS_OUTPUT].numpy()[0][:10].tolist() == retrieved[contract.ITEM_IDS_OUTPUT].numpy()[0][:10].tolist()
    rank = model.signatures[contract.RANK_SIGNATURE]
    ranked = rank(**query_inputs(rank, query, 893286638), item_ids=served[contract.ITEM_IDS_OUTPUT][:, :3])
    assert all(rating != rating for rating in ranked[contract.PREDICTED_RATINGS_OUTPUT].numpy()[0])  # NaN: no rating model

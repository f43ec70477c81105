"""Incremental training: span 1 from scratch, then span 2 warm-started from the blessed span-1 model on the new events only."""

import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_warm_started_run_trains_on_new_events_and_keeps_old_rows(tmp_path):
    from app import summary
    from components.trainer import RETRIEVAL_STATE, warm_start_dir
    from mmdata.records import Manifest, read_records, split_dir
    from towers import features as F
    from towers import warm_start
    from towers.contract import RECORD_FILE, TRAIN_SPLIT, RunPaths

    output = str(tmp_path / "out")
    command = [
        sys.executable,
        "-m",
        "app.cli",
        "run",
        "--dataset",
        "movielens-100k",
        "--output",
        output,
        "--spans",
        "2",
        "--max-users",
        "30",
        "--epochs",
        "1",
        "--workers",
        "1",
        "--min-recall",
        "0",
        "--min-auc",
        "0",
    ]
    paths = RunPaths(output, "movielens-100k")
    models = []
    for extra in (["--span", "1"], ["--warm-start"]):
        done = subprocess.run(command + extra, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "Pushed to: " in done.stdout, done.stdout[-3000:]
        models.append(os.path.join(summary.read(paths).model_uri, "Format-Serving"))

    first, second = (warm_start.facts(os.path.join(warm_start_dir(model), RETRIEVAL_STATE)) for model in models)
    manifest = Manifest.read(paths.data_dir)
    assert first["warm_started_from"] is None and first["trained_until"] == manifest.span_train_until[0]
    assert second["warm_started_from"] == models[0]
    span_2 = [row[F.TIMESTAMP] for row in read_records(os.path.join(split_dir(paths.data_dir, TRAIN_SPLIT, span=2), RECORD_FILE))]
    new_events = sum(t > first["trained_until"] for t in span_2)
    assert 0 < new_events < len(span_2) and second["events_trained_on"] == new_events
    # Span 2 holds span 1 plus what came after: every old id keeps its row, the new ones get rows of their own.
    items, users = second["warm_start"][F.VOCAB_ITEM], second["warm_start"][F.VOCAB_USER]
    assert items["dropped"] == users["dropped"] == 0
    assert items["kept"] > 0 and items["new"] > 0 and users["kept"] > 0

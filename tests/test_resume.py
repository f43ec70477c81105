"""A run killed mid-way and started again reuses its finished components (ML Metadata) and completes."""

import os
import signal
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

UPSTREAM = ("ImportExampleGen", "CatalogExampleGen", "ContentEmbedder", "StatisticsGen", "Transform")


def execution_states(metadata_path: str) -> dict[str, list[str]]:
    """Pipeline node -> the states of its executions, oldest first."""
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    store = metadata_store.MetadataStore(config)
    states = {}
    for context in store.get_contexts_by_type("node"):
        executions = sorted(store.get_executions_by_context(context.id), key=lambda e: e.id)
        states[context.name.split(".", 1)[1]] = [metadata_store_pb2.Execution.State.Name(e.last_known_state) for e in executions]
    return states


def test_killed_run_resumes_from_its_finished_components(tmp_path):
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
        "--max-users",
        "20",
        "--epochs",
        "1",
        "--workers",
        "1",
        "--min-recall",
        "0",
        "--min-auc",
        "0",
    ]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen = []
    for line in first.stdout:
        seen.append(line)
        if "▶ Trainer" in line:
            os.killpg(first.pid, signal.SIGKILL)  # as a machine going away would
            break
    first.wait()
    assert any("▶ Trainer" in line for line in seen), "".join(seen[-20:])
    metadata = os.path.join(output, "metadata.sqlite")
    before = execution_states(metadata)
    assert all(before[name] == ["COMPLETE"] for name in UPSTREAM), before
    assert "COMPLETE" not in before.get("Trainer", []) and "Pusher" not in before

    second = subprocess.run(command, capture_output=True, text=True)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    after = execution_states(metadata)
    for name in UPSTREAM:  # reused, not recomputed
        assert after[name] == ["COMPLETE", "CACHED"], (name, after[name])
    assert after["Trainer"][-1] == "COMPLETE" and after["Pusher"][-1] == "COMPLETE"
    assert "Pushed to: " in second.stdout and "nothing pushed" not in second.stdout

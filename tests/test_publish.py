"""Publishing versions into the serving folder (serving.publish, the Pusher's push_models): all or nothing,
idempotent, and consistent after a real SIGKILL at each dangerous moment followed by a rerun."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from serving import config as model_config
from serving import publish
from towers import contract

pytestmark = pytest.mark.unit
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def trainer_model(root, name: str = "m1") -> str:
    """A Trainer model folder as the Pusher reads it: Format-Serving + ranker + item_encoder beside it."""
    model = root / name / "Format-Serving"
    for folder in (model, root / name / "ranker", root / name / "item_encoder"):
        (folder / "variables").mkdir(parents=True)
        (folder / "saved_model.pb").write_bytes(b"pb " + str(folder).encode())
        (folder / "variables" / "variables.data").write_bytes(os.urandom(1 << 16))
    return str(model)


def assert_consistent(serving_dir: str, expected_versions: int) -> str:
    """Every served model has the same versions, no scratch folder is left, the log is complete and parses."""
    versions = {name: model_config.ready_versions(os.path.join(serving_dir, name)) for name in contract.SERVED_MODELS}
    assert len({tuple(v) for v in versions.values()}) == 1, versions
    assert len(versions[contract.RECOMMENDER]) == expected_versions
    leftovers = [f for name in contract.SERVED_MODELS for f in os.listdir(os.path.join(serving_dir, name)) if not f.isdigit()]
    assert leftovers == []
    entries = [json.loads(line) for line in open(os.path.join(serving_dir, contract.PUSH_LOG))]
    assert all(e["complete"] for e in entries) and len(entries) == expected_versions
    model_config.read(os.path.join(serving_dir, contract.MODEL_CONFIG_FILE))
    return str(versions[contract.RECOMMENDER][-1])


def test_a_push_publishes_three_models_under_one_version_and_is_not_repeated(tmp_path):
    from components.pusher import push_models

    serving = str(tmp_path / "serving")
    model = trainer_model(tmp_path)
    version, destination, now = push_models(serving, model)
    assert now and destination == os.path.join(serving, "recommender", version)
    assert push_models(serving, model) == (version, destination, False)  # the same model again: nothing pushed
    assert assert_consistent(serving, 1) == version
    version2, _, now2 = push_models(serving, trainer_model(tmp_path, "m2"))
    assert now2 and int(version2) > int(version)
    assert_consistent(serving, 2)


def test_newest_skips_removed_versions_and_old_cut_off_lines(tmp_path):
    serving = tmp_path
    (serving / "recommender" / "1").mkdir(parents=True)
    (serving / contract.PUSH_LOG).write_text(
        json.dumps({"version": "1", "destination": "x", "model": "/m/a"}) + '\n{"version": "2", "desti'
    )
    assert publish.newest(str(serving))["model"] == "/m/a"  # an older log without "complete" or "models"; a cut-off line skipped
    (serving / "recommender" / "1").rmdir()
    assert publish.newest(str(serving)) is None


# The child pushes (or publishes an add-items) and is SIGKILLed when it reaches the named moment.
CHILD = r"""
import os, sys, time
sys.path.insert(0, {root!r})
from serving import config as model_config, publish
from components.pusher import push_models
moment, serving, model = sys.argv[1], sys.argv[2], sys.argv[3]
counts = {{}}
def pause(name):
    counts[name] = counts.get(name, 0) + 1
    if moment in (name, f"{{name}}#{{counts[name]}}"):
        open(os.path.join(serving, "..", "reached"), "w").close()
        time.sleep(60)
real_replace, real_write_log, real_config = os.replace, publish.write_log, model_config.write_for
def replace(src, dst):
    pause("before-rename:" + os.path.basename(os.path.dirname(dst)))
    real_replace(src, dst)
os.replace = replace
def copier(source):
    def write(scratch):
        real = publish.shutil.copytree(source, scratch)
        pause("mid-copy:" + os.path.basename(os.path.dirname(scratch)))
        return real
    return write
publish.copier = copier
def write_for(serving_dir):
    pause("before-config")
    return real_config(serving_dir)
model_config.write_for = write_for
push_models(serving, model)
"""

# in the serving folder, renames #1: the intent log entry, #2: models.config, #3: the entry marked complete
MOMENTS = [
    "before-rename:serving#1",
    "mid-copy:item_encoder",
    "before-rename:ranker",
    "before-rename:recommender",
    "before-config",
    "before-rename:serving#2",
    "before-rename:serving#3",
]


@pytest.mark.parametrize("moment", MOMENTS)
def test_a_push_killed_at_any_moment_then_rerun_leaves_a_consistent_folder(tmp_path, moment):
    from components.pusher import push_models

    serving = tmp_path / "serving"
    serving.mkdir()
    first = push_models(str(serving), trainer_model(tmp_path, "m1"))[0]
    second_model = trainer_model(tmp_path, "m2")
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(root=ROOT))
    child = subprocess.Popen([sys.executable, str(script), moment, str(serving), second_model])
    deadline = time.monotonic() + 60
    while not (tmp_path / "reached").exists():
        assert child.poll() is None, f"the child exited with {child.returncode} before reaching {moment}"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    # before the rerun, a reader that recovers sees the last complete push only
    publish.recover(str(serving))
    assert assert_consistent(str(serving), 1) == first
    version, _, now = push_models(str(serving), second_model)  # the rerun
    assert now and assert_consistent(str(serving), 2) == version


def test_recommend_refuses_models_another_dataset_pushed_into_the_same_folder(tmp_path):
    from app.recommend import SetupError, check_dataset, query_arrays
    from components.pusher import push_models
    from towers.contract import RunPaths

    paths = RunPaths(str(tmp_path), "tuxpaint")
    push_models(paths.serving_dir, trainer_model(tmp_path), pipeline="mmtower-movielens-100k")
    with pytest.raises(SetupError, match="pushed by mmtower-movielens-100k, not mmtower-tuxpaint.*--dataset movielens-100k"):
        check_dataset(paths)
    check_dataset(RunPaths(str(tmp_path), "movielens-100k"))  # the right dataset: fine
    import tensorflow as tf

    with pytest.raises(SetupError, match="asks for age"):  # a server's model trained on a dataset with user attributes
        query_arrays({"user_id": tf.string, "age": tf.int64, "history": tf.string}, {"user_id": "u1", "history": []}, 0)

"""Publishing model versions into a serving folder, all or nothing, safe against a kill at any moment.

One publication (a push of the Trainer's three models, or an `index
add-items` of the recommender and ranker) writes the same version number
under each of its models, in TF Serving's layout:

1. an entry {"version", "models", "complete": false, ...} is added to
   `<serving dir>/push_log.jsonl` (the log is rewritten whole into a scratch
   file, fsynced and renamed: it is never half written);
2. each model is written under `<model>/.partial-<version>`, fsynced, and
   renamed to `<model>/<version>` (a server polling the folder never sees half
   a model; the recommender comes last, so when it appears its companions are
   already there);
3. models.config is rewritten (atomically);
4. the entry is marked complete.

Before every publication, and whenever a reader needs a consistent folder
(`recover`), a publication that was cut off is rolled back: its version
folders and every scratch folder are deleted and its entry dropped, so the
newest version of every model is again the last complete publication's. The
command that was killed is simply run again. One writer at a time is
assumed (the Pusher and add-items are run one after the other).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable

from serving import config as model_config
from towers import contract
from towers.contract import PUSH_LOG

SCRATCH_PREFIX = ".partial-"
PUSH, ADD_ITEMS = "push", "add-items"  # the kinds of publication

log = logging.getLogger("mmtower.publish")


def read_log(serving_dir: str) -> list[dict]:
    """The publications recorded under `serving_dir`, oldest first (a line that does not parse is skipped with a warning)."""
    path = os.path.join(serving_dir, PUSH_LOG)
    if not os.path.exists(path):
        return []
    entries = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("%s line %d is not JSON (cut off by an older version?): skipped", path, number)
    return entries


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: str) -> None:
    """Flushes every file and folder under `path` to disk, so a rename after it publishes complete data."""
    for folder, _, files in os.walk(path):
        for name in files:
            _fsync(os.path.join(folder, name))
        _fsync(folder)


def write_log(serving_dir: str, entries: list[dict]) -> None:
    """Rewrites the log atomically: a scratch file, fsync, rename."""
    os.makedirs(serving_dir, exist_ok=True)
    path = os.path.join(serving_dir, PUSH_LOG)
    scratch = path + ".partial"
    with open(scratch, "w") as f:
        f.write("".join(json.dumps(entry) + "\n" for entry in entries))
        f.flush()
        os.fsync(f.fileno())
    os.replace(scratch, path)
    _fsync(serving_dir)


def recover(serving_dir: str) -> list[str]:
    """Rolls back every publication that did not complete and removes scratch folders; returns what it did."""
    done = []
    entries = read_log(serving_dir)
    for entry in (e for e in entries if e.get("complete") is False):
        for name in entry.get("models", ()):
            target = os.path.join(serving_dir, name, str(entry["version"]))
            if os.path.isdir(target):
                shutil.rmtree(target)
                done.append(f"removed {target} (its publication was cut off)")
    kept = [e for e in entries if e.get("complete") is not False]
    if len(kept) != len(entries):
        write_log(serving_dir, kept)
    for name in contract.SERVED_MODELS:
        base = os.path.join(serving_dir, name)
        for scratch in os.listdir(base) if os.path.isdir(base) else []:
            if scratch.startswith(SCRATCH_PREFIX):
                shutil.rmtree(os.path.join(base, scratch), ignore_errors=True)
                done.append(f"removed scratch folder {os.path.join(base, scratch)}")
    if os.path.exists(partial := os.path.join(serving_dir, PUSH_LOG + ".partial")):
        os.remove(partial)
    for line in done:
        log.warning(line)
    return done


def next_version(serving_dir: str) -> int:
    """A version number above every one under `serving_dir` (UNIX time, as TFX's Pusher numbers versions)."""
    versions = [v for name in contract.SERVED_MODELS for v in model_config.ready_versions(os.path.join(serving_dir, name))]
    return max([int(time.time())] + [v + 1 for v in versions])


def publish(serving_dir: str, version: int, writers: dict[str, Callable[[str], None]], **record) -> dict[str, str]:
    """Publishes one version of each model in `writers` (name -> function writing that model's SavedModel
    folder at the path it is given); `record` is kept in the log entry. -> model name -> its version folder."""
    recover(serving_dir)
    entries = read_log(serving_dir)
    entry = {**record, "version": str(version), "models": list(writers), "complete": False}
    write_log(serving_dir, entries + [entry])
    targets = {}
    for name in sorted(writers, key=lambda n: n == contract.RECOMMENDER):  # the recommender last
        base = os.path.join(serving_dir, name)
        os.makedirs(base, exist_ok=True)
        target, scratch = os.path.join(base, str(version)), os.path.join(base, f"{SCRATCH_PREFIX}{version}")
        shutil.rmtree(scratch, ignore_errors=True)
        writers[name](scratch)
        fsync_tree(scratch)
        os.replace(scratch, target)
        _fsync(base)
        targets[name] = target
    model_config.write_for(serving_dir)
    entry["complete"] = True
    write_log(serving_dir, entries + [entry])
    return targets


def copier(source: str) -> Callable[[str], None]:
    """A writer (see publish) copying an exported SavedModel folder."""
    return lambda scratch: shutil.copytree(source, scratch)


def newest(serving_dir: str, kind: str | None = None) -> dict | None:
    """The last complete publication (of `kind`, if given) whose version folders all still exist, or None."""
    for entry in reversed(read_log(serving_dir)):
        if entry.get("complete") is False or (kind is not None and entry.get("kind", PUSH) != kind):
            continue
        models = entry.get("models") or [contract.RECOMMENDER]
        if all(os.path.isdir(os.path.join(serving_dir, name, str(entry["version"]))) for name in models):
            return entry
    return None

"""`mmtower forget --user ID [--purge]`: erase a user from the data, the next model, and (with --purge) older artifacts.

1. The user's stored id (the pseudonym, when the data holds pseudonyms) is
   added to <output>/forgotten/<dataset>.txt. Every later build leaves their
   events and attributes out (mmdata.registry.build), so the next `mmtower run`
   trains without them: no id-embedding row (the user vocabulary is built from
   the training data), no stored history, nothing in the new statistics.
2. Every file of the output that still holds the id (gzip files read
   decompressed) is listed, by artifact: the built data, pipeline artifacts
   (examples, statistics, Transform outputs, models), served model versions.
3. `--purge` deletes those artifacts and marks them DELETED in ML Metadata (so
   that no resolver or cache hands them out again). It refuses while the newest
   served version still holds the user: run `mmtower run` first, so that a
   model without them is served, then purge the rest.

Known limits (docs/privacy.md): copies outside the output folder (a Kubeflow
pipeline root, backups, the user's own files) are not reached.
"""

from __future__ import annotations

import gzip
import os
import shutil

from mmdata.records import Manifest
from towers.contract import RunPaths, latest_version_dir


def artifact_root(paths: RunPaths, file: str) -> str:
    """The artifact folder a file belongs to: pipeline/<p>/<Component>/<output>/<id>, serving/<model>/<version>,
    data/<dataset>, requests/<dataset>, or the file itself (metadata.sqlite, logs)."""
    relative = os.path.relpath(file, paths.output).split(os.sep)
    depth = {"pipeline": 5, "serving": 3, "data": 2, "requests": 2}.get(relative[0], len(relative))
    return os.path.join(paths.output, *relative[: min(depth, len(relative))])


def holding(paths: RunPaths, stored_id: str) -> list[str]:
    """The artifact folders (and files) under the output that hold `stored_id`, sorted."""
    needle = stored_id.encode()
    found = set()
    for folder, _, names in os.walk(paths.output):
        for name in names:
            file = os.path.join(folder, name)
            if file == paths.forget_file:
                continue
            try:
                with open(file, "rb") as f:
                    data = f.read()
                if name.endswith(".gz"):
                    data = gzip.decompress(data)
            except (OSError, EOFError):
                continue  # unreadable or a truncated gzip: not ours to judge here
            if needle in data:
                found.add(artifact_root(paths, file))
    return sorted(found)


def record(paths: RunPaths, stored_id: str) -> bool:
    """Adds the id to the forget list; False if it was there already."""
    from pipeline.local_runner import forgotten_users

    if stored_id in forgotten_users(paths):
        return False
    os.makedirs(os.path.dirname(paths.forget_file), exist_ok=True)
    with open(paths.forget_file, "a") as f:
        f.write(stored_id + "\n")
    return True


def mark_deleted(paths: RunPaths, roots: list[str]) -> int:
    """Marks the ML Metadata artifacts stored under `roots` DELETED; -> how many."""
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    if not os.path.exists(paths.metadata_path):
        return 0
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = paths.metadata_path
    store = metadata_store.MetadataStore(config)
    changed = []
    for artifact in store.get_artifacts():
        if artifact.uri and any(artifact.uri == root or artifact.uri.startswith(root + os.sep) for root in roots):
            artifact.state = metadata_store_pb2.Artifact.DELETED
            changed.append(artifact)
    if changed:
        store.put_artifacts(changed)
    return len(changed)


def main(output: str, dataset: str, user_id: str, purge: bool = False, key_file: str | None = None) -> int:
    from app.recommend import SetupError, stored_user_id

    paths = RunPaths(os.path.abspath(output), dataset)
    if not os.path.exists(os.path.join(paths.data_dir, "manifest.json")):
        raise SetupError(f"no dataset {dataset} under {paths.output}: nothing to forget")
    stored = stored_user_id(Manifest.read(paths.data_dir), user_id, key_file)
    added = record(paths, stored)
    print(f"{'Recorded' if added else 'Already recorded'}: user {user_id} ({stored}) is left out of every build ({paths.forget_file}).")
    roots = holding(paths, stored)
    if not roots:
        print("No file under the output holds them any more.")
        return 0
    print(f"{len(roots)} artifacts still hold them:")
    for root in roots:
        print(f"  {os.path.relpath(root, paths.output)}")
    if not purge:
        print("Next: `mmtower run` (trains and serves a model without them), then `mmtower forget --purge` to delete these.")
        return 0
    newest = latest_version_dir(paths.serving_model_dir())
    if newest is not None and any(newest == root or newest.startswith(root + os.sep) for root in roots):
        raise SetupError(
            f"the newest served model ({os.path.relpath(newest, paths.output)}) still holds this user: run `mmtower run` "
            "first, so that a model trained without them is served, then purge"
        )
    marked = mark_deleted(paths, roots)
    for root in roots:
        if os.path.isdir(root):
            shutil.rmtree(root)
        elif os.path.exists(root) and not root.endswith("metadata.sqlite"):
            os.remove(root)
    print(f"Deleted {len(roots)} artifacts ({marked} marked DELETED in ML Metadata).")
    left = holding(paths, stored)
    if left:
        print("Still holding them (not deleted: the metadata store itself, or files in use):")
        for root in left:
            print(f"  {os.path.relpath(root, paths.output)}")
    return 0

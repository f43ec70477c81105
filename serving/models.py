"""Which SavedModel versions the development server holds, loaded from a models.config.

The manager polls each model's base path (as TF Serving's file system source
does), loads the versions its version policy wants, and swaps the set of
served versions in one assignment: a request holds the version it started
with until it finishes, so a new version never fails a request in flight.

A version that fails to load (unreadable, or without the signatures its
model must have, REQUIRED_SIGNATURES) is reported in its status and retried
when any file of its folder changes (a copy still in progress completes);
the versions already served stay up, and with a "latest" policy the newest
versions that do load are served, so a server (re)started over a broken
newest version serves the one before it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field

from serving import config as model_config
from serving.errors import ServingError, StatusCode
from towers.contract import REQUIRED_SIGNATURES

log = logging.getLogger("mmtower.serve")


@dataclass(frozen=True)
class Servable:
    """One loaded version of one model."""

    name: str
    version: int
    path: str
    model: object  # the tf.saved_model.load object
    signature_defs: dict  # signature name -> tensorflow.core.protobuf.meta_graph_pb2.SignatureDef


@dataclass
class VersionState:
    """What TF Serving's GetModelStatus reports for a version."""

    version: int
    state: str  # AVAILABLE | END (failed to load or unloaded)
    error: str = ""


# What each served model must offer to be swapped in (what mmtower's clients and add-items call).


def load_servable(name: str, version: int, path: str) -> Servable:
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    if not saved_model.meta_graphs:
        raise ValueError("the SavedModel has no MetaGraph")
    signature_defs = {key: value for key, value in saved_model.meta_graphs[0].signature_def.items() if not key.startswith("__")}
    missing = [s for s in REQUIRED_SIGNATURES.get(name, ()) if s not in signature_defs]
    if missing:
        raise ValueError(
            f"signature(s) {', '.join(missing)} missing (it has: {', '.join(sorted(signature_defs)) or 'none'}); model {name!r} must have them"
        )
    return Servable(name, version, path, tf.saved_model.load(path), signature_defs)


def fingerprint(path: str) -> tuple:
    """Every file of a version folder with its size and modification time: any change means "try loading again"."""
    entries = []
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                stat = os.stat(os.path.join(folder, name))
            except OSError:  # removed while we look: the next poll sees the new state
                continue
            entries.append((os.path.relpath(os.path.join(folder, name), path), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(entries))


@dataclass
class ModelManager:
    """Loads and swaps the versions of every model in a ModelServerConfig.

    Args:
      server_config: tensorflow.serving.ModelServerConfig (model_config_list).
      poll_seconds: how often base paths are scanned for new versions.
    """

    server_config: object
    poll_seconds: float = 1.0
    _served: dict = field(default_factory=dict)  # name -> {version: Servable}; replaced, never mutated
    _states: dict = field(default_factory=dict)  # name -> {version: VersionState}
    _failed: dict = field(default_factory=dict)  # (name, version) -> fingerprint() of the folder that failed to load
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def model_names(self) -> list[str]:
        return [model.name for model in self.server_config.model_config_list.config]

    def refresh(self) -> list[str]:
        """Loads newly wanted versions and drops unwanted ones; returns what changed (for the log)."""
        with self._lock:  # one refresh at a time; readers never take this lock
            changes = []
            served = {}
            for model in self.server_config.model_config_list.config:
                current = self._served.get(model.name, {})
                states = self._states.setdefault(model.name, {})
                versions = {}
                ready = model_config.ready_versions(model.base_path)
                wanted = model_config.wanted_versions(model, ready)
                latest = model.model_version_policy.WhichOneof("policy_choice") in (None, "latest")
                # "latest N": the newest N that load, older ones standing in for broken newer ones
                candidates = sorted(ready, reverse=True) if latest else wanted
                for version in candidates:
                    if latest and len(versions) == len(wanted):
                        break
                    if version in current:
                        versions[version] = current[version]
                        continue
                    path = os.path.join(model.base_path, str(version))
                    stamp = fingerprint(path)
                    if self._failed.get((model.name, version)) == stamp:
                        continue
                    try:
                        versions[version] = load_servable(model.name, version, path)
                    except Exception as error:  # a broken version must not take the server down
                        self._failed[(model.name, version)] = stamp
                        states[version] = VersionState(version, "END", f"could not load {path}: {error}")
                        changes.append(f"{model.name} version {version} failed to load: {error}")
                        continue
                    self._failed.pop((model.name, version), None)
                    states[version] = VersionState(version, "AVAILABLE")
                    changes.append(f"{model.name} version {version} loaded from {path}")
                if not versions and current:
                    versions = current  # the newest version is broken or gone: keep serving what we have
                for version in set(current) - set(versions):
                    states[version] = VersionState(version, "END")
                    changes.append(f"{model.name} version {version} unloaded")
                served[model.name] = versions
            self._served = served  # the atomic swap
            return changes

    def start(self) -> None:
        """Loads what is there now, then keeps polling in a daemon thread."""
        for change in self.refresh():
            log.info(change)
        self._thread = threading.Thread(target=self._poll, name="model-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                for change in self.refresh():
                    log.info(change)
            except Exception:  # e.g. a base path removed mid-scan: try again next time
                log.exception("model refresh failed")

    def wait_for(self, name: str, version: int | None = None, timeout: float = 60.0) -> Servable:
        """Blocks until `name` (at `version`, or any) is served; for tests and scripts."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                servable = self.get(name, version)
                if version is None or servable.version == version:
                    return servable
            except ServingError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} version {version or 'any'} not served after {timeout:.0f} s")
            time.sleep(0.05)

    def get(self, name: str, version: int | None = None) -> Servable:
        """The servable for a request: the newest version, or the one asked for (NOT_FOUND otherwise)."""
        served = self._served  # one read: the request keeps this version even if a swap happens now
        if name not in served and name not in self.model_names:
            raise ServingError(
                StatusCode.NOT_FOUND,
                f"Servable not found for request: model {name!r} is not in the model config (models: {', '.join(self.model_names)})",
            )
        versions = served.get(name, {})
        if not versions:
            raise ServingError(StatusCode.NOT_FOUND, f"Servable not found for request: no version of model {name!r} is loaded")
        if version is None:
            return versions[max(versions)]
        if version not in versions:
            raise ServingError(
                StatusCode.NOT_FOUND, f"Servable not found for request: Specific({name}, {version}); served versions: {sorted(versions)}"
            )
        return versions[version]

    def status(self, name: str, version: int | None = None) -> list[VersionState]:
        """Known versions of a model (NOT_FOUND for an unknown model or version)."""
        if name not in self.model_names:
            raise ServingError(StatusCode.NOT_FOUND, f"Could not find any versions of model {name}")
        states = dict(self._states.get(name, {}))
        if version is not None:
            if version not in states:
                raise ServingError(StatusCode.NOT_FOUND, f"Could not find version {version} of model {name}")
            return [states[version]]
        return [states[v] for v in sorted(states)]

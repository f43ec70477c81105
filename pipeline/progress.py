"""Progress lines for a LocalDagRunner run: one line when a component starts and finishes.

TFX logs everything at INFO; the full log goes to a file and the terminal gets
only the component transitions, with wall times, and the warnings mmtower's own
code logs. While the pipeline runs, standard error (TensorFlow's C++ logs,
library chatter, the tracebacks TF prints when Beam worker processes exit) goes
to the log file too: a successful run prints no traceback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import time

_RUNNING = re.compile(r"Component (\S+) is running\.")
_FINISHED = re.compile(r"Component (\S+) is finished\.")
_CACHED = re.compile(r"A cached execution \d+ is used\.")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("app", "components", "mmdata", "pipeline", "serving", "towers")  # whose warnings reach the terminal


def _ours(record: logging.LogRecord) -> bool:
    relative = os.path.relpath(os.path.abspath(record.pathname), ROOT)
    return relative.split(os.sep)[0] in PACKAGES


class ProgressHandler(logging.Handler):
    """Prints component start/finish lines and records each component's wall time."""

    def __init__(self, stream=None):
        super().__init__(level=logging.INFO)
        self.stream = stream or sys.stdout
        self.started = time.monotonic()
        self._current: str | None = None
        self._current_start = 0.0
        self._cached = False
        self.wall_times: dict[str, float] = {}
        self.cached: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if match := _RUNNING.search(message):
            self._current, self._current_start, self._cached = match.group(1), time.monotonic(), False
            self.say(f"▶ {self._current} ...")
        elif _CACHED.search(message):
            self._cached = True
        elif match := _FINISHED.search(message):
            name = match.group(1)
            seconds = time.monotonic() - self._current_start
            self.wall_times[name] = seconds
            if self._cached:
                self.cached.add(name)
            self.say(f"✔ {name} {'(cached) ' if self._cached else ''}{seconds:.1f}s")
        elif record.levelno >= logging.WARNING and _ours(record):
            self.say(f"⚠ {message}")

    def say(self, text: str) -> None:
        elapsed = time.monotonic() - self.started
        self.stream.write(f"[{elapsed:6.1f}s] {text}\n")
        self.stream.flush()


def install(log_file: str) -> ProgressHandler:
    """Routes INFO logs to `log_file` and component progress to stdout."""
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.INFO)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    tf_logger = logging.getLogger("tensorflow")  # TF installs its own stderr handler
    for handler in list(tf_logger.handlers):
        tf_logger.removeHandler(handler)
    tf_logger.propagate = True
    file_handler = logging.FileHandler(log_file)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    progress = ProgressHandler()
    root.addHandler(file_handler)
    root.addHandler(progress)
    root.setLevel(logging.INFO)
    return progress


@contextlib.contextmanager
def stderr_to(log_file: str):
    """Sends this process's standard error, file descriptor 2 (which Beam's worker processes inherit), to `log_file`."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(log_file, "ab") as log:
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)

"""The terminal during a run: component transitions and mmtower's own warnings; everything else in the log file."""

import io
import logging
import os
import subprocess
import sys

import pytest

from pipeline import progress

pytestmark = pytest.mark.unit


def _record(level: int, message: str, pathname: str) -> logging.LogRecord:
    return logging.LogRecord("absl", level, pathname, 1, message, None, None)


def test_progress_shows_transitions_and_our_warnings_only():
    out = io.StringIO()
    handler = progress.ProgressHandler(out)
    ours = os.path.join(progress.ROOT, "components", "pusher.py")
    library = os.path.join(progress.ROOT, ".venv", "lib", "python3.11", "site-packages", "tfx", "x.py")
    handler.emit(_record(logging.INFO, "Component Trainer is running.", library))
    handler.emit(_record(logging.WARNING, "`custom_executor_spec` is deprecated.", library))
    handler.emit(_record(logging.WARNING, "serving/ serves models of mmtower-tuxpaint", ours))
    handler.emit(_record(logging.INFO, "an info line of ours", ours))
    handler.emit(_record(logging.INFO, "Component Trainer is finished.", library))
    texts = [line.split("] ", 1)[1] for line in out.getvalue().splitlines()]
    assert texts[:2] == ["▶ Trainer ...", "⚠ serving/ serves models of mmtower-tuxpaint"]
    assert len(texts) == 3 and texts[2].startswith("✔ Trainer ")


def test_standard_error_of_child_processes_goes_to_the_log(tmp_path):
    log = tmp_path / "run.log"
    child = "import sys; sys.stderr.write('Traceback (most recent call last):\\n  noise\\n')"
    with progress.stderr_to(str(log)):
        subprocess.run([sys.executable, "-c", child], check=True)
        os.write(2, b"C++ log line\n")
    assert "Traceback" in log.read_text() and "C++ log line" in log.read_text()
    os.write(2, b"")  # standard error is back

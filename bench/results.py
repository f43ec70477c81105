"""Where benchmarks write their tables: bench/results/<name>.md, also printed."""

import os

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def write(name: str, lines: list[str]) -> str:
    """Writes `lines` as bench/results/<name>.md, prints them, returns the path."""
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, f"{name}.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return path

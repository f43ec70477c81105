"""Benchmark: the default `mmtower run` end to end, from an empty output folder.

Records wall time per component and in total (bar: <= 6 minutes on 2 cores),
peak resident memory of the run, and the model's metrics beside most-popular on
the same split, as a markdown table in bench/results/pipeline_run-<dataset>.md.

    .venv/bin/python -m bench.pipeline_run [--dataset tuxpaint] [--output /tmp/mmtower-bench]
"""

import argparse
import os
import resource
import shutil
import sys
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning,ignore::DeprecationWarning")

from app import report, summary  # noqa: E402
from bench import results  # noqa: E402
from pipeline import local_runner  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=local_runner.RunConfig.dataset)
    parser.add_argument("--output", default="/tmp/mmtower-bench")
    args = parser.parse_args()
    shutil.rmtree(args.output, ignore_errors=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    paths, wall_times = local_runner.run(local_runner.RunConfig(dataset=args.dataset, output=args.output))
    result = summary.read(paths)
    peak_mib = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    lines = [
        f"# `mmtower run` end to end ({args.dataset}, {started}, {os.cpu_count()} cores)",
        "",
        "| step | wall s |",
        "|---|---|",
        *[f"| {name} | {seconds:.1f} |" for name, seconds in wall_times.items()],
        "",
        f"Peak RSS of the largest process: {peak_mib:,.0f} MiB. Bar: total <= 360 s.",
        "",
        "```",
        report.format_metrics_table(result.model_metrics, result.recommend_metrics, result.baselines),
        "```",
        "",
        "Ranking model (TFMA, overall): " + ", ".join(f"{name} {value:.4f}" for name, value in sorted(result.ranking_metrics.items())),
        "",
    ]
    results.write(f"pipeline_run-{args.dataset}", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

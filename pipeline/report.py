"""Plain-text run summary: model next to most-popular, blessing, push location, wall times."""
from __future__ import annotations

from components.retrieval_evaluator.executor import COVERAGE
from pipeline.summary import RunSummary
from towers import metrics


def format_metrics_table(model: dict[str, float], baseline: dict[str, float], recommend: dict[str, float] | None = None) -> str:
    """Retrieval (and retrieve-then-rank) next to most-popular; ratio = retrieval / most-popular."""
    recommend = recommend or {}
    rows = [f"{'metric':<16}{'two-tower':>12}{'+ ranking':>12}{'most-popular':>14}{'ratio':>8}"]
    for name in metrics.METRIC_NAMES + (COVERAGE,):
        m, b = model.get(name), baseline.get(name)
        ratio = f"{m / b:.2f}x" if m is not None and b else "-"
        rows.append(f"{name:<16}{_fmt(m):>12}{_fmt(recommend.get(name)):>12}{_fmt(b):>14}{ratio:>8}")
    return "\n".join(rows)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def format_run(summary: RunSummary, wall_times: dict[str, float]) -> str:
    lines = ["", "== mmtower run summary ==", format_metrics_table(summary.model_metrics, summary.baseline_metrics, summary.recommend_metrics), ""]
    if summary.ranking_metrics:
        lines.append("Ranking (TFMA, eval split): " + ", ".join(f"{name} {value:.4f}" for name, value in sorted(summary.ranking_metrics.items())))
    if summary.content_quarantined is not None:
        embedded = ", ".join(f"{modality} {count:,}" for modality, count in summary.content_items.items())
        lines.append(f"Content: items embedded per modality: {embedded or 'none'}; {summary.content_quarantined} could not be encoded ({summary.content_quarantine_file})")
    for check in summary.retrieval_report.get("checks", []):
        lines.append(f"  {'PASS' if check['passed'] else 'FAIL'}  {check['check']}  ({check['detail']})")
    if summary.blessed is None:
        lines.append("Evaluators: no blessing recorded")
    else:
        lines.append(f"Evaluators: model {'BLESSED' if summary.blessed else 'NOT blessed (a check above failed)'}")
    lines.append(f"Pushed to: {summary.pushed_to}" if summary.pushed_to else "Pushed to: nothing pushed")
    times = ", ".join(f"{name} {seconds:.0f}s" for name, seconds in wall_times.items() if name != "total")
    lines.append(f"Wall time: {wall_times.get('total', 0):.0f}s ({times})")
    return "\n".join(lines)

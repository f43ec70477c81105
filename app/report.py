"""Plain-text run summary: the model next to every simple baseline, intervals, new items, checks, push location, wall times."""

from __future__ import annotations

import math

from app.summary import RunSummary
from components import evaluation as ev
from components.baselines import label
from components.drift_validator import skew_line
from components.drift_validator import summary_line as drift_line
from towers import features as F
from towers import metrics

RECALL_10, RECALL_50 = metrics.recall_name(10), metrics.recall_name(50)
PATHS = {"retrieval": "two-tower", "recommend": "+ ranking"}  # the RetrievalEvaluator's keys -> column titles
MISSING = "n/a"  # an absent or NaN value, never printed as "nan"


def format_metrics_table(model: dict[str, float], recommend: dict[str, float], baselines: dict) -> str:
    """Eval-split metrics of retrieval, the served recommend and each baseline (Baselines' metrics.json), one column each."""
    columns = {PATHS["retrieval"]: model, PATHS["recommend"]: recommend}
    columns.update({name: row["overall"] for name, row in baselines.get("baselines", {}).items()})
    width = max([14] + [len(title) + 2 for title in columns])
    names = metrics.METRIC_NAMES + ev.LIST_METRICS
    label = max(len(name) for name in names) + 1
    rows = [f"{'metric':<{label}}" + "".join(f"{title:>{width}}" for title in columns)]
    for name in names:
        rows.append(f"{name:<{label}}" + "".join(f"{_fmt(values.get(name)):>{width}}" for values in columns.values()))
    return "\n".join(rows)


def _fmt(value: float | None, digits: int = 4) -> str:
    return MISSING if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _ci(row: dict) -> str:
    return f"{_fmt(row.get('mean'))} [{_fmt(row['ci'][0])}, {_fmt(row['ci'][1])}]"


def _ratio(row: dict) -> str:
    ratio = _fmt(row["ratio"], 2)
    return f"{ratio}{'' if ratio == MISSING else 'x'} [{_fmt(row['ci'][0], 2)}-{_fmt(row['ci'][1], 2)}]"


def format_comparison(report: dict) -> list[str]:
    """The RetrievalEvaluator's comparison with the baselines: best baseline, intervals, ratios, new vs warm items."""
    if "comparison" not in report:
        return ["(no baselines were scored in this run)"]
    baselines = report["baselines"]
    best = baselines["best"]
    chosen = baselines["baselines"][best]
    lines = [
        f"Eval split: {report['num_eval_records']:,} events from {report.get('num_eval_users', 0):,} users, scored once. Baseline parameters "
        f"and the best baseline were chosen on the validation split ({baselines['num_validation']:,} events); every list leaves out "
        "everything the user had seen before the event.",
        f"Best simple baseline: {label(best, chosen['params'])} (validation {RECALL_10} {_fmt(chosen['validation'].get(RECALL_10))})",
        "",
        f"{RECALL_10} with 95% user-bootstrap intervals ({report['comparison'][RECALL_10]['users']:,} users):",
        f"  {'':<22}{'per event':<28}{'per user':<28}",
    ]
    row = report["comparison"][RECALL_10]
    names = {"recommend": "served recommend", "retrieval": "two-tower retrieval", **{name: name for name in baselines["baselines"]}}
    for key, title in names.items():
        if key in row["per_event"]:
            lines.append(f"  {title:<22}{_ci(row['per_event'][key]):<28}{_ci(row['per_user'][key]):<28}")
    for path in ("recommend", "retrieval"):
        parts = []
        for other, ratio in row["ratios"][path].items():
            parts.append(f"vs {other} {_ratio(ratio['per_event'])} per event, {_ratio(ratio['per_user'])} per user")
        lines.append(f"Ratio, {names[path]}: " + "; ".join(parts))
    lines.append("")
    lines += _freshness_lines(report, baselines)
    return lines


def _pair(summary: dict) -> str:
    return MISSING if not summary.get("count") else f"{_fmt(summary.get(RECALL_10))}/{_fmt(summary.get(RECALL_50))}"


def _freshness_lines(report: dict, baselines: dict) -> list[str]:
    """Recall@10/50 of new (cold) and warm targets, among all items and among their own kind only."""
    lines = []
    for freshness, title in ((ev.COLD, "New items (no training interaction)"), (ev.WARM, "Warm items")):
        count = report["retrieval"].get("by_freshness", {}).get(freshness, {}).get("count", 0)
        lines.append(f"{title}, {count:,} eval events, {RECALL_10}/{RECALL_50}:")
        among_all = [
            f"{PATHS['retrieval']} {_pair(report['retrieval']['by_freshness'][freshness])}",
            f"served recommend {_pair(report['recommend'].get('by_freshness', {}).get(freshness, {}))}",
        ]
        among_all += [f"{name} {_pair(row['by_freshness'][freshness])}" for name, row in baselines["baselines"].items()]
        lines.append("  among all items (production): " + ", ".join(among_all))
        own = [f"{PATHS['retrieval']} {_pair(report['retrieval'].get('among_own_kind', {}).get(freshness, {}))}"]
        own += [f"{name} {_pair(row['among_own_kind'][freshness])}" for name, row in baselines["baselines"].items()]
        lines.append(f"  among {freshness} items only (literature protocol): " + ", ".join(own))
    return lines


def format_check(check: dict) -> str:
    verdict = "PASS" if check["passed"] else ("FAIL" if check.get("gate", True) else "WARN")
    return f"  {verdict}  {check['check']}  ({check['detail']})"


def format_privacy(found: dict) -> str:
    """One line: pseudonymous or raw user ids, and the users' k-anonymity over their attributes (summary.privacy_report)."""
    if not found:
        return ""
    ids = (
        f"user ids pseudonymised (key id {found['pseudonym_key_id']})" if found["pseudonym_key_id"] else "raw user ids (--no-pseudonymize)"
    )
    if not found["quasi_identifiers"]:
        return f"Privacy: {ids}; no user attributes"
    return (
        f"Privacy: {ids}; k-anonymity over {', '.join(found['quasi_identifiers'])}: smallest group {found['smallest_group']}, "
        f"{found['users_below_k']:,} of {found['users']:,} users in groups under {found['k']}"
    )


def format_differential_privacy(budget: dict) -> str:
    """One line: the (epsilon, delta) the two towers were trained to (towers.dp.Budget), or that they were not."""
    if not budget:
        return "Differential privacy: off (--dp-epsilon to train with it)"
    return (
        f"Differential privacy: the two towers are ({budget['epsilon']:.2f}, {budget['delta']:.0e})-DP per training example "
        f"(DP-SGD: noise {budget['noise_multiplier']:.3f} x clip {budget['clip']:g}, {budget['steps']:,} steps of "
        f"{budget['batch_size']:,} of {budget['examples']:,} events, {budget['negatives']} sampled negatives); "
        "recommend ranks by the retrieval score"
    )


def format_attribution(report: dict) -> str:
    """One line: the modality mix of recommend's top-10 items (towers.explanations), overall and for new items."""
    found = report.get("recommend", {}).get("attribution") or {}
    if not found:
        return ""

    def mix(weights) -> str:
        return ", ".join(f"{name} {share:.0%}" for share, name in sorted(zip(weights, found["modalities"]), reverse=True) if share >= 0.005)

    line = f"Why (modality mix of recommend's top-10 items): {mix(found['overall'])}"
    for value, row in found.get("by_slice", {}).get(F.ITEM_FRESHNESS, {}).items():
        line += f"; {value} items ({row['items']:,}): {mix(row['weights'])}"
    return line


def format_item_graph(graph: dict) -> str:
    """How `recommend` blends the ranker with the item graph and a new-item boost, as the Trainer chose it on
    the validation split ('' when it did not choose)."""
    if not graph.get("chosen"):
        return ""
    chosen, alone = graph["chosen"], graph["ranker_alone"]
    mix = ", ".join(f"{kind} {weight:g}" for kind, weight in chosen["mix"].items()) or "no graph"
    edges = ", ".join(f"{kind} {count:,}" for kind, count in graph["edges"].items())
    target = "met" if chosen["new_item_target_met"] else "NOT met (the setting closest to it was taken)"
    reach = lambda t: f"new/warm Recall@50 {t['new_recall_at_50']:.4f}/{t['warm_recall_at_50']:.4f}"
    return (
        f"recommend = ranker + item graph ({edges or 'none'}; weights {mix}, last {chosen['history_length']} history items) "
        f"+ new-item boost {chosen['new_item_boost']:g}, chosen on {graph['validation_events']:,} validation events: "
        f"Recall@10 {chosen['recall_at_10']:.4f}, {reach(chosen)} (ranker alone: {alone['recall_at_10']:.4f}, {reach(alone)}); "
        f"new-item target {graph['new_item_recall_ratio']:g}x warm (95% one-sided) {target}"
    )


def format_training_cost(cost: dict) -> str:
    """The Trainer's cost per model epoch and per stage ('' when it recorded none)."""
    if not cost:
        return ""

    def model(name: str, timing: dict) -> str:
        if not timing.get("epochs"):
            return f"{name} not trained"
        return (
            f"{name} {timing['epochs']} epochs of {timing['steps_per_epoch']:,} steps, {timing['mean_seconds_per_epoch']:.1f} s/epoch "
            f"({timing['ms_per_step']:.0f} ms/step; the first epoch {timing['seconds_per_epoch'][0]:.1f} s with tracing)"
        )

    stages = ", ".join(f"{name.replace('_', ' ')} {seconds:.1f} s" for name, seconds in cost.get("stage_seconds", {}).items())
    return f"Training cost: {model('two towers', cost['two_towers'])}; {model('ranker', cost['ranker'])}; Trainer stages: {stages}"


NOT_BLESSED_HINT = (
    "  A model that fails a check is not pushed; the one served (if any) stays. Tiny demo runs (--max-users) rarely pass: "
    "lower the floors with --min-auc / --min-recall (see `mmtower run --help`), or train on more users."
)


def format_run(summary: RunSummary, wall_times: dict[str, float]) -> str:
    lines = [
        "",
        "== mmtower run summary ==",
        "Eval split, per event (Recall@K = the held-out item is in the top K):",
        format_metrics_table(summary.model_metrics, summary.recommend_metrics, summary.baselines),
        "",
    ]
    lines += format_comparison(summary.retrieval_report)
    lines.append("")
    if summary.drift:
        lines.append(drift_line(summary.drift))
        if summary.drift.get("skew", {}).get("compared"):
            lines.append(skew_line(summary.drift))
    if summary.ranking_metrics:
        lines.append(
            "Ranking (TFMA, eval split): " + ", ".join(f"{name} {_fmt(value)}" for name, value in sorted(summary.ranking_metrics.items()))
        )
    if summary.content_quarantined is not None:
        embedded = ", ".join(f"{modality} {count:,}" for modality, count in summary.content_items.items())
        lines.append(
            f"Content: items embedded per modality: {embedded or 'none'}; {summary.content_quarantined} could not be encoded ({summary.content_quarantine_file})"
        )
    if line := format_item_graph(summary.item_graph):
        lines.append(line)
    if line := format_training_cost(summary.training_cost):
        lines.append(line)
    if line := format_attribution(summary.retrieval_report):
        lines.append(line)
    if line := format_privacy(summary.privacy):
        lines.append(line)
    if summary.model_uri:
        lines.append(format_differential_privacy(summary.differential_privacy))
    lines += [format_check(check) for check in summary.retrieval_report.get("checks", [])]
    lines += [f"  FAIL  ranking (TFMA): {failure}" for failure in summary.ranking_failures]
    if summary.blessed is None:
        lines.append("Evaluators: no blessing recorded")
    else:
        lines.append(f"Evaluators: model {'BLESSED' if summary.blessed else 'NOT blessed (a check above failed)'}")
    if summary.blessed is False or summary.ranking_blessed is False:
        lines.append(NOT_BLESSED_HINT)
    lines.append(f"Pushed to: {summary.pushed_to}" if summary.pushed_to else "Pushed to: nothing pushed")
    times = ", ".join(f"{name} {seconds:.0f}s" for name, seconds in wall_times.items() if name != "total")
    lines.append(f"Wall time: {wall_times.get('total', 0):.0f}s ({times})")
    return "\n".join(lines)

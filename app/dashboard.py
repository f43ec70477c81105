"""`mmtower report`: a static HTML report of a run folder, read from ML Metadata.

One self-contained file (inline SVG plots, no scripts fetched from anywhere):
the latest model's checks and blessing, retrieval and retrieve-then-rank next
to every simple baseline (per-user intervals, new vs warm items), Recall@10 per slice (item popularity, cold vs warm, content
modalities, user activity), the ranking model's TFMA metrics per slice, and
every evaluated model of this output folder over time.
"""

from __future__ import annotations

import html
import json
import os
import time
from dataclasses import dataclass

from app import summary as run_summary
from components import evaluation as ev
from components.baselines import label
from towers import contract, metrics
from towers import features as F
from towers.contract import RunPaths

COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3")
RANKING_COLUMNS = ("like/auc", "like/calibration", "like/ndcg@10", "predicted_rating/root_mean_squared_error", "like/example_count")
# After loading, the page counts what it drew (non-empty SVG plots, table rows) into <body data-*>,
# so a headless browser's DOM dump shows whether the plots and tables rendered.
SELF_CHECK = """<script>
window.addEventListener('load', () => {
  const plots = [...document.querySelectorAll('svg.plot')].filter(s => s.getBBox().width > 0 && s.querySelectorAll('rect.bar, polyline').length > 0);
  document.body.dataset.plotsRendered = plots.length;
  document.body.dataset.tableRows = document.querySelectorAll('table tr').length;
});
</script>"""


@dataclass
class EvaluatedModel:
    """One RetrievalEvaluator execution: when, which model, its report (metrics.json)."""

    when: float  # seconds since the epoch
    model_uri: str
    report: dict


def executions(paths: RunPaths, component: str) -> list[tuple[float, dict, dict]]:
    """(time, input artifacts by key, output artifacts by key) of each completed run of `component`, oldest first."""
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = paths.metadata_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    store = metadata_store.MetadataStore(config)
    context = store.get_context_by_type_and_name("node", f"{paths.pipeline_name}.{component}")
    out = []
    for execution in store.get_executions_by_context(context.id) if context else []:
        if execution.last_known_state != metadata_store_pb2.Execution.COMPLETE:
            continue
        events = store.get_events_by_execution_ids([execution.id])
        artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
        by_kind = {
            kind: {e.path.steps[0].key: artifacts[e.artifact_id] for e in events if e.type == kind}
            for kind in (metadata_store_pb2.Event.INPUT, metadata_store_pb2.Event.OUTPUT)
        }
        out.append(
            (execution.create_time_since_epoch / 1000.0, by_kind[metadata_store_pb2.Event.INPUT], by_kind[metadata_store_pb2.Event.OUTPUT])
        )
    return sorted(out, key=lambda row: row[0])


def history(paths: RunPaths) -> list[EvaluatedModel]:
    """Every model this output folder's RetrievalEvaluator scored, oldest first."""

    out = []
    for when, inputs, outputs in executions(paths, contract.RETRIEVAL_EVALUATOR):
        path = os.path.join(outputs["evaluation"].uri, contract.METRICS_FILE)
        if os.path.exists(path):
            with open(path) as f:
                out.append(EvaluatedModel(when, inputs["model"].uri, json.load(f)))
    return out


def tfma_evaluations(paths: RunPaths) -> list[str]:
    """TFMA output folders of every Evaluator run in this output folder, oldest first (tfma.load_eval_results)."""
    return [outputs["evaluation"].uri for _, _, outputs in executions(paths, contract.EVALUATOR)]


def ranking_by_slice(evaluation_uri: str | None) -> dict[tuple[str, str], dict[str, float]]:
    """(slice feature, value) -> TFMA metric name -> value for the candidate model ('', '') = overall."""
    if not evaluation_uri:
        return {}
    import tensorflow_model_analysis as tfma

    out: dict[tuple[str, str], dict[str, float]] = {}
    for per_slice in tfma.load_metrics(evaluation_uri):
        keys = per_slice.slice_key.single_slice_keys
        key = (
            (keys[0].column, (keys[0].bytes_value or str(keys[0].int64_value or keys[0].float_value).encode()).decode())
            if keys
            else ("", "")
        )
        for kv in per_slice.metric_keys_and_values:
            if kv.key.model_name in ("", "candidate") and not kv.key.is_diff and kv.value.HasField("double_value"):
                out.setdefault(key, {})[run_summary.metric_name(kv.key)] = kv.value.double_value.value
    return out


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return html.escape(str(value))


def table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def bar_chart(title: str, categories: list[str], series: dict[str, list[float]], width: int = 560, height: int = 240) -> str:
    """Grouped bars, one group per category, one colour per series (values >= 0), as inline SVG."""
    top = max([v for values in series.values() for v in values if v == v] + [1e-9])
    left, bottom, plot_h = 50, 40, height - 70
    group_w = (width - left - 10) / max(len(categories), 1)
    bar_w = group_w * 0.8 / max(len(series), 1)
    parts = [f'<text x="{left}" y="16" class="title">{html.escape(title)}</text>']
    for i, (name, values) in enumerate(series.items()):
        for j, value in enumerate(values):
            h = 0.0 if value != value else plot_h * value / top
            x = left + j * group_w + group_w * 0.1 + i * bar_w
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{height - bottom - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}" fill="{COLOURS[i % len(COLOURS)]}"><title>{html.escape(name)} {html.escape(categories[j])}: {value:.4f}</title></rect>'
            )
        parts.append(
            f'<rect x="{width - 150}" y="{24 + 14 * i}" width="10" height="10" fill="{COLOURS[i % len(COLOURS)]}"/><text x="{width - 135}" y="{33 + 14 * i}">{html.escape(name)}</text>'
        )
    for j, category in enumerate(categories):
        parts.append(
            f'<text x="{left + j * group_w + group_w / 2:.1f}" y="{height - bottom + 14}" text-anchor="middle">{html.escape(category)}</text>'
        )
    parts.append(
        f'<text x="{left - 6}" y="{height - bottom - plot_h + 4}" text-anchor="end">{top:.3f}</text><text x="{left - 6}" y="{height - bottom}" text-anchor="end">0</text>'
    )
    parts.append(f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" stroke="#888"/>')
    return f'<svg class="plot" width="{width}" height="{height}" viewBox="0 0 {width} {height}">{"".join(parts)}</svg>'


def line_chart(title: str, labels: list[str], series: dict[str, list[float]], width: int = 560, height: int = 240) -> str:
    """One polyline per series over the x labels (e.g. runs in time order), as inline SVG."""
    top = max([v for values in series.values() for v in values if v == v] + [1e-9])
    left, bottom, plot_h = 50, 40, height - 70
    step = (width - left - 160) / max(len(labels) - 1, 1)
    parts = [f'<text x="{left}" y="16" class="title">{html.escape(title)}</text>']
    for i, (name, values) in enumerate(series.items()):
        points = [(left + j * step, height - bottom - plot_h * v / top) for j, v in enumerate(values) if v == v]
        colour = COLOURS[i % len(COLOURS)]
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in points)}"/>'
        )
        parts.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>' for x, y in points)
        parts.append(
            f'<rect x="{width - 150}" y="{24 + 14 * i}" width="10" height="10" fill="{colour}"/><text x="{width - 135}" y="{33 + 14 * i}">{html.escape(name)}</text>'
        )
    for j, tick in enumerate(labels):
        parts.append(f'<text x="{left + j * step:.1f}" y="{height - bottom + 14}" text-anchor="middle">{html.escape(tick)}</text>')
    parts.append(
        f'<text x="{left - 6}" y="{height - bottom - plot_h + 4}" text-anchor="end">{top:.3f}</text><text x="{left - 6}" y="{height - bottom}" text-anchor="end">0</text>'
    )
    parts.append(f'<line x1="{left}" y1="{height - bottom}" x2="{width - 160}" y2="{height - bottom}" stroke="#888"/>')
    return f'<svg class="plot" width="{width}" height="{height}" viewBox="0 0 {width} {height}">{"".join(parts)}</svg>'


def _slice_section(report: dict, ranking: dict) -> list[str]:
    out = ["<h2>Per slice (latest model)</h2>"]
    recall = metrics.recall_name(10)
    for feature in F.EVAL_SLICE_FEATURES:
        retrieval = report["retrieval"]["by_slice"].get(feature, {})
        recommend = report["recommend"]["by_slice"].get(feature, {})
        values = sorted(retrieval)
        if not values:
            continue
        out.append(
            bar_chart(
                f"Recall@10 by {feature}",
                values,
                {
                    "retrieval": [retrieval[v].get(recall, float("nan")) for v in values],
                    "retrieve + rank": [recommend.get(v, {}).get(recall, float("nan")) for v in values],
                },
            )
        )
        rows = [
            [
                v,
                retrieval[v]["count"],
                retrieval[v].get(recall, float("nan")),
                retrieval[v].get(metrics.recall_name(100), float("nan")),
                recommend.get(v, {}).get(recall, float("nan")),
            ]
            for v in values
        ]
        out.append(table([feature, "eval events", "retrieval R@10", "retrieval R@100", "retrieve+rank R@10"], rows))
        ranked = [
            [v] + [ranking.get((feature, v), {}).get(name, float("nan")) for name in RANKING_COLUMNS]
            for v in values
            if (feature, v) in ranking
        ]
        if ranked:
            out.append("<p>Ranking model (TFMA):</p>" + table([feature, *RANKING_COLUMNS], ranked))
    return out


def _baselines_section(latest) -> list[str]:
    """The model next to every simple baseline (eval split), per-user intervals, new vs warm items."""
    names = list(metrics.METRIC_NAMES) + [ev.COVERAGE]
    baselines = latest.baselines.get("baselines", {})
    columns = {
        "two-tower retrieval": latest.model_metrics,
        "served recommend": latest.recommend_metrics,
        **{n: row["overall"] for n, row in baselines.items()},
    }
    out = ["<h2>Overall, eval split (per event)</h2>"]
    if latest.baselines:
        best = latest.baselines["best"]
        out.append(
            f"<p>Best simple baseline, chosen on the validation split ({latest.baselines['num_validation']:,} events): "
            f"<b>{html.escape(label(best, baselines[best]['params']))}</b>. Every list leaves out everything the user had seen before the event.</p>"
        )
    out.append(table(["metric", *columns], [[n, *(values.get(n, float("nan")) for values in columns.values())] for n in names]))
    out.append(
        bar_chart(
            "Overall: the model vs the simple baselines",
            list(metrics.METRIC_NAMES),
            {title: [values.get(n, float("nan")) for n in metrics.METRIC_NAMES] for title, values in columns.items()},
        )
    )
    comparison = latest.retrieval_report.get("comparison", {}).get(metrics.recall_name(10))
    if comparison:
        keys = {"served recommend": "recommend", "two-tower retrieval": "retrieval", **{n: n for n in baselines}}
        out.append(f"<h3>Recall@10 with 95% user-bootstrap intervals ({comparison['users']:,} users)</h3>")
        out.append(
            table(
                ["", "per event", "95% interval", "per user", "95% interval"],
                [
                    [
                        title,
                        comparison["per_event"][key]["mean"],
                        "{:.4f} - {:.4f}".format(*comparison["per_event"][key]["ci"]),
                        comparison["per_user"][key]["mean"],
                        "{:.4f} - {:.4f}".format(*comparison["per_user"][key]["ci"]),
                    ]
                    for title, key in keys.items()
                    if key in comparison["per_event"]
                ],
            )
        )
        out.append(
            table(
                ["ratio", "per event", "95% interval", "per user", "95% interval"],
                [
                    [
                        f"{path} / {other}",
                        r["per_event"]["ratio"],
                        "{:.2f} - {:.2f}".format(*r["per_event"]["ci"]),
                        r["per_user"]["ratio"],
                        "{:.2f} - {:.2f}".format(*r["per_user"]["ci"]),
                    ]
                    for path, others in comparison["ratios"].items()
                    for other, r in others.items()
                ],
            )
        )
    report = latest.retrieval_report
    if "by_freshness" in report.get("retrieval", {}):
        rows = []
        for freshness in (ev.COLD, ev.WARM):
            rows.append(
                [
                    f"{freshness}: among all items",
                    report["retrieval"]["by_freshness"][freshness].get("count", 0),
                    report["retrieval"]["by_freshness"][freshness].get(metrics.recall_name(50), float("nan")),
                    report["recommend"].get("by_freshness", {}).get(freshness, {}).get(metrics.recall_name(50), float("nan")),
                    *(row["by_freshness"][freshness].get(metrics.recall_name(50), float("nan")) for row in baselines.values()),
                ]
            )
            rows.append(
                [
                    f"{freshness}: among {freshness} items only",
                    report["retrieval"]["among_own_kind"][freshness].get("count", 0),
                    report["retrieval"]["among_own_kind"][freshness].get(metrics.recall_name(50), float("nan")),
                    float("nan"),
                    *(row["among_own_kind"][freshness].get(metrics.recall_name(50), float("nan")) for row in baselines.values()),
                ]
            )
        out.append("<h3>New (cold) and warm items, Recall@50</h3>")
        out.append(table(["targets", "eval events", "two-tower retrieval", "served recommend", *baselines], rows))
    return out


def render(paths: RunPaths) -> str:
    """The report's HTML for one output folder and dataset."""
    latest = run_summary.read(paths)
    runs = history(paths)
    ranking = ranking_by_slice(latest.evaluation_uri)
    body = [
        f"<h1>mmtower report: {html.escape(paths.dataset)}</h1>",
        f"<p>Output folder {html.escape(paths.output)}; generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.</p>",
    ]
    if not latest.retrieval_report:
        body.append("<p>No evaluated model yet: run <code>mmtower run</code> first.</p>")
    else:
        report = latest.retrieval_report
        status = "BLESSED and pushed" if latest.blessed and latest.pushed_to else ("BLESSED" if latest.blessed else "NOT blessed")
        body.append(f"<h2>Latest model: {status}</h2><p>{html.escape(latest.model_uri or '')}</p>")
        body.append(
            table(
                ["check", "verdict", "value"],
                [
                    [c["check"], "pass" if c["passed"] else ("FAIL" if c.get("gate", True) else "warning"), c["detail"]]
                    for c in report["checks"]
                ],
            )
        )
        body.extend(_baselines_section(latest))
        if ranking.get(("", "")):
            body.append(
                "<p>Ranking model (TFMA, overall):</p>" + table(["metric", "value"], [[n, v] for n, v in sorted(ranking[("", "")].items())])
            )
        body.extend(_slice_section(report, ranking))
    if runs:
        labels = [time.strftime("%m-%d %H:%M", time.gmtime(m.when)) for m in runs]
        body.append("<h2>Across runs (every model evaluated in this output folder)</h2>")
        body.append(
            line_chart(
                "Retrieval metrics per evaluated model",
                labels,
                {
                    name: [m.report["retrieval"]["overall"].get(name, float("nan")) for m in runs]
                    for name in (metrics.recall_name(10), metrics.recall_name(100), metrics.ndcg_name(10))
                },
            )
        )
        body.append(
            table(
                ["evaluated", "model", "R@10", "R@100", "retrieve+rank R@10", "blessed"],
                [
                    [
                        label,
                        m.model_uri,
                        m.report["retrieval"]["overall"].get(metrics.recall_name(10), float("nan")),
                        m.report["retrieval"]["overall"].get(metrics.recall_name(100), float("nan")),
                        m.report["recommend"]["overall"].get(metrics.recall_name(10), float("nan")),
                        "yes" if m.report.get("blessed") else "no",
                    ]
                    for label, m in zip(labels, runs)
                ],
            )
        )
    style = "body{font-family:sans-serif;margin:2em;max-width:1100px} table{border-collapse:collapse;margin:0.5em 0 1.5em} td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px} svg text{font-size:11px} svg .title{font-size:13px;font-weight:bold}"
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>mmtower report: {html.escape(paths.dataset)}</title><style>{style}</style></head><body>{''.join(body)}{SELF_CHECK}</body></html>"


def main(output: str, dataset: str, html_path: str | None) -> int:
    paths = RunPaths(os.path.abspath(output), dataset)
    if not os.path.exists(paths.metadata_path):
        print(f"no run in {paths.output}: run `mmtower run --dataset {dataset} --output {output}` first")
        return 1
    target = html_path or os.path.join(paths.output, f"report-{dataset}.html")
    with open(target, "w") as f:
        f.write(render(paths))
    print(f"report written to {target}")
    return 0

"""`mmtower report`: a static HTML report of a run folder, read from ML Metadata.

One self-contained file (inline SVG plots, no scripts fetched from anywhere),
rendered by Jinja2 (autoescaped) from app/templates/dashboard.html:
the latest model's checks and blessing, retrieval and retrieve-then-rank next
to every simple baseline (per-user intervals, new vs warm items), Recall@10 per slice (item popularity, cold vs warm, content
modalities, user activity), the ranking model's TFMA metrics per slice, and
every evaluated model of this output folder over time. The charts' geometry
is computed here (Chart); the templates only write it out as SVG.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from dataclasses import dataclass, field

import jinja2

from app import summary as run_summary
from components import evaluation as ev
from components.baselines import label
from towers import contract, metrics
from towers import features as F
from towers.contract import RunPaths

COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3")
RANKING_COLUMNS = ("like/auc", "like/calibration", "like/ndcg@10", "predicted_rating/root_mean_squared_error", "like/example_count")
MISSING = "\u2013"  # a table cell without a value (absent or NaN): an en dash, never "nan"
MISSING_TIP = "n/a"  # the same in a chart's tooltip
# Chart layout, in pixels: margins of the plot area (y-axis labels left, title above, x labels below),
# and the legend column right of the plot area, sized by its longest name.
LEFT, TOP, BOTTOM, GAP = 50, 30, 40, 20
LEGEND_ROW, LEGEND_BOX, CHAR_WIDTH = 14, 10, 6.5  # CHAR_WIDTH: a generous average at 11px sans-serif
MIN_PLOT_WIDTH = 200


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


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def cell(value) -> str:
    """A table cell: floats to 4 decimals, MISSING for an absent or NaN value."""
    if _missing(value):
        return MISSING
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def interval(bounds, digits: int = 4) -> str:
    """'low - high', or MISSING when either bound is absent or NaN."""
    low, high = bounds if bounds else (None, None)
    return MISSING if _missing(low) or _missing(high) else f"{low:.{digits}f} - {high:.{digits}f}"


def _tip(value) -> str:
    return MISSING_TIP if _missing(value) else f"{value:.4f}"


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]  # formatted cells (cell()); the template escapes them


def table(header: list[str], rows: list[list]) -> Table:
    return Table(list(header), [[cell(v) for v in row] for row in rows])


@dataclass
class Box:
    left: float
    top: float
    right: float
    bottom: float


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    colour: str
    tip: str


@dataclass
class Line:
    colour: str
    points: list[tuple[float, float]]

    @property
    def svg_points(self) -> str:
        return " ".join(f"{x:.1f},{y:.1f}" for x, y in self.points)


@dataclass
class Point:
    """A marker; `value` is written next to it when it stands alone (no line through it)."""

    x: float
    y: float
    colour: str
    tip: str
    radius: float = 3.0
    value: str = ""
    label_x: float = 0.0
    label_y: float = 0.0
    anchor: str = "start"


@dataclass
class LegendEntry:
    x: float  # the colour box's top-left corner
    y: float
    colour: str
    name: str


@dataclass
class Tick:
    x: float
    text: str


@dataclass
class Chart:
    """An SVG chart's geometry: the plot area, and the legend in a column right of it, never over the data."""

    title: str
    width: float
    height: float
    plot: Box
    top_value: float  # the value at plot.top (0 is at plot.bottom)
    bars: list[Bar] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    legend: list[LegendEntry] = field(default_factory=list)
    ticks: list[Tick] = field(default_factory=list)

    def y(self, value: float) -> float:
        return self.plot.bottom - (self.plot.bottom - self.plot.top) * value / self.top_value


def _layout(title: str, series: dict[str, list[float]], width: int, height: int) -> Chart:
    """The plot area and the legend column for `series`, growing the chart when the legend needs the room."""
    names = list(series)
    legend_width = LEGEND_BOX + 5 + CHAR_WIDTH * max((len(name) for name in names), default=0)
    width = max(width, LEFT + MIN_PLOT_WIDTH + GAP + legend_width)
    height = max(height, TOP + LEGEND_ROW * len(names) + BOTTOM)
    plot = Box(LEFT, TOP, width - legend_width - GAP, height - BOTTOM)
    top = max([v for values in series.values() for v in values if not _missing(v)] + [1e-9])
    legend = [LegendEntry(plot.right + GAP, TOP + LEGEND_ROW * i, COLOURS[i % len(COLOURS)], name) for i, name in enumerate(names)]
    return Chart(title, width, height, plot, top, legend=legend)


def bar_chart(title: str, categories: list[str], series: dict[str, list[float]], width: int = 560, height: int = 240) -> Chart:
    """Grouped bars, one group per category, one colour per series (values >= 0; a missing value draws no bar)."""
    chart = _layout(title, series, width, height)
    plot = chart.plot
    group_w = (plot.right - plot.left) / max(len(categories), 1)
    bar_w = group_w * 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        for j, value in enumerate(values):
            y = plot.bottom if _missing(value) else chart.y(value)
            x = plot.left + j * group_w + group_w * 0.1 + i * bar_w
            chart.bars.append(Bar(x, y, bar_w, plot.bottom - y, COLOURS[i % len(COLOURS)], f"{name} {categories[j]}: {_tip(value)}"))
    chart.ticks = [Tick(plot.left + j * group_w + group_w / 2, category) for j, category in enumerate(categories)]
    return chart


def _stretches(values: list[float]) -> list[list[int]]:
    """Indices of the runs of consecutive present (not missing, not NaN) values."""
    out: list[list[int]] = []
    for j, value in enumerate(values):
        if _missing(value):
            continue
        if out and out[-1][-1] == j - 1:
            out[-1].append(j)
        else:
            out.append([j])
    return out


def line_chart(title: str, labels: list[str], series: dict[str, list[float]], width: int = 560, height: int = 240) -> Chart:
    """One line per series over the x labels (e.g. runs in time order); a value with no neighbour to join
    (a single run, or one between missing values) is a larger marker with its value written next to it."""
    chart = _layout(title, series, width, height)
    plot = chart.plot
    if len(labels) == 1:
        xs = [(plot.left + plot.right) / 2]
    else:
        xs = [plot.left + j * (plot.right - plot.left) / (len(labels) - 1) for j in range(len(labels))]
    for i, (name, values) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        for stretch in _stretches(values):
            points = [(xs[j], chart.y(values[j])) for j in stretch]
            if len(points) > 1:
                chart.lines.append(Line(colour, points))
            for j, (x, y) in zip(stretch, points):
                point = Point(x, y, colour, f"{name} {labels[j]}: {_tip(values[j])}")
                if len(points) == 1:
                    right_half = x > (plot.left + plot.right) / 2 + 1
                    point.radius, point.value = 4.5, f"{values[j]:.4f}"
                    point.label_x, point.label_y, point.anchor = (x - 8, y + 4, "end") if right_half else (x + 8, y + 4, "start")
                chart.points.append(point)
    _spread_labels([p for p in chart.points if p.value])
    chart.ticks = [Tick(x, text) for x, text in zip(xs, labels)]
    return chart


def _spread_labels(points: list[Point], spacing: float = 12.0) -> None:
    """Push apart the value labels of markers at the same x, so that close values stay readable."""
    points = sorted(points, key=lambda p: (round(p.x), p.label_y))
    for before, after in zip(points, points[1:]):
        if round(before.x) == round(after.x) and after.label_y < before.label_y + spacing:
            after.label_y = before.label_y + spacing


@functools.cache
def _templates() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("app", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["px"] = lambda value: f"{value:.1f}"
    environment.filters["thousands"] = lambda value: f"{value:,}"
    return environment


@dataclass
class Slice:
    feature: str
    chart: Chart
    table: Table
    ranking: Table | None  # the ranking model's TFMA metrics per value, when TFMA sliced by this feature


def _slices(report: dict, ranking: dict) -> list[Slice]:
    out = []
    recall = metrics.recall_name(10)
    for feature in F.EVAL_SLICE_FEATURES:
        retrieval = report["retrieval"]["by_slice"].get(feature, {})
        recommend = report["recommend"]["by_slice"].get(feature, {})
        values = sorted(retrieval)
        if not values:
            continue
        chart = bar_chart(
            f"Recall@10 by {feature}",
            values,
            {
                "retrieval": [retrieval[v].get(recall) for v in values],
                "retrieve + rank": [recommend.get(v, {}).get(recall) for v in values],
            },
        )
        rows = [
            [
                v,
                retrieval[v].get("count"),
                retrieval[v].get(recall),
                retrieval[v].get(metrics.recall_name(100)),
                recommend.get(v, {}).get(recall),
            ]
            for v in values
        ]
        ranked = [[v] + [ranking[(feature, v)].get(name) for name in RANKING_COLUMNS] for v in values if (feature, v) in ranking]
        out.append(
            Slice(
                feature,
                chart,
                table([feature, "eval events", "retrieval R@10", "retrieval R@100", "retrieve+rank R@10"], rows),
                table([feature, *RANKING_COLUMNS], ranked) if ranked else None,
            )
        )
    return out


def _baselines(latest: run_summary.RunSummary) -> dict:
    """The model next to every simple baseline (eval split), per-user intervals, new vs warm items."""
    names = list(metrics.METRIC_NAMES) + list(ev.LIST_METRICS)
    baselines = latest.baselines.get("baselines", {})
    columns = {
        "two-tower retrieval": latest.model_metrics,
        "served recommend": latest.recommend_metrics,
        **{n: row["overall"] for n, row in baselines.items()},
    }
    out = {
        "best": None,
        "overall": table(["metric", *columns], [[n, *(values.get(n) for values in columns.values())] for n in names]),
        "overall_chart": bar_chart(
            "Overall: the model vs the simple baselines",
            list(metrics.METRIC_NAMES),
            {title: [values.get(n) for n in metrics.METRIC_NAMES] for title, values in columns.items()},
        ),
        "comparison": None,
        "freshness": None,
    }
    if latest.baselines:
        best = latest.baselines["best"]
        out["best"] = {"label": label(best, baselines[best]["params"]), "validation_events": latest.baselines["num_validation"]}
    comparison = latest.retrieval_report.get("comparison", {}).get(metrics.recall_name(10))
    if comparison:
        keys = {"served recommend": "recommend", "two-tower retrieval": "retrieval", **{n: n for n in baselines}}
        per_event, per_user = comparison["per_event"], comparison["per_user"]
        out["comparison"] = {
            "users": comparison["users"],
            "means": table(
                ["", "per event", "95% interval", "per user", "95% interval"],
                [
                    [
                        title,
                        per_event[key].get("mean"),
                        interval(per_event[key].get("ci")),
                        per_user.get(key, {}).get("mean"),
                        interval(per_user.get(key, {}).get("ci")),
                    ]
                    for title, key in keys.items()
                    if key in per_event
                ],
            ),
            "ratios": table(
                ["ratio", "per event", "95% interval", "per user", "95% interval"],
                [
                    [
                        f"{path} / {other}",
                        _round(r["per_event"].get("ratio"), 2),
                        interval(r["per_event"].get("ci"), 2),
                        _round(r["per_user"].get("ratio"), 2),
                        interval(r["per_user"].get("ci"), 2),
                    ]
                    for path, others in comparison["ratios"].items()
                    for other, r in others.items()
                ],
            ),
        }
    report = latest.retrieval_report
    if "by_freshness" in report.get("retrieval", {}):
        recall = metrics.recall_name(50)
        rows = []
        for freshness in (ev.COLD, ev.WARM):
            everyone = report["retrieval"]["by_freshness"].get(freshness, {})
            own = report["retrieval"].get("among_own_kind", {}).get(freshness, {})
            rows.append(
                [
                    f"{freshness}: among all items",
                    everyone.get("count", 0),
                    everyone.get(recall),
                    report["recommend"].get("by_freshness", {}).get(freshness, {}).get(recall),
                    *(row.get("by_freshness", {}).get(freshness, {}).get(recall) for row in baselines.values()),
                ]
            )
            rows.append(
                [
                    f"{freshness}: among {freshness} items only",
                    own.get("count", 0),
                    own.get(recall),
                    None,  # the served recommend always ranks among all items
                    *(row.get("among_own_kind", {}).get(freshness, {}).get(recall) for row in baselines.values()),
                ]
            )
        out["freshness"] = table(["targets", "eval events", "two-tower retrieval", "served recommend", *baselines], rows)
    return out


def _attribution(report: dict) -> dict | None:
    """The modality mix of recommend's top-10 items per item slice (the RetrievalEvaluator's `attribution`), as a table
    and a bar chart (one bar group per slice value, one bar per modality); None when the model has none."""
    found = report.get("recommend", {}).get("attribution") or {}
    if not found:
        return None
    rows = [["all", "", sum(r["items"] for r in found["by_slice"].get(F.ITEM_FRESHNESS, {}).values()), *found["overall"]]]
    for name in (F.ITEM_FRESHNESS, F.ITEM_POPULARITY, F.ITEM_MODALITIES):
        rows += [[name, value, row["items"], *row["weights"]] for value, row in found["by_slice"].get(name, {}).items()]
    modalities = found["modalities"]
    labels = [f"{row[0]}={row[1]}" if row[1] else "all" for row in rows]
    return {
        "table": table(["slice", "value", "listed items", *modalities], rows),
        "chart": bar_chart("Modality mix per item slice", labels, {m: [row[3 + k] for row in rows] for k, m in enumerate(modalities)}),
    }


def _round(value, digits: int) -> str:
    return MISSING if _missing(value) else f"{value:.{digits}f}"


def _status(latest: run_summary.RunSummary) -> str:
    if latest.blessed:
        return "BLESSED and pushed" if latest.pushed_to else "BLESSED"
    return "NOT blessed"


def render_page(
    paths: RunPaths,
    latest: run_summary.RunSummary,
    runs: list[EvaluatedModel],
    ranking: dict[tuple[str, str], dict[str, float]],
    generated: float | None = None,
) -> str:
    """The report's HTML from what was read (run_summary.read, history, ranking_by_slice); no I/O."""
    context: dict = {
        "dataset": paths.dataset,
        "output": paths.output,
        "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(generated)),
        "latest": None,
        "runs": None,
    }
    report = latest.retrieval_report
    if report:
        context["latest"] = {
            "status": _status(latest),
            "model_uri": latest.model_uri or "",
            "checks": table(
                ["check", "verdict", "value"],
                [
                    [c["check"], "pass" if c["passed"] else ("FAIL" if c.get("gate", True) else "warning"), c["detail"]]
                    for c in report["checks"]
                ],
            ),
            **_baselines(latest),
            "ranking": table(["metric", "value"], [[n, v] for n, v in sorted(ranking[("", "")].items())])
            if ranking.get(("", ""))
            else None,
            "slices": _slices(report, ranking),
            "attribution": _attribution(report),
        }
    if runs:
        labels = [time.strftime("%m-%d %H:%M", time.gmtime(m.when)) for m in runs]
        context["runs"] = {
            "chart": line_chart(
                "Retrieval metrics per evaluated model",
                labels,
                {
                    name: [m.report["retrieval"]["overall"].get(name) for m in runs]
                    for name in (metrics.recall_name(10), metrics.recall_name(100), metrics.ndcg_name(10))
                },
            ),
            "table": table(
                ["evaluated", "model", "R@10", "R@100", "retrieve+rank R@10", "blessed"],
                [
                    [
                        when,
                        m.model_uri,
                        m.report["retrieval"]["overall"].get(metrics.recall_name(10)),
                        m.report["retrieval"]["overall"].get(metrics.recall_name(100)),
                        m.report.get("recommend", {}).get("overall", {}).get(metrics.recall_name(10)),
                        "yes" if m.report.get("blessed") else "no",
                    ]
                    for when, m in zip(labels, runs)
                ],
            ),
        }
    return _templates().get_template("dashboard.html").render(context)


def render(paths: RunPaths) -> str:
    """The report's HTML for one output folder and dataset."""
    latest = run_summary.read(paths)
    return render_page(paths, latest, history(paths), ranking_by_slice(latest.evaluation_uri))


def main(output: str, dataset: str, html_path: str | None) -> int:
    paths = RunPaths(os.path.abspath(output), dataset)
    if not os.path.exists(paths.metadata_path):
        print(f"no run in {paths.output}: run `mmtower run --dataset {dataset} --output {output}` first")
        return 1
    target = html_path or os.path.join(paths.output, f"report-{dataset}.html")
    with open(target, "w", encoding="utf-8") as f:  # the page says <meta charset="utf-8">
        f.write(render(paths))
    print(f"report written to {target}")
    return 0

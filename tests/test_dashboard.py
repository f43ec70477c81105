"""`mmtower report`'s HTML page, rendered from a small hand-built run: no 'nan', legends beside the bars, lone points drawn."""

import math
import re
from html.parser import HTMLParser

import pytest

from app import dashboard, summary
from components import evaluation as ev
from towers import features as F
from towers import metrics
from towers.contract import RunPaths

pytestmark = pytest.mark.unit

NAN = float("nan")
R10, R50, R100, NDCG = metrics.recall_name(10), metrics.recall_name(50), metrics.recall_name(100), metrics.ndcg_name(10)


class Svgs(HTMLParser):
    """Every <svg> of a page as a list of (tag, attributes, text), and every table cell's text."""

    def __init__(self, page: str):
        super().__init__()
        self.svgs: list[list[list]] = []
        self.cells: list[str] = []
        self._in_svg = self._in_cell = False
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        if tag == "svg":
            self._in_svg = True
            self.svgs.append([])
        if self._in_svg:
            self.svgs[-1].append([tag, dict(attrs), ""])
        if tag == "td":
            self._in_cell = True
            self.cells.append("")

    def handle_endtag(self, tag):
        self._in_svg = self._in_svg and tag != "svg"
        self._in_cell = self._in_cell and tag != "td"

    def handle_data(self, data):
        if self._in_svg and self.svgs[-1]:
            self.svgs[-1][-1][2] += data.strip()  # (the newline after an element lands here too)
        if self._in_cell:
            self.cells[-1] += data


def _fake_run() -> tuple[summary.RunSummary, dict]:
    """A latest model with holes: NaN and absent metrics, a NaN interval, a slice value the ranker never saw."""
    model = {R10: 0.21, R50: 0.43, R100: 0.55, NDCG: NAN, ev.COVERAGE: 0.3}
    recommend = {R10: 0.25, R50: 0.47}  # R@100, nDCG, coverage absent
    popular = {R10: 0.12, R50: 0.31, R100: NAN, NDCG: 0.06, ev.COVERAGE: 0.01}
    baseline_freshness = {ev.COLD: {"count": 4, R50: 0.0}, ev.WARM: {"count": 16, R50: NAN}}
    baselines = {
        "best": "most_popular",
        "num_validation": 12345,
        "baselines": {
            "most_popular": {
                "params": {},
                "overall": popular,
                "by_freshness": baseline_freshness,
                "among_own_kind": baseline_freshness,
            }
        },
    }
    slices = {
        F.ITEM_POPULARITY: {"head": {"count": 10, R10: 0.4, R100: 0.9}, "tail": {"count": 3, R10: NAN}},
        F.ITEM_FRESHNESS: {ev.WARM: {"count": 16, R10: 0.3, R100: 0.6}},
    }
    interval = {"mean": 0.2, "ci": [0.1, 0.3]}
    report = {
        "checks": [
            {"check": "Recall@10 >= 0.05", "passed": True, "detail": "0.2100"},
            {"check": "beats the best simple baseline", "passed": False, "gate": False, "detail": "ratio 0.90x"},
        ],
        "retrieval": {
            "overall": model,
            "by_slice": slices,
            "by_freshness": {ev.COLD: {"count": 4, R50: NAN}, ev.WARM: {"count": 16, R50: 0.5}},
            "among_own_kind": {ev.COLD: {"count": 4, R50: 0.25}, ev.WARM: {"count": 16, R50: 0.5}},
        },
        "recommend": {
            "overall": recommend,
            "by_slice": {F.ITEM_POPULARITY: {"head": {R10: 0.45}}},
            "attribution": {
                "modalities": ["id", "metadata", "image"],
                "overall": [0.5, 0.3, 0.2],
                "by_slice": {
                    F.ITEM_FRESHNESS: {"cold": {"items": 3, "weights": [0.0, 0.4, 0.6]}, "warm": {"items": 7, "weights": [0.6, 0.3, 0.1]}}
                },
            },
        },
        "comparison": {
            R10: {
                "users": 1500,
                "per_event": {"retrieval": interval, "recommend": {"mean": NAN, "ci": [NAN, NAN]}, "most_popular": interval},
                "per_user": {"retrieval": interval, "recommend": interval, "most_popular": interval},
                "ratios": {
                    "retrieval": {
                        "most_popular": {"per_event": {"ratio": NAN, "ci": [NAN, 2.0]}, "per_user": {"ratio": 1.5, "ci": [1.1, 1.9]}}
                    }
                },
            }
        },
    }
    latest = summary.RunSummary(
        model_metrics=model,
        recommend_metrics=recommend,
        baselines=baselines,
        retrieval_report=report,
        blessed=True,
        pushed_to="/serving/1",
        model_uri="/models/<1>",
    )
    ranking = {("", ""): {"like/auc": 0.7, "like/calibration": NAN}, (F.ITEM_POPULARITY, "head"): {"like/auc": 0.8}}
    return latest, ranking


def _runs(*recalls: float) -> list[dashboard.EvaluatedModel]:
    return [
        dashboard.EvaluatedModel(
            1_800_000_000 + 3600 * i,
            f"/models/{i}",
            {"retrieval": {"overall": {R10: r, R100: 0.5, NDCG: 0.1}}, "recommend": {"overall": {}}, "blessed": i == 0},
        )
        for i, r in enumerate(recalls)
    ]


def _page(runs=()) -> str:
    latest, ranking = _fake_run()
    return dashboard.render_page(RunPaths("/out/<a&b>", "tuxpaint"), latest, list(runs), ranking, generated=0)


def test_the_page_never_shows_nan_and_marks_missing_values():
    page = _page(_runs(0.2, NAN, 0.3))
    visible = re.sub(r"<[^>]+>", " ", page)  # text and tooltips, without the markup
    assert not re.search(r"\bnan\b", visible, re.IGNORECASE), [line for line in visible.splitlines() if "nan" in line.lower()]
    cells = Svgs(page).cells
    assert dashboard.MISSING in cells  # e.g. the model's nDCG, the served recommend's R@100
    assert "0.1000 - 0.3000" in cells and "1.50" in cells  # present values keep their digits
    assert "n/a" in page  # in the tooltip of the bar that has no value


def test_the_page_escapes_what_it_shows_and_keeps_its_sections():
    page = _page(_runs(0.2))
    assert "/out/&lt;a&amp;b&gt;" in page and "/models/&lt;1&gt;" in page and "<a&b>" not in page
    for heading in (
        "Latest model: BLESSED and pushed",
        "Overall, eval split",
        "1,500 users",
        "12,345 events",
        "Why: the modality mix",
        "item_freshness=cold",
        "Per slice",
        "Across runs",
    ):
        assert heading in page, heading
    assert "document.body.dataset.plotsRendered" in page and "document.body.dataset.tableRows" in page
    svgs = Svgs(page).svgs
    # overall bars, the modality mix, one bar chart per slice feature with values, the across-runs line chart
    assert len(svgs) == 2 + 3
    assert all(svg[0][0] == "svg" and svg[0][1]["class"] == "plot" for svg in svgs)


@pytest.mark.parametrize(
    "legend_names", [["retrieval", "retrieve + rank"], ["two-tower retrieval", "served recommend", "a baseline", "b", "c", "d", "e"]]
)
def test_legend_boxes_lie_beside_the_bars_never_over_them(legend_names):
    categories = ["head", "torso", "tail"]
    chart = dashboard.bar_chart("t", categories, {name: [1.0, 0.5, NAN] for name in legend_names})
    page = dashboard._templates().from_string('{% from "charts.html" import chart %}{{ chart(c) }}').render(c=chart)
    (svg,) = Svgs(page).svgs
    width, height = float(svg[0][1]["width"]), float(svg[0][1]["height"])
    bars = [attrs for tag, attrs, _ in svg if tag == "rect" and attrs.get("class") == "bar"]
    legend = [attrs for tag, attrs, _ in svg if tag == "rect" and attrs.get("class") == "legend"]
    assert len(bars) == len(categories) * len(legend_names) and len(legend) == len(legend_names)
    bars_right = max(float(b["x"]) + float(b["width"]) for b in bars)
    axis = next(attrs for tag, attrs, _ in svg if tag == "line")
    for box in legend:
        assert float(box["x"]) > max(bars_right, float(axis["x2"]))  # right of every bar and of the plot area
        assert float(box["x"]) + 10 <= width and float(box["y"]) + 10 <= height  # inside the picture
    names = [text for tag, attrs, text in svg if tag == "text" and attrs.get("class") == "legend"]
    assert names == legend_names
    tallest = min(float(b["y"]) for b in bars)
    assert tallest == pytest.approx(chart.plot.top) and float(axis["y1"]) == pytest.approx(chart.plot.bottom)


def test_a_single_run_is_a_visible_marker_with_its_value():
    chart = dashboard.line_chart("t", ["06-01 10:00"], {R10: [0.21], R100: [0.5], NDCG: [NAN]})
    assert chart.lines == []  # no degenerate one-point line
    assert [p.value for p in chart.points] == ["0.2100", "0.5000"]  # the NaN series draws nothing
    assert all(p.radius > 3 and chart.plot.left < p.x < chart.plot.right for p in chart.points)
    assert chart.points[1].y == pytest.approx(chart.plot.top)  # the largest value is at the top of the axis
    page = _page(_runs(0.21))
    line_svg = Svgs(page).svgs[-1]
    assert not [1 for tag, *_ in line_svg if tag == "polyline"]
    circles = [attrs for tag, attrs, _ in line_svg if tag == "circle"]
    assert len(circles) == 3 and all(attrs["class"] == "point" and float(attrs["r"]) > 3 for attrs in circles)
    values = [text for tag, attrs, text in line_svg if tag == "text" and attrs.get("class") == "value"]
    assert values == ["0.2100", "0.5000", "0.1000"]


def test_value_labels_of_close_lone_points_do_not_overlap():
    chart = dashboard.line_chart("t", ["a"], {"x": [0.100], "y": [0.101], "z": [0.099]})
    ys = sorted(p.label_y for p in chart.points)
    assert all(after - before >= 12 for before, after in zip(ys, ys[1:]))


def test_a_line_breaks_at_a_missing_run_and_its_lone_neighbour_is_a_marker():
    chart = dashboard.line_chart("t", ["a", "b", "c", "d"], {"r": [0.1, 0.2, NAN, 0.3]})
    assert [len(line.points) for line in chart.lines] == [2]
    assert [p.value for p in chart.points] == ["", "", "0.3000"]
    assert not any(math.isnan(coordinate) for p in chart.points for coordinate in (p.x, p.y))

"""The HTML report: per device a table and an accuracy-vs-latency plot, drawn here as inline SVG.

Points are the device's rows (artifacts and the float original) at one batch size; the Pareto frontier
(nothing else is both faster and at least as accurate) is drawn as a dashed staircase and its points are
filled in the accent colour. Accuracy is top-1 when the data had labels, else agreement with the float
original's top-1. No script, no web font, nothing fetched: the page renders offline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

from deploykit.profile.report import (cell_text, device_line, environment_line, flat_rows, human_columns,
                                      inputs_line)
from deploykit.profile.report_template import CSS, PAGE, SECTION
from deploykit.profile.results import FLOAT_ORIGINAL, ProfileReport, ProfileRow

WIDTH, HEIGHT = 820, 440
LEFT, RIGHT, TOP, BOTTOM = 72, 190, 20, 56  # the right margin leaves room for point labels
TEXT_COLUMNS = {"name", "runtime", "precision_used"}


@dataclass(frozen=True)
class Point:
    name: str
    latency_ms: float
    accuracy: float  # a fraction
    frontier: bool = False


def render_html(report: ProfileReport) -> str:
    meta = f'<p class="meta">{escape(environment_line(report))}</p>\n' \
           f'<p class="meta">{escape(inputs_line(report))}</p>'
    sections = "\n".join(_section(report, device) for device in report.device_names())
    return PAGE.substitute(title="deploykit profile", css=CSS, meta=meta, sections=sections)


def _section(report: ProfileReport, device: str) -> str:
    rows = [row for row in report.rows if row.device == device]
    batch = _plot_batch(rows)
    metric = "top1" if any(r.quality and r.quality.top1 is not None for r in rows) else "agreement"
    points, skipped = plot_points(rows, batch, metric)
    columns = human_columns()
    header = "".join(f'<th class="{_align(c.key)}">{escape(c.title)}</th>' for c in columns)
    front = {p.name for p in points if p.frontier}
    body = "\n".join(_table_row(row, lat, columns, row.name in front and lat.batch == batch)
                     for row, lat in flat_rows(report, device))
    notes = [f"{row.name}: {note}" for row in rows for note in row.notes]
    notes += [f"not plotted: {name} ({why})" for name, why in skipped]
    notes_html = ('<ul class="notes">' + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>") if notes else ""
    what = "top-1 accuracy" if metric == "top1" else "top-1 agreement with the float original"
    members = ", ".join(p.name for p in sorted((p for p in points if p.frontier), key=lambda p: p.latency_ms))
    caption = (f"{what} against median latency at batch {batch} on {device}; the dashed line and filled points "
               f"are the Pareto frontier (nothing else is both faster and at least as accurate), marked ★ in "
               f"the table: {members or 'none'}.")
    return SECTION.substitute(anchor=escape(device), device=escape(device),
                              description=escape(device_line(report, device)),
                              plot=svg_plot(points, batch=batch, metric=metric, title=device),
                              caption=escape(caption), header=header, rows=body, notes=notes_html)


def _align(key: str) -> str:
    return "text" if key in TEXT_COLUMNS else "num"


def _table_row(row: ProfileRow, lat, columns, on_front: bool = False) -> str:
    cells = []
    for column in columns:
        text = cell_text(column, row, lat)
        text = f"★ {text}" if on_front and column.key == "name" else text
        classes = _align(column.key) + (" na" if text.startswith("n/a") else "")
        cells.append(f'<td class="{classes}">{escape(text)}</td>')
    kind = escape(row.role) + (" frontier" if on_front else "")
    return f'<tr class="{kind}">{"".join(cells)}</tr>'


def _plot_batch(rows: list[ProfileRow]) -> int:
    """Batch 1 when measured, else the smallest batch any row ran."""
    measured = sorted({lat.batch for row in rows for lat in row.latency if lat.p50_ms is not None})
    return 1 if 1 in measured or not measured else measured[0]


def plot_points(rows: list[ProfileRow], batch: int, metric: str) -> tuple[list[Point], list[tuple[str, str]]]:
    """The plottable rows with the frontier marked, and (name, why) for those left out."""
    points, skipped = [], []
    for row in rows:
        lat = row.latency_at(batch)
        accuracy = _accuracy(row, metric)
        if lat is None or lat.p50_ms is None:
            skipped.append((row.name, lat.note if lat and lat.note else f"no latency at batch {batch}"))
        elif accuracy is None:
            skipped.append((row.name, f"no {metric}"))
        else:
            points.append(Point(row.name, lat.p50_ms, accuracy))
    return pareto(points), skipped


def _accuracy(row: ProfileRow, metric: str) -> float | None:
    if metric == "agreement" and row.role == FLOAT_ORIGINAL:
        return 1.0  # the reference agrees with itself
    return None if row.quality is None else getattr(row.quality, metric)


def pareto(points: list[Point]) -> list[Point]:
    """`points` with `frontier` set on those no other point beats (faster or as fast, and at least as accurate,
    strictly better in one)."""
    def dominated(p: Point) -> bool:
        return any(q.latency_ms <= p.latency_ms and q.accuracy >= p.accuracy and
                   (q.latency_ms < p.latency_ms or q.accuracy > p.accuracy) for q in points)
    return [Point(p.name, p.latency_ms, p.accuracy, not dominated(p)) for p in points]


# --- SVG ------------------------------------------------------------------------------------------

def svg_plot(points: list[Point], *, batch: int, metric: str, title: str) -> str:
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    x_ticks = nice_ticks(0.0, max([p.latency_ms for p in points], default=1.0) * 1.05)
    y_lo, y_hi = _accuracy_range([100 * p.accuracy for p in points])
    y_ticks = nice_ticks(y_lo, y_hi)

    def sx(ms: float) -> float:
        return LEFT + plot_w * (ms - x_ticks[0]) / (x_ticks[-1] - x_ticks[0])

    def sy(pct: float) -> float:
        return TOP + plot_h * (1 - (pct - y_ticks[0]) / (y_ticks[-1] - y_ticks[0]))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}: accuracy vs latency">']
    parts += _axes(x_ticks, y_ticks, sx, sy, plot_w, plot_h, batch, metric)
    frontier = sorted((p for p in points if p.frontier), key=lambda p: p.latency_ms)
    parts.append(_staircase(frontier, sx, sy))
    ordered = sorted(points, key=lambda p: (not p.frontier, p.latency_ms))
    centres = [(sx(p.latency_ms), sy(100 * p.accuracy)) for p in ordered]
    legend_x, legend_y = LEFT + plot_w + 16, TOP + 8
    placed = [(cx - 7, cy + 7, 14.0, 14.0) for cx, cy in centres]  # labels keep off every point
    placed.append((legend_x, legend_y + 22, 120.0, 36.0))  # and off the legend
    for p, (cx, cy) in zip(ordered, centres):
        kind = "point frontier" if p.frontier else "point"
        tip = f"{p.name}: {p.latency_ms:.3g} ms, {100 * p.accuracy:.2f} %"
        parts.append(f'<circle class="{kind}" cx="{cx:.1f}" cy="{cy:.1f}" r="6"><title>{escape(tip)}</title></circle>')
    parts += [_label(p.name, cx, cy, placed) for p, (cx, cy) in zip(ordered, centres)]
    parts += _legend(legend_x, legend_y)
    parts.append("</svg>")
    return "\n".join(parts)


def _legend(x: float, y: float) -> list[str]:
    return [f'<rect class="legend-swatch frontier" x="{x}" y="{y - 9}" width="10" height="10" fill="#c2410c"/>',
            f'<text class="legend" x="{x + 16}" y="{y}">Pareto frontier</text>',
            f'<rect class="legend-swatch" x="{x}" y="{y + 9}" width="10" height="10" fill="#7b8494"/>',
            f'<text class="legend" x="{x + 16}" y="{y + 18}">dominated</text>']


def _axes(x_ticks, y_ticks, sx, sy, plot_w: float, plot_h: float, batch: int, metric: str) -> list[str]:
    bottom, right = TOP + plot_h, LEFT + plot_w
    out = []
    for t in x_ticks:
        out.append(f'<line class="grid" x1="{sx(t):.1f}" y1="{TOP}" x2="{sx(t):.1f}" y2="{bottom}"/>')
        out.append(f'<text class="tick-label" x="{sx(t):.1f}" y="{bottom + 16}" text-anchor="middle">{_tick(t)}</text>')
    for t in y_ticks:
        out.append(f'<line class="grid" x1="{LEFT}" y1="{sy(t):.1f}" x2="{right}" y2="{sy(t):.1f}"/>')
        out.append(f'<text class="tick-label" x="{LEFT - 8}" y="{sy(t) + 4:.1f}" text-anchor="end">{_tick(t)}</text>')
    out.append(f'<line class="axis" x1="{LEFT}" y1="{bottom}" x2="{right}" y2="{bottom}"/>')
    out.append(f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}"/>')
    x_title = f"median latency at batch {batch} (ms) — lower is better"
    y_title = ("top-1 accuracy (%)" if metric == "top1" else "top-1 agreement with float (%)") + " — higher is better"
    out.append(f'<text class="axis-title" x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 12}" '
               f'text-anchor="middle">{escape(x_title)}</text>')
    out.append(f'<text class="axis-title" transform="translate(16 {TOP + plot_h / 2:.1f}) rotate(-90)" '
               f'text-anchor="middle">{escape(y_title)}</text>')
    return out


def _staircase(frontier: list[Point], sx, sy) -> str:
    """The frontier as steps: from each point, right to the next one's latency, then up or down to it."""
    if len(frontier) < 2:
        return ""
    coords = [(sx(frontier[0].latency_ms), sy(100 * frontier[0].accuracy))]
    for p in frontier[1:]:
        x, y = sx(p.latency_ms), sy(100 * p.accuracy)
        coords += [(x, coords[-1][1]), (x, y)]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    return f'<polyline class="frontier-line" points="{path}"/>'


def _label(name: str, cx: float, cy: float, placed: list) -> str:
    """A label beside its point: right, left, above or below, whichever overlaps no point and no label
    placed so far (else right, moved down until free). `placed` holds (x, baseline y, width, height) boxes."""
    width, height = 6.8 * len(name), 14.0
    options = [(cx + 10, cy + 4), (cx - 10 - width, cy + 4), (cx - width / 2, cy - 10), (cx - width / 2, cy + 20)]
    free = [(x, y) for x, y in options if x >= 0 and x + width <= WIDTH and not _collides(x, y, width, height, placed)]
    x, y = free[0] if free else options[0]
    while not free and _collides(x, y, width, height, placed):
        y += height
    placed.append((x, y, width, height))
    return f'<text class="point-label" x="{x:.1f}" y="{y:.1f}">{escape(name)}</text>'


def _collides(x: float, y: float, width: float, height: float, placed: list) -> bool:
    return any(x < px + pw and px < x + width and y - height < py and py - ph < y for px, py, pw, ph in placed)


def _accuracy_range(values: list[float]) -> tuple[float, float]:
    """A y range around the values with at least a point of accuracy on either side, within 0-100 %."""
    if not values:
        return 0.0, 100.0
    lo, hi = min(values), max(values)
    pad = max(1.0, 0.15 * (hi - lo))
    return max(0.0, lo - pad), min(100.0, hi + pad)


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Round tick values covering [lo, hi] (1, 2 or 5 times a power of ten apart)."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(1, count - 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start = math.floor(lo / step) * step
    ticks = [start]
    while ticks[-1] < hi - 1e-12 * step:
        ticks.append(ticks[-1] + step)
    return [round(t, 10) for t in ticks]


def _tick(value: float) -> str:
    return f"{value:g}"

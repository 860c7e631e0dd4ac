"""Reports from a hand-made ProfileReport: one line per artifact x device x batch, raw CSV, JSON round trip,
a self-contained HTML page whose plot marks the Pareto frontier."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from report_samples import LINES_PER_DEVICE, POINTS_PER_DEVICE, sample_report

from deploykit.profile.report import COLUMNS, FORMATS, render
from deploykit.profile.report_html import Point, nice_ticks, pareto, plot_points
from deploykit.profile.results import ProfileReport


def test_markdown_has_one_line_per_artifact_device_and_batch():
    text = render(sample_report(), "md")
    table_lines = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(table_lines) == 2 * (1 + LINES_PER_DEVICE)  # a header and the lines, per device
    assert "## host-cpu-ort" in text and "## host-cpu-openvino" in text
    assert "n/a (static batch 1)" in text and "reference" in text and "ms per GMAC" in text
    assert "Test CPU" in text and "no RAPL domains" in text
    assert "a note with \\| a pipe" not in text  # notes are list items, not table cells
    int8 = next(line for line in table_lines if "int8/resnet56_cifar.int8.onnx" in line and "| 1 |" in line)
    assert "int8 (QDQ)" in int8 and "| 2 |" in int8  # p50 beside MACs


def test_markdown_has_eleven_columns_and_all_21_with_wide():
    header = next(line for line in render(sample_report(), "md").splitlines() if line.startswith("| Artifact"))
    assert header.count("|") - 1 == 11 and "p90 ms" not in header
    wide = next(line for line in render(sample_report(), "md", wide=True).splitlines() if line.startswith("| "))
    assert wide.count("|") - 1 == 21 and "p90 ms" in wide and "Load ms" in wide


def test_ms_per_gmac_shows_the_gap_between_macs_and_time():
    rows = list(csv.DictReader(io.StringIO(render(sample_report(), "csv"))))
    by_name = {(r["device"], r["name"], r["batch"]): r for r in rows}
    folded = by_name[("host-cpu-ort", "folded/resnet56_cifar.onnx", "1")]
    floating = by_name[("host-cpu-ort", "resnet56_cifar (float)", "1")]
    assert folded["macs"] == floating["macs"] == "125485696"  # same MACs ...
    assert float(folded["ms_per_gmac"]) == pytest.approx(3.0 / 0.125485696)
    assert float(floating["ms_per_gmac"]) == pytest.approx(5 * float(folded["ms_per_gmac"]))  # ... 5x the time
    batch8 = by_name[("host-cpu-ort", "slow-and-worse.onnx", "8")]
    assert float(batch8["ms_per_gmac"]) == pytest.approx(30.0 / 8 / 0.125485696)  # per image


def test_csv_is_raw_numbers_with_a_note_for_what_could_not_run():
    rows = list(csv.DictReader(io.StringIO(render(sample_report(), "csv"))))
    assert len(rows) == 2 * LINES_PER_DEVICE and list(rows[0]) == [c.key for c in COLUMNS]
    na = [r for r in rows if r["note"]]
    assert {r["note"] for r in na} == {"n/a (static batch 1)"} and all(r["p50_ms"] == "" for r in na)
    assert float(rows[1]["top1"]) == pytest.approx(0.832) and rows[0]["agreement"] == ""  # float: its own reference


def test_json_round_trips_the_full_report():
    report = sample_report()
    data = json.loads(render(report, "json"))
    assert set(data) == {"environment", "devices", "settings", "rows"}
    assert ProfileReport.from_dict(data).to_dict() == report.to_dict()
    lat = data["rows"][1]["latency"]
    assert lat[0]["throughput"] == pytest.approx(1e3 / 3.0) and lat[1]["note"] == "n/a (static batch 1)"


def test_html_is_self_contained_with_rows_and_points():
    page = render(sample_report(), "html")
    assert page.startswith("<!doctype html>") and "<style>" in page
    assert not re.search(r"<script|<link|src=|@import|url\(", page)  # nothing fetched at view time
    assert re.findall(r"https?://[^\"' ]+", page) == ["http://www.w3.org/2000/svg"] * 2  # the SVG namespace only
    assert page.count("<tbody>") == 2 and page.count("<tr") == 2 * (1 + LINES_PER_DEVICE)
    assert page.count("<circle") == 2 * POINTS_PER_DEVICE
    assert page.count('class="point frontier"') == 2 * 2  # folded and int8, per device
    assert "CPU &lt;ORT&gt;" in page and "CPU &amp; OpenVINO" in page  # escaped
    assert "median latency at batch 1 (ms)" in page and "top-1 accuracy (%)" in page
    for name in ("folded/resnet56_cifar.onnx", "int8/resnet56_cifar.int8.onnx", "slow-and-worse.onnx"):
        assert f">{name}</text>" in page  # every point labelled


def test_pareto_frontier():
    points = pareto([Point("a", 1.0, 0.80), Point("b", 2.0, 0.90), Point("c", 3.0, 0.85), Point("d", 2.0, 0.90),
                     Point("e", 4.0, 0.95), Point("f", 1.0, 0.70)])
    assert {p.name for p in points if p.frontier} == {"a", "b", "d", "e"}  # equal points both stay


def test_rows_without_a_latency_at_the_plotted_batch_are_listed_not_plotted():
    report = sample_report()
    rows = [r for r in report.rows if r.device == "host-cpu-ort"]
    points, skipped = plot_points(rows, 8, "top1")
    assert {p.name for p in points} == {"resnet56_cifar (float)", "slow-and-worse.onnx"}
    assert ("folded/resnet56_cifar.onnx", "n/a (static batch 1)") in skipped


def test_agreement_is_plotted_when_there_are_no_labels():
    report = sample_report()
    rows = [r for r in report.rows if r.device == "host-cpu-ort"]
    points, _ = plot_points(rows, 1, "agreement")
    assert {p.name: p.accuracy for p in points}["resnet56_cifar (float)"] == 1.0


@pytest.mark.parametrize("lo, hi", [(0, 17.6), (82.1, 84.9), (0, 0.003), (5, 5)])
def test_nice_ticks_cover_the_range(lo, hi):
    ticks = nice_ticks(lo, hi)
    assert ticks[0] <= lo and ticks[-1] >= hi and 2 <= len(ticks) <= 12
    steps = {round(b - a, 9) for a, b in zip(ticks, ticks[1:])}
    assert len(steps) == 1


def test_every_format_renders():
    assert set(FORMATS) == {"md", "csv", "json", "html"}
    for fmt in FORMATS:
        assert render(sample_report(), fmt)
    with pytest.raises(ValueError, match="unknown report format"):
        render(sample_report(), "pdf")

"""The HTML report in a real browser: headless Chromium renders it offline, the DOM it builds holds every
table row and plot point, and a screenshot shows the frontier's accent colour."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from PIL import Image
from report_samples import LINES_PER_DEVICE, POINTS_PER_DEVICE, sample_report

from deploykit.profile.report import render

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent "
                                "(apt-get install chromium; .ci/run installs it)")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars")
ACCENT = (0xC2, 0x41, 0x0C)  # svg circle.point.frontier


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(render(sample_report(), "html"))
    return path


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_rendered_dom_has_every_row_and_point(page, tmp_path):
    dom = chromium("--dump-dom", page.as_uri(), profile=tmp_path / "profile").stdout
    assert dom.count("<tbody>") == 2
    assert len(re.findall(r"<tr[ >]", dom)) == 2 * (1 + LINES_PER_DEVICE)  # header + lines, per device
    assert len(re.findall(r"<circle[ >]", dom)) == 2 * POINTS_PER_DEVICE
    assert dom.count('class="point frontier"') == 4
    assert "n/a (static batch 1)" in dom and "int8/resnet56_cifar.int8.onnx" in dom


def test_screenshot_shows_the_plot(page, tmp_path):
    shot = tmp_path / "report.png"
    chromium(f"--screenshot={shot}", "--window-size=1400,1000", page.as_uri(), profile=tmp_path / "profile")
    image = Image.open(shot).convert("RGB")
    assert image.size == (1400, 1000)
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, "a blank or near-blank page"
    accent = sum(n for n, (r, g, b) in colours if abs(r - ACCENT[0]) + abs(g - ACCENT[1]) + abs(b - ACCENT[2]) < 30)
    assert accent > 100, "no frontier points (accent colour) in the screenshot"

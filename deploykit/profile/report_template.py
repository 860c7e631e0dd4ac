"""The HTML report's page skeleton and stylesheet: inline, so the file views offline with nothing fetched."""

from __future__ import annotations

from string import Template

CSS = """
:root { --ink: #1d2430; --muted: #5b6575; --line: #d8dde6; --accent: #c2410c; --point: #7b8494; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
       margin: 24px auto; max-width: 1500px; padding: 0 20px; }
h1 { font-size: 22px; margin: 0 0 6px; }
h2 { font-size: 18px; margin: 28px 0 4px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
p.meta { color: var(--muted); margin: 2px 0; }
figure { margin: 12px 0; }
figcaption { color: var(--muted); font-size: 12px; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-size: 12.5px; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 8px; text-align: right; white-space: nowrap; }
th { background: #f3f5f8; position: sticky; top: 0; }
td.text, th.text { text-align: left; }
tr.float-original td { background: #fbf7f2; }
tr.frontier td { font-weight: 600; }
td.na { color: var(--muted); }
svg text { font: 12px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; fill: var(--ink); }
svg .axis { stroke: var(--ink); stroke-width: 1; }
svg .grid { stroke: var(--line); stroke-width: 1; }
svg .tick-label { fill: var(--muted); font-size: 11px; }
svg .frontier-line { fill: none; stroke: var(--accent); stroke-width: 2; stroke-dasharray: 6 4; }
svg circle.point { fill: var(--point); stroke: #fff; stroke-width: 1.5; }
svg circle.point.frontier { fill: var(--accent); }
ul.notes { color: var(--muted); font-size: 12px; }
"""

PAGE = Template("""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>$css</style>
</head>
<body>
<h1>$title</h1>
$meta
$sections
</body>
</html>
""")

SECTION = Template("""<section class="device" id="$anchor">
<h2>$device</h2>
<p class="meta">$description</p>
<figure>
$plot
<figcaption>$caption</figcaption>
</figure>
<div class="table-wrap">
<table>
<thead><tr>$header</tr></thead>
<tbody>
$rows
</tbody>
</table>
</div>
$notes
</section>""")

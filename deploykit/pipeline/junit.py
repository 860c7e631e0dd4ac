"""JUnit XML for CI: one testsuite per recipe, one testcase per stage x device x threshold.

A latency too unstable to judge is an `<error type="unstable">`: distinct from a failed threshold (a
`<failure>`) and from a pass, so CI shows it as neither."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from deploykit.core.fsutil import write_text_atomic
from deploykit.pipeline.check import Case


def junit_xml(suite: str, cases: list[Case], *, seconds: float = 0.0, properties: dict | None = None) -> str:
    root = ET.Element("testsuites")
    counts = {s: sum(c.status == s for c in cases) for s in ("failed", "skipped", "unstable")}
    node = ET.SubElement(root, "testsuite", name=suite, tests=str(len(cases)), failures=str(counts["failed"]),
                         errors=str(counts["unstable"]), skipped=str(counts["skipped"]), time=f"{seconds:.3f}")
    if properties:
        props = ET.SubElement(node, "properties")
        for key, value in properties.items():
            ET.SubElement(props, "property", name=str(key), value=str(value))
    for case in cases:
        element = ET.SubElement(node, "testcase", classname=f"{suite}.{case.stage}",
                                name=f"{case.device}.{case.check}", time="0")
        if case.status == "failed":
            ET.SubElement(element, "failure", message=case.message, type=case.check).text = case.message
        elif case.status == "unstable":  # JUnit's third outcome: the check could not be made, not a failure
            ET.SubElement(element, "error", message=case.message, type="unstable").text = case.message
        elif case.status == "skipped":
            ET.SubElement(element, "skipped", message=case.message)
        elif case.message:
            ET.SubElement(element, "system-out").text = case.message
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(path: Path, suite: str, cases: list[Case], **kwargs) -> None:
    write_text_atomic(Path(path), junit_xml(suite, cases, **kwargs))

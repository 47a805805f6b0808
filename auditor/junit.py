"""A policy verdict as a JUnit XML file, the format every CI dashboard reads.

One test case per gate and subgroup: the class name is the gate and grouping
(``flip_rate_gap[blackout@gradcam].gender``), the name the subgroup, so a dashboard groups
failures by gate and shows which subgroup failed. A failing gate is a ``<failure>`` whose message
holds the figures; a gate the data cannot settle (a subgroup too small, or under ``require =
"equivalence"`` a gap the data cannot rule out) is ``<skipped>`` with the reason as its message
and text, or a failure of type "insufficient data" when the policy says insufficient data fails.
A passed gate keeps its figures in ``<system-out>``. The suite's properties name the policy and
what it requires (``require``), so each outcome can be read with the rule that gave it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from auditor.policy import INSUFFICIENT, Verdict

SUITE_NAME = "auditor policy"


def write_junit(verdict: Verdict, path: Path, run_name: str) -> Path:
    """Write ``verdict`` to ``path`` (parents created) and return the path."""
    results = verdict.results
    failures = [r for r in results if verdict.counts_against(r)]
    skipped = [r for r in results if r.outcome == INSUFFICIENT and not verdict.counts_against(r)]
    suite = ET.Element(
        "testsuite",
        name=f"{SUITE_NAME}: {run_name}",
        tests=str(len(results)),
        failures=str(len(failures)),
        errors="0",
        skipped=str(len(skipped)),
    )
    properties = ET.SubElement(suite, "properties")
    ET.SubElement(properties, "property", name="policy", value=verdict.policy.source)
    ET.SubElement(properties, "property", name="require", value=verdict.policy.require)
    for result in results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"{result.gate}.{result.grouping}",
            name=result.group,
        )
        if verdict.counts_against(result):
            failure = ET.SubElement(case, "failure", message=result.message, type=result.outcome)
            failure.text = result.message
        elif result.outcome == INSUFFICIENT:
            ET.SubElement(case, "skipped", message=result.message).text = result.message
        else:
            ET.SubElement(case, "system-out").text = result.message
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path

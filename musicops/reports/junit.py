"""The one JUnit XML writer: each gate or check becomes a <testcase>, so CI shows it as a test.

Built with xml.etree so names and details are escaped; characters XML 1.0 cannot carry at all
(control characters from tracebacks or terminal colours) are replaced, so the file always parses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from xml.etree import ElementTree as ET

Outcome = Literal["passed", "failure", "error", "skipped"]
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
MESSAGE_LIMIT = 500


@dataclass(frozen=True)
class JUnitCase:
    """One test case: `outcome` other than "passed" becomes a <failure>, <error> or <skipped> child."""

    name: str
    outcome: Outcome = "passed"
    detail: str = ""

    @classmethod
    def check(cls, name: str, passed: bool, detail: str = "") -> JUnitCase:
        """A pass/fail case, for gates that only pass or fail."""
        return cls(name, "passed" if passed else "failure", detail)


def _xml_text(text: str) -> str:
    return _INVALID_XML.sub("\ufffd", text)


def junit_tree(suite_name: str, cases: Iterable[JUnitCase], *, classname: str | None = None) -> ET.ElementTree:
    """<testsuites><testsuite> with counts, one <testcase> per case; detail as the message and body."""
    cases = list(cases)
    counts = {kind: sum(c.outcome == kind for c in cases) for kind in ("failure", "error", "skipped")}
    root = ET.Element("testsuites", tests=str(len(cases)), failures=str(counts["failure"]),
                      errors=str(counts["error"]))
    suite = ET.SubElement(root, "testsuite", name=_xml_text(suite_name), tests=str(len(cases)),
                          failures=str(counts["failure"]), errors=str(counts["error"]),
                          skipped=str(counts["skipped"]))
    for case in cases:
        element = ET.SubElement(suite, "testcase", classname=_xml_text(classname or suite_name),
                                name=_xml_text(case.name))
        detail = _xml_text(case.detail)
        if case.outcome == "passed":
            ET.SubElement(element, "system-out").text = detail
        else:
            ET.SubElement(element, case.outcome, message=detail[:MESSAGE_LIMIT]).text = detail
    return ET.ElementTree(root)


def write_junit(path: Path, suite_name: str, cases: Iterable[JUnitCase], *, classname: str | None = None) -> Path:
    """Write the JUnit XML for `cases` to `path` (UTF-8, with declaration); return `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    junit_tree(suite_name, cases, classname=classname).write(path, encoding="utf-8", xml_declaration=True)
    return path

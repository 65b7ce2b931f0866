"""One home for reports: Jinja HTML templates (autoescaped), JUnit XML for CI, and plots.

Every stage writes its reports through these, so escaping, XML validity and plotting backend are
decided once. Submodules import their heavy dependencies (jinja2, matplotlib) lazily.
"""

from __future__ import annotations

from musicops.reports.junit import JUnitCase, write_junit
from musicops.reports.templating import render

__all__ = ["JUnitCase", "render", "write_junit"]

"""The one home for reports: the JUnit writer, the autoescaped HTML templates, the MOS plot."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from xml.etree import ElementTree as ET

from musicops.reports import JUnitCase, render, write_junit
from musicops.reports.plots import MosPoint, mos_errorbar_png


def test_junit_counts_outcomes_and_a_failing_case_has_a_failure(tmp_path: Path) -> None:
    cases = [JUnitCase.check("fad", True, "0.1 <= 0.2"), JUnitCase.check("clap", False, "dropped 0.3"),
             JUnitCase("mos", "skipped", "no campaign"), JUnitCase("licence", "error", "boom")]
    root = ET.parse(write_junit(tmp_path / "j" / "junit.xml", "suite", cases)).getroot()
    suite = root.find("testsuite")
    assert suite is not None
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("4", "1", "1")
    assert (suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("1", "1", "1")
    by_name = {c.get("name"): c for c in suite.iter("testcase")}
    assert by_name["fad"].find("failure") is None and by_name["fad"].findtext("system-out") == "0.1 <= 0.2"
    failure = by_name["clap"].find("failure")
    assert failure is not None and failure.get("message") == "dropped 0.3" and failure.text == "dropped 0.3"
    assert by_name["mos"].find("skipped") is not None and by_name["licence"].find("error") is not None
    assert {c.get("classname") for c in by_name.values()} == {"suite"}


def test_junit_escapes_special_characters_and_keeps_emoji(tmp_path: Path) -> None:
    name = 'gate <&"> 🎵'
    detail = "prompt '<script>alert(1)</script>' & \"quotes\" 🎸 \x1b[31mred\x00"
    path = write_junit(tmp_path / "junit.xml", "suite & <co>", [JUnitCase.check(name, False, detail)],
                       classname="musicops.release")
    raw = path.read_text(encoding="utf-8")
    assert "<script>" not in raw and "&lt;script&gt;" in raw
    case = ET.parse(path).getroot().find("testsuite/testcase")
    assert case is not None and case.get("name") == name and case.get("classname") == "musicops.release"
    failure = case.find("failure")
    assert failure is not None and failure.text is not None
    assert "<script>alert(1)</script>" in failure.text and "🎸" in failure.text
    assert "\x1b" not in failure.text and "\x00" not in failure.text  # not XML; replaced so it parses
    assert ET.parse(path).getroot().find("testsuite").get("name") == "suite & <co>"


def _release_report(prompt: str):
    from musicops.release.gates import GateVerdict, ReleaseReport

    gate = GateVerdict(name="regression", status="fail", detail="clap <dropped>", report=None, figures={
        "suite": {"name": "s", "version": 1, "sha256": "0" * 64},
        "metrics": {"clap": {"mean_delta": -0.1, "ci_low": -0.2, "ci_high": 0.0},
                    "flatness": {"mean_delta": 0.0, "ci_low": -0.1, "ci_high": 0.1},
                    "frechet_distance": 1.5, "drift_median": 0.1, "drift_max": 0.3},
        "outliers": [{"id": "p1", "prompt": prompt, "fd_contribution": 0.5, "drift": 0.2,
                      "candidate_audio": "a" * 64, "baseline_audio": "b" * 64}]})
    return ReleaseReport("models:/m/2", "models:/m/1", [gate], "2026-01-01T00:00:00")


def test_templates_autoescape_user_text() -> None:
    from musicops.release.gates import release_html

    page = release_html(_release_report("<script>alert(1)</script> & drums"))
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; drums" in page
    assert "clap &lt;dropped&gt;" in page and "Metric deltas" in page and "-0.1000" in page
    assert f"src='regression/audio/{'a' * 64}.wav'" in page
    section = SimpleNamespace(title="Files <b>", text=["<img src=x onerror=alert(1)>"], headers=["file"],
                              rows=[["PASSED"], ["a <b>.wav"]])
    html = render("dataset.html.j2", title="Dataset report: <x>", sections=[section])
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<title>Dataset report: &lt;x&gt;</title>" in html and 'class="PASSED"' in html


def test_mos_plot_is_a_png_and_tolerates_missing_values() -> None:
    png = mos_errorbar_png([MosPoint("v1", 3.5, 3.1, 3.9), MosPoint("v2", math.nan, math.nan, math.nan),
                            MosPoint("anchor: x", 1.2, math.nan, 1.5)], title="t", scale=(1.0, 5.0))
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_loss_curve_is_written_as_png(tmp_path: Path) -> None:
    from musicops.training.tracking import plot_loss_curve

    path = plot_loss_curve([3.0, 2.4, 2.1], tmp_path / "runs" / "loss_curve.png", "fine-tune <x>")
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

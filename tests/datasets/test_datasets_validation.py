from __future__ import annotations

import json
from pathlib import Path

import pytest

from musicops.datasets.manifest import FileProblem, manifest_frame
from musicops.datasets.validation import SUITE_PATH, load_suite, validate_manifest, write_report


def _row(i: int, **overrides) -> dict:
    row = {"path": f"/data/clip_{i}.wav", "file_name": f"clip_{i}.wav", "sha256": f"{i:064x}",
           "duration_s": 4.0, "sample_rate": 32000, "channels": 1, "loudness_lufs": -18.0,
           "peak_dbfs": -1.0, "caption": f"calm ambient piece number {i}"}
    row.update(overrides)
    return row


def test_suite_file_loads_every_expectation() -> None:
    spec = json.loads(SUITE_PATH.read_text())
    suite = load_suite()
    assert len(suite.expectations) == len(spec["expectations"]) >= 15
    types = {e.expectation_type for e in suite.expectations}
    assert {"expect_column_values_to_not_be_null", "expect_column_values_to_be_unique",
            "expect_column_values_to_be_in_set", "expect_column_values_to_be_between",
            "expect_column_value_lengths_to_be_between"} <= types


def test_a_typo_in_the_suite_is_an_error_not_a_silent_drop(tmp_path: Path) -> None:
    spec = json.loads(SUITE_PATH.read_text())
    spec["expectations"].append({"type": "expect_column_values_to_be_nul", "kwargs": {"column": "path"}})
    broken = tmp_path / "suite.json"
    broken.write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="expect_column_values_to_be_nul"):
        load_suite(broken)


def test_good_manifest_passes() -> None:
    result = validate_manifest(manifest_frame([_row(i) for i in range(3)]))
    assert result.success, result.failures
    assert result.failures == [] and result.statistics["unsuccessful_expectations"] == 0
    assert all(o.success for o in result.outcomes)


@pytest.mark.parametrize(("override", "expectation", "column"), [
    ({"sample_rate": 8000}, "expect_column_values_to_be_in_set", "sample_rate"),
    ({"channels": 6}, "expect_column_values_to_be_in_set", "channels"),
    ({"caption": "ab"}, "expect_column_value_lengths_to_be_between", "caption"),
    ({"caption": "x" * 501}, "expect_column_value_lengths_to_be_between", "caption"),
    ({"caption": None}, "expect_column_values_to_not_be_null", "caption"),
    ({"duration_s": 0.2}, "expect_column_values_to_be_between", "duration_s"),
    ({"duration_s": 3600.0}, "expect_column_values_to_be_between", "duration_s"),
    ({"loudness_lufs": None}, "expect_column_values_to_not_be_null", "loudness_lufs"),
    ({"loudness_lufs": 3.0}, "expect_column_values_to_be_between", "loudness_lufs"),
    ({"peak_dbfs": 0.5}, "expect_column_values_to_be_between", "peak_dbfs"),
    ({"sha256": "0" * 63 + "1"}, "expect_column_values_to_be_unique", "sha256"),  # same as row 1
    ({"sha256": "not-a-digest"}, "expect_column_values_to_match_regex", "sha256"),
])
def test_each_rule_catches_its_problem(override: dict, expectation: str, column: str) -> None:
    rows = [_row(0), _row(1), _row(2, **override)]
    result = validate_manifest(manifest_frame(rows))
    assert not result.success
    failed = {(o.expectation, o.column) for o in result.failed}
    assert failed == {(expectation, column)}
    assert any(expectation in f and column in f for f in result.failures)
    assert "clip_2.wav" in result.failed[0].files


def test_missing_column_and_empty_manifest_fail() -> None:
    frame = manifest_frame([_row(0)]).drop(columns=["caption"])
    result = validate_manifest(frame)
    assert not result.success
    assert any(o.expectation == "expect_table_columns_to_match_set" for o in result.failed)
    assert any(o.column == "caption" and o.error for o in result.failed)
    empty = validate_manifest(manifest_frame([]))
    assert [o.expectation for o in empty.failed] == ["expect_table_row_count_to_be_between"]


def test_report_escapes_html_and_writes_markdown_twin(tmp_path: Path) -> None:
    frame = manifest_frame([_row(0, caption="<script>alert(1)</script> | pipes"), _row(1, sample_rate=8000)])
    validation = validate_manifest(frame)
    problems = [FileProblem("bad <b>.wav", "empty file (0 bytes)")]
    path = write_report(tmp_path / "r" / "report.html", name="demo", file_problems=problems,
                        validation=validation, manifest=frame)
    text = path.read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "bad &lt;b&gt;.wav" in text and "expect_column_values_to_be_in_set" in text
    assert "FAILED" in text and "duration (s)" in text and "loudness (LUFS)" in text
    markdown = path.with_suffix(".md").read_text()
    assert "bad <b>.wav" in markdown and "\\| pipes" in markdown and "sample_rate" in markdown

"""Great Expectations validation of a manifest, and the human-readable ingest report.

The expectation suite is a reviewed JSON file in the repository (`expectations/audio_manifest.json`),
not code: changing what a valid dataset is shows up as a diff. It runs in an ephemeral GX context
(nothing written to disk, no GX project to set up) against the manifest DataFrame.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from musicops.store.files import atomic_write

if TYPE_CHECKING:
    import great_expectations as gx
    import pandas as pd

    from musicops.audio.io import FileProblem

SUITE_PATH = Path(__file__).resolve().parent / "expectations" / "audio_manifest.json"
EXAMPLES = 5  # unexpected values (and their files) quoted per failing expectation
REPORT_ROW_LIMIT = 1000


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's result, reduced to what a person needs to fix the data."""

    expectation: str
    column: str | None
    success: bool
    description: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)  # without column/batch_id
    element_count: int | None = None
    unexpected_count: int | None = None
    examples: list[Any] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # file_name of rows holding the examples
    observed: Any = None  # table-level expectations report an observed value instead
    error: str | None = None  # GX could not evaluate it (e.g. a missing column)

    def __str__(self) -> str:
        target = f" on column {self.column!r}" if self.column else ""
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        text = f"{self.expectation}{target}" + (f" ({args})" if args else "")
        if self.success:
            return text + ": passed"
        if self.error:
            return text + f": could not be evaluated: {self.error}"
        if self.unexpected_count is not None:
            of = f" of {self.element_count} rows" if self.element_count is not None else ""
            text += f": {self.unexpected_count}{of} unexpected"
            if self.examples:
                pairs = _zip_files(self.examples, self.files)
                text += ", e.g. " + ", ".join(_example(v, f) for v, f in pairs)
        elif self.observed is not None:
            text += f": observed {self.observed!r}"
        return text


@dataclass
class ValidationResult:
    success: bool
    failures: list[str]
    statistics: dict[str, Any]
    raw: dict[str, Any]  # the GX result as JSON-safe data, kept for audits
    outcomes: list[ExpectationOutcome] = field(default_factory=list)
    suite_name: str = ""

    @property
    def failed(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success]


def _example(value: Any, file: str | None) -> str:
    shown = repr(value) if not isinstance(value, str) or len(value) <= 80 else repr(value[:77] + "...")
    return f"{shown} [{file}]" if file else shown


def _zip_files(values: list[Any], files: list[str]) -> list[tuple[Any, str | None]]:
    return [(v, files[i] if i < len(files) else None) for i, v in enumerate(values)]


def load_suite(path: str | os.PathLike[str] | None = None) -> gx.ExpectationSuite:
    """Build the suite from its JSON file, refusing any expectation GX would silently drop.

    `gx.ExpectationSuite(expectations=[...])` only logs invalid entries (a typo'd type or kwarg)
    and leaves them out, which would quietly weaken the gate.
    """
    import great_expectations as gx

    path = Path(path) if path is not None else SUITE_PATH
    spec = json.loads(path.read_text(encoding="utf-8"))
    expected = spec.get("expectations", [])
    suite = gx.ExpectationSuite(name=spec["name"], expectations=expected, meta=spec.get("meta"))
    if len(suite.expectations) != len(expected):
        loaded = {(e.expectation_type, json.dumps(e.configuration.kwargs, sort_keys=True, default=str))
                  for e in suite.expectations}
        dropped = [e.get("type") for e in expected
                   if (e.get("type"), json.dumps(e.get("kwargs", {}), sort_keys=True, default=str))
                   not in loaded]
        raise ValueError(f"{path}: {len(expected) - len(suite.expectations)} expectation(s) are invalid "
                         f"and were dropped by Great Expectations: {', '.join(map(str, dropped))}")
    return suite


def validate_manifest(frame: pd.DataFrame, suite_path: str | os.PathLike[str] | None = None
                      ) -> ValidationResult:
    """Run the repository's expectation suite on a manifest DataFrame."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    suite = load_suite(suite_path)
    context = gx.get_context(mode="ephemeral")
    # GX draws tqdm bars on stderr by default; the CLI has its own output.
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    asset = context.data_sources.add_pandas("manifest").add_dataframe_asset("rows")
    batch = asset.add_batch_definition_whole_dataframe("all").get_batch(
        batch_parameters={"dataframe": frame})
    index_columns = ["file_name"] if "file_name" in frame.columns else []
    result = batch.validate(suite, result_format={
        "result_format": "SUMMARY",
        "partial_unexpected_count": EXAMPLES,
        "unexpected_index_column_names": index_columns,
    })
    raw = _jsonable(result.to_json_dict())
    order = {_key(e.expectation_type, e.configuration.kwargs): i for i, e in enumerate(suite.expectations)}
    outcomes = [_outcome(r) for r in result.results]
    configs = [r.expectation_config for r in result.results]  # set on every result of a suite run
    positions = [order.get(_key(c.type, c.kwargs), len(order)) if c is not None else len(order) for c in configs]
    outcomes = [o for _, o in sorted(zip(positions, outcomes, strict=True), key=lambda pair: pair[0])]
    return ValidationResult(
        success=bool(result.success),
        failures=[str(o) for o in outcomes if not o.success],
        statistics=dict(_jsonable(result.statistics)),
        raw=raw,
        outcomes=outcomes,
        suite_name=suite.name,
    )


def _key(kind: str, kwargs: dict[str, Any]) -> str:
    """GX returns results in its own order; this matches them back to the suite's order."""
    plain = {k: v for k, v in kwargs.items() if k != "batch_id"}
    return kind + json.dumps(_jsonable(plain), sort_keys=True)


def _outcome(result: Any) -> ExpectationOutcome:
    config = result.expectation_config
    kwargs = {k: v for k, v in config.kwargs.items() if k not in ("batch_id", "column")}
    details = result.result or {}
    files = []
    for entry in details.get("partial_unexpected_index_list") or []:
        if isinstance(entry, dict) and "file_name" in entry:
            files.append(str(entry["file_name"]))
    return ExpectationOutcome(
        expectation=config.type,
        column=config.kwargs.get("column"),
        success=bool(result.success),
        description=config.description,
        kwargs=_jsonable(kwargs),
        element_count=details.get("element_count"),
        unexpected_count=details.get("unexpected_count"),
        examples=_jsonable(list(details.get("partial_unexpected_list") or [])),
        files=files,
        observed=_jsonable(details.get("observed_value")),
        error=_exception_message(result.exception_info),
    )


def _exception_message(info: Any) -> str | None:
    """GX nests exception info either flat or per metric; return the first message either way."""
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message") or "unknown error")
    for value in info.values():
        if isinstance(value, dict) and (value.get("exception_message") or value.get("raised_exception")):
            message = str(value.get("exception_message") or "unknown error")
            return message.strip().splitlines()[-1][:300] if message.strip() else message
    return None


def _jsonable(value: Any) -> Any:
    """Plain JSON values: NaN/inf become None (strict JSON has neither), numpy scalars become Python."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        try:
            value = value.item()
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


# --- the report ----------------------------------------------------------------------------------

@dataclass
class _Section:
    title: str
    text: list[str] = field(default_factory=list)
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)


def write_report(path: str | os.PathLike[str], *, name: str, file_problems: Sequence[FileProblem],
                 validation: ValidationResult | None, manifest: pd.DataFrame | None = None,
                 ignored: Sequence[str] = (), source: str | os.PathLike[str] | None = None) -> Path:
    """Write `path` (HTML, escaped, no scripts) and a Markdown twin next to it (`.md`).

    Lists every bad file and failing expectation first, because that is what the reader has to fix,
    then a summary of the manifest.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    passed = not file_problems and validation is not None and validation.success
    title = f"Dataset report: {name}"
    overview = _Section("Overview", headers=["", ""], rows=[
        ["status", "PASSED" if passed else "FAILED"],
        ["dataset", name],
        ["source", str(source) if source is not None else "-"],
        ["generated (UTC)", dt.datetime.now(dt.UTC).isoformat(timespec="seconds")],
        ["usable files", str(len(manifest)) if manifest is not None else "-"],
        ["bad files", str(len(file_problems))],
        ["failing expectations",
         str(len(validation.failed)) if validation is not None else "not run"],
    ])
    sections = [overview]
    bad = _Section("Bad files", headers=["file", "problem"],
                   rows=[[p.path, p.problem] for p in file_problems])
    if not file_problems:
        bad.text.append("None: every audio file decoded and has a caption.")
    sections.append(bad)
    if validation is not None:
        failing = _Section(f"Failing expectations (suite {validation.suite_name})",
                           headers=["expectation", "column", "unexpected", "examples [file]", "why"])
        for o in validation.failed:
            count = (o.error and f"error: {o.error}") or (
                f"{o.unexpected_count} of {o.element_count}" if o.unexpected_count is not None
                else f"observed {o.observed!r}")
            examples = ", ".join(_example(v, f) for v, f in _zip_files(o.examples, o.files))
            failing.rows.append([_call(o), o.column or "(table)", count, examples, o.description or ""])
        if not failing.rows:
            failing.text.append(f"None: all {len(validation.outcomes)} expectations passed.")
        sections.append(failing)
        sections.append(_Section("All expectations", headers=["result", "expectation", "column"], rows=[
            ["pass" if o.success else "FAIL", _call(o), o.column or "(table)"] for o in validation.outcomes]))
    if manifest is not None and len(manifest):
        sections.append(_summary_section(manifest))
        sections.append(_files_section(manifest))
    if ignored:
        sections.append(_Section("Ignored files (not audio, not a caption or metadata file)",
                                 headers=["file"], rows=[[f] for f in ignored]))
    atomic_write(path, _render_html(title, sections))
    atomic_write(path.with_suffix(".md"), _render_markdown(title, sections))
    return path


def _call(o: ExpectationOutcome) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in o.kwargs.items())
    return f"{o.expectation}({args})"


def _fmt(value: Any, digits: int = 2) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "-"
    return f"{number:.{digits}f}" if math.isfinite(number) else "-"


def _summary_section(frame: pd.DataFrame) -> _Section:
    section = _Section("Manifest summary", headers=["measure", "min", "median", "max", "total"])
    duration = frame["duration_s"].astype("float64")
    loudness = frame["loudness_lufs"].astype("float64")
    peak = frame["peak_dbfs"].astype("float64")
    section.rows.append(["duration (s)", _fmt(duration.min()), _fmt(duration.median()), _fmt(duration.max()),
                         _fmt(duration.sum(), 1)])
    section.rows.append(["loudness (LUFS)", _fmt(loudness.min()), _fmt(loudness.median()),
                         _fmt(loudness.max()), ""])
    section.rows.append(["peak (dBFS)", _fmt(peak.min()), _fmt(peak.median()), _fmt(peak.max()), ""])
    rates = frame["sample_rate"].value_counts().sort_index()
    channels = frame["channels"].value_counts().sort_index()
    section.text.append(f"{len(frame)} files; sample rates: "
                        + ", ".join(f"{int(k)} Hz x{int(v)}" for k, v in rates.items())
                        + "; channels: " + ", ".join(f"{int(k)} x{int(v)}" for k, v in channels.items()))
    return section


def _files_section(frame: pd.DataFrame) -> _Section:
    section = _Section("Files", headers=["file", "duration (s)", "rate", "ch", "LUFS", "peak dBFS",
                                         "sha256", "caption"])
    for row in frame.head(REPORT_ROW_LIMIT).itertuples(index=False):
        section.rows.append([str(row.file_name), _fmt(row.duration_s), str(row.sample_rate),
                             str(row.channels), _fmt(row.loudness_lufs, 1), _fmt(row.peak_dbfs, 1),
                             str(row.sha256)[:12], str(row.caption)])
    if len(frame) > REPORT_ROW_LIMIT:
        section.text.append(f"Showing the first {REPORT_ROW_LIMIT} of {len(frame)} files.")
    return section


def _render_html(title: str, sections: list[_Section]) -> str:
    """The shared dataset template (autoescaped: captions and file names are user text)."""
    from musicops.reports import render

    return render("dataset.html.j2", title=title, sections=sections)


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _render_markdown(title: str, sections: list[_Section]) -> str:
    out = [f"# {title}", ""]
    for section in sections:
        out += [f"## {section.title}", ""]
        for t in section.text:
            out += [t, ""]
        if section.rows:
            headers = [h or " " for h in section.headers]
            out.append("| " + " | ".join(_md_cell(h) for h in headers) + " |")
            out.append("|" + "---|" * len(headers))
            out.extend("| " + " | ".join(_md_cell(c) for c in row) + " |" for row in section.rows)
            out.append("")
    return "\n".join(out)



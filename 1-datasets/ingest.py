"""Ingest: folder of captioned audio -> validated, versioned manifest, or a report of what is wrong.

All or nothing: one bad file or one failing expectation means no manifest is published, because a
dataset that silently drops files is a different dataset from the one the user meant.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from musicops.audio.io import FileProblem
from musicops.datasets.manifest import (
    ManifestVersion,
    load_manifest,
    publish_manifest,
    scan_directory,
    validate_name,
)
from musicops.errors import MusicopsError

if TYPE_CHECKING:
    from musicops.config import Settings
    from musicops.datasets.validation import ValidationResult


@dataclass
class IngestResult:
    version: ManifestVersion | None  # None when nothing was published
    report_path: Path | None
    problems: list[FileProblem] = field(default_factory=list)
    validation: ValidationResult | None = None
    n_files: int = 0
    total_duration_s: float = 0.0
    ignored: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.version is not None


class IngestError(MusicopsError, RuntimeError):
    """Nothing was published; `.result` (when a scan happened) holds the problems and report path."""

    def __init__(self, message: str, result: IngestResult | None = None):
        super().__init__(message)
        self.result = result


def ingest(directory: str | os.PathLike[str], name: str, settings: Settings | None = None) -> IngestResult:
    """Scan `directory`, validate it with the repository's GX suite and publish `name`'s next version.

    Raises IngestError (with a report written under `DATASETS_DIR/NAME/reports/`) when any file is
    bad or any expectation fails; the message names each bad file and each failing expectation.
    """
    from musicops.config import get_settings
    from musicops.datasets.validation import validate_manifest, write_report

    validate_name(name)
    settings = (settings or get_settings()).ensure()
    scan = scan_directory(directory)
    if not scan.rows and not scan.problems:
        from musicops.audio.io import AUDIO_EXTENSIONS

        raise IngestError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) found under {scan.directory}")
    frame = scan.frame()
    validation = validate_manifest(frame)
    result = IngestResult(
        version=None, report_path=None, problems=list(scan.problems), validation=validation,
        n_files=len(frame), total_duration_s=float(frame["duration_s"].sum()) if len(frame) else 0.0,
        ignored=list(scan.ignored),
    )
    report_args = dict(name=name, file_problems=scan.problems, validation=validation, manifest=frame,
                       ignored=scan.ignored, source=scan.directory)
    if scan.problems or not validation.success:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        reports = settings.datasets_dir / name / "reports"
        result.report_path = write_report(reports / f"{stamp}.html", **report_args)
        raise IngestError(_failure_message(name, scan.directory, result), result)
    result.version = publish_manifest(frame, name, settings, source=scan.directory)
    result.report_path = write_report(result.version.directory / "report.html", **report_args)
    return result


def _failure_message(name: str, directory: Path, result: IngestResult) -> str:
    lines = [f"dataset {name!r} from {directory} was not published:"]
    if result.problems:
        lines.append(f"{len(result.problems)} bad file(s):")
        lines += [f"  - {p.path}: {p.problem}" for p in result.problems]
    if result.validation is not None and result.validation.failures:
        lines.append(f"{len(result.validation.failures)} failing expectation(s):")
        lines += [f"  - {f}" for f in result.validation.failures]
    lines.append(f"report: {result.report_path}")
    return "\n".join(lines)


# --- the same steps, split for the kfp pipeline (ingest step, then validate step) -------------------


def scan_to_candidate(directory: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> int:
    """kfp ingest step: scan into an unvalidated candidate table; any bad file fails the step."""
    scan = scan_directory(directory)
    if not scan.rows and not scan.problems:
        from musicops.audio.io import AUDIO_EXTENSIONS

        raise IngestError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) found under {scan.directory}")
    if scan.problems:
        result = IngestResult(version=None, report_path=None, problems=list(scan.problems))
        raise IngestError(_failure_message("candidate", scan.directory, result), result)
    scan.frame().to_parquet(out_path, engine="pyarrow", index=False)
    return len(scan.rows)


def validate_and_publish(candidate_path: str | os.PathLike[str], name: str, source: str | os.PathLike[str],
                         settings: Settings, manifest_out: str | os.PathLike[str],
                         report_out: str | os.PathLike[str]) -> ManifestVersion:
    """kfp validate step: run the GX suite on a candidate; publish a new version only if it passes."""

    import pandas as pd

    from musicops.datasets.validation import validate_manifest, write_report

    validate_name(name)
    frame = pd.read_parquet(candidate_path, engine="pyarrow")
    validation = validate_manifest(frame)
    report_args = dict(name=name, file_problems=[], validation=validation, manifest=frame,
                       source=Path(source))
    write_report(Path(report_out), **report_args)
    if not validation.success:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        report = write_report(settings.datasets_dir / name / "reports" / f"{stamp}.html", **report_args)
        result = IngestResult(version=None, report_path=report, validation=validation, n_files=len(frame))
        raise IngestError(_failure_message(name, Path(source), result), result)
    version = publish_manifest(frame, name, settings, source=Path(source))
    write_report(version.directory / "report.html", **report_args)
    # the step's output names the version's own audio files (the caller packs them into its artifact)
    load_manifest(version.path, settings).to_parquet(manifest_out, index=False, engine="pyarrow")
    return version

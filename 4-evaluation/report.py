"""Regression reports: JSON for machines, JUnit XML for CI (one test case per gate), HTML for people."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from musicops.config import Settings
from musicops.reports import JUnitCase, render, write_junit


def write_reports(result: Any, out_dir: Path, settings: Settings) -> dict[str, Path]:
    """regression.json, junit.xml (one test case per gate), report.html with the audio copied beside it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "regression.json", "junit": out_dir / "junit.xml", "html": out_dir / "report.html"}
    paths["json"].write_text(json.dumps(result.to_dict(), indent=2, default=str))
    write_junit(paths["junit"], "musicops-regression", [JUnitCase.check(c.name, c.passed, c.detail) for c in result.checks])
    _copy_audio(result, out_dir / "audio", settings)
    paths["html"].write_text(render_html(result))
    return paths


def _copy_audio(result: Any, folder: Path, settings: Settings) -> None:
    from musicops.store.assets import open_asset_store

    store = open_asset_store(settings)
    folder.mkdir(parents=True, exist_ok=True)
    for row in result.rows:
        for sha in (row.candidate_audio, row.baseline_audio):
            target = folder / f"{sha}.wav"
            if not target.exists():
                with store.local_file(sha, "wav") as source:  # S3: a temporary copy
                    shutil.copyfile(source, target)


def render_html(result: Any) -> str:
    """The people's view: gates, distributions plot, per-prompt audio side by side, provenance."""
    from musicops.reports.plots import b64, distributions_png

    rows = result.rows
    plot = b64(distributions_png([r.clap_baseline for r in rows], [r.clap_candidate for r in rows],
                                 [r.id for r in rows], [r.drift for r in rows]))
    return render("regression.html.j2", result=result, plot=plot)

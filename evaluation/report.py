"""Regression reports: JSON for machines, JUnit XML for CI (one test case per gate), HTML for people."""

from __future__ import annotations

import base64
import html
import io
import json
import shutil
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from musicops.config import Settings


def write_reports(result: Any, out_dir: Path, settings: Settings) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "regression.json", "junit": out_dir / "junit.xml", "html": out_dir / "report.html"}
    paths["json"].write_text(json.dumps(result.to_dict(), indent=2, default=str))
    write_junit(paths["junit"], "musicops-regression", [(c.name, c.passed, c.detail) for c in result.checks])
    _copy_audio(result, out_dir / "audio", settings)
    paths["html"].write_text(render_html(result))
    return paths


def write_junit(path: Path, suite_name: str, cases: list[tuple[str, bool, str]]) -> Path:
    """One <testcase> per gate so CI systems show each gate as a test."""
    failures = sum(1 for _, passed, _ in cases if not passed)
    root = ET.Element("testsuites", tests=str(len(cases)), failures=str(failures))
    suite = ET.SubElement(root, "testsuite", name=suite_name, tests=str(len(cases)), failures=str(failures))
    for name, passed, detail in cases:
        case = ET.SubElement(suite, "testcase", classname=suite_name, name=name)
        if passed:
            ET.SubElement(case, "system-out").text = detail
        else:
            ET.SubElement(case, "failure", message=detail[:500]).text = detail
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path


def _copy_audio(result: Any, folder: Path, settings: Settings) -> None:
    from musicops.store.assets import open_asset_store

    store = open_asset_store(settings)
    folder.mkdir(parents=True, exist_ok=True)
    for row in result.rows:
        for sha in (row.candidate_audio, row.baseline_audio):
            target = folder / f"{sha}.wav"
            if not target.exists():
                shutil.copyfile(store.path_for(sha, "wav"), target)


def _plots(result: Any) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result.rows
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6), dpi=100)
    left.hist([r.clap_baseline for r in rows], bins=12, alpha=0.6, label="baseline")
    left.hist([r.clap_candidate for r in rows], bins=12, alpha=0.6, label="candidate")
    left.set_title("CLAP text-audio score")
    left.set_xlabel("cosine similarity")
    left.legend()
    right.bar([r.id for r in rows], [r.drift for r in rows], color="tab:purple")
    right.set_title("embedding drift per prompt (1 - cos)")
    right.tick_params(axis="x", rotation=60, labelsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def render_html(result: Any) -> str:
    e = html.escape
    verdict = "PASS" if result.passed else "REGRESSION"
    colour = "#1a7f37" if result.passed else "#cf222e"
    gates = "".join(
        f"<tr><td>{e(c.name)}</td><td style='color:{'#1a7f37' if c.passed else '#cf222e'}'>"
        f"{'pass' if c.passed else 'FAIL'}</td><td>{e(_num(c.value))}</td><td>{e(_num(c.threshold))}</td>"
        f"<td>{e(c.detail)}</td></tr>" for c in result.checks)
    rows = "".join(
        f"<tr><td>{e(r.id)}</td><td>{e(r.prompt)}</td><td>{r.seed}</td>"
        f"<td><audio controls preload='none' src='audio/{e(r.candidate_audio)}.wav'></audio><br>"
        f"<small>{e(r.candidate_asset)}</small></td>"
        f"<td><audio controls preload='none' src='audio/{e(r.baseline_audio)}.wav'></audio><br>"
        f"<small>{e(r.baseline_asset)}</small></td>"
        f"<td>{r.clap_candidate:.4f} / {r.clap_baseline:.4f}</td><td>{r.drift:.4f}</td>"
        f"<td>{r.flatness_candidate:.3f} / {r.flatness_baseline:.3f}</td>"
        f"<td>{e(', '.join(r.candidate_failed_checks) or '-')}</td><td>{r.fd_contribution:+.4f}</td></tr>"
        for r in result.rows)
    provenance = "".join(f"<tr><td>{e(str(k))}</td><td>{e(str(v))}</td></tr>" for k, v in result.provenance.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>musicops regression: {e(verdict)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px;vertical-align:top}}th{{background:#f4f4f4}}
audio{{width:220px}}</style></head><body>
<h1>Regression suite: <span style="color:{colour}">{e(verdict)}</span></h1>
<p>Candidate <code>{e(result.candidate)}</code> vs baseline <code>{e(result.baseline)}</code>;
suite {e(result.suite['name'])} v{result.suite['version']} (sha256 {e(result.suite['sha256'][:12])}).</p>
<h2>Gates</h2><table><tr><th>gate</th><th>verdict</th><th>value</th><th>threshold</th><th>detail</th></tr>{gates}</table>
<h2>Distributions</h2><img alt="CLAP score distributions and drift per prompt" src="data:image/png;base64,{_plots(result)}">
<h2>Per prompt</h2><table><tr><th>id</th><th>prompt</th><th>seed</th><th>candidate</th><th>baseline</th>
<th>CLAP cand / base</th><th>drift</th><th>flatness cand / base</th><th>failed checks (cand)</th>
<th>FD contribution</th></tr>{rows}</table>
<h2>Metric provenance</h2><table>{provenance}</table>
</body></html>"""


def _num(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)

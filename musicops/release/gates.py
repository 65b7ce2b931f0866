"""The release gates, run the same way by the kfp release pipeline and by `musicops gate` in CI.

Order: regression -> copyright similarity -> MOS -> licence. A gate that cannot run for a stated
reason (no catalog configured, MOS switched off) is recorded as *skipped*, never as passed; a gate
that fails to run for an unexpected reason is an *error*, and the verdict is "could not evaluate".
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from musicops.config import Settings

PASS, FAIL, SKIPPED, ERROR = "pass", "fail", "skipped", "error"


@dataclass
class GateVerdict:
    name: str
    status: str
    detail: str
    figures: dict[str, Any] = field(default_factory=dict)
    report: str | None = None


@dataclass
class ReleaseReport:
    candidate: str
    baseline: str | None
    gates: list[GateVerdict]
    started_at: str
    out_dir: str | None = None

    @property
    def exit_code(self) -> int:
        """0 pass, 1 a gate failed, 2 could not evaluate."""
        if any(g.status == ERROR for g in self.gates):
            return 2
        return 1 if any(g.status == FAIL for g in self.gates) else 0

    @property
    def passed(self) -> bool:
        return self.exit_code == 0

    def to_dict(self) -> dict[str, Any]:
        return {"candidate": self.candidate, "baseline": self.baseline, "started_at": self.started_at,
                "verdict": {0: "pass", 1: "fail", 2: "could not evaluate"}[self.exit_code],
                "gates": [asdict(g) for g in self.gates]}


def run_release_gates(candidate: str, baseline: str | None = None, *, settings: Settings | None = None,
                      out_dir: str | Path | None = None, suite: str | Path | None = None,
                      catalog: str | None = None, mos_campaign: str | None = None,
                      alias: str = "champion") -> ReleaseReport:
    """Every gate on `candidate` (a registry URI); verdicts are logged to the candidate's version."""
    from musicops.models.loading import resolve_model
    from musicops.registry import configure_mlflow

    settings = configure_mlflow(settings)
    out = Path(out_dir) if out_dir else None
    cand = resolve_model(candidate, settings)  # ModelNotFoundError propagates: could not evaluate
    base = resolve_model(baseline, settings) if baseline else None
    report = ReleaseReport(cand.pinned_uri, base.pinned_uri if base else None, [],
                           datetime.now(UTC).isoformat(timespec="seconds"), str(out) if out else None)
    regression = guard("regression", lambda: regression_gate(cand, base, suite, out, settings))
    report.gates.append(regression)
    report.gates.append(guard("copyright", lambda: copyright_gate(regression, catalog, settings)))
    report.gates.append(guard("mos", lambda: mos_gate(cand, base, mos_campaign, settings)))
    report.gates.append(guard("licence", lambda: licence_gate(cand, alias)))
    if out is not None:
        write_release_outputs(report, out)
    if cand.kind == "registry":
        log_verdicts(report, cand, settings)
    return report


def guard(name: str, run: Any) -> GateVerdict:
    try:
        return run()
    except Exception as exc:  # noqa: BLE001 - an unexpected failure must read as "could not evaluate"
        return GateVerdict(name, ERROR, f"{type(exc).__name__}: {exc}")


def regression_gate(cand: Any, base: Any, suite: Any, out: Path | None, settings: Settings) -> GateVerdict:
    from musicops.evaluation.regression import DEFAULT_SUITE, run_regression

    if base is None:
        return GateVerdict("regression", SKIPPED, "no baseline (first release): nothing to regress against")
    target = out / "regression" if out else None
    result = run_regression(cand.pinned_uri, base.pinned_uri, suite or DEFAULT_SUITE, target, settings)
    failed = [c for c in result.checks if not c.passed]
    detail = "; ".join(f"{c.name}: {c.detail}" for c in (failed or result.checks))
    return GateVerdict("regression", PASS if result.passed else FAIL, detail,
                       {"metrics": result.metrics, "checks": [asdict(c) for c in result.checks],
                        "candidate_assets": [r.candidate_asset for r in result.rows],
                        "outliers": [{"id": r.id, "prompt": r.prompt, "fd_contribution": r.fd_contribution,
                                      "drift": r.drift, "candidate_audio": r.candidate_audio,
                                      "baseline_audio": r.baseline_audio}
                                     for r in sorted(result.rows, key=lambda r: -r.fd_contribution)[:3]]},
                       str(target / "report.html") if target else None)


def copyright_gate(regression: GateVerdict, catalog: str | None, settings: Settings) -> GateVerdict:
    if not catalog:
        return GateVerdict("copyright", SKIPPED, "no catalog configured (--catalog NAME)")
    assets = regression.figures.get("candidate_assets") or []
    if not assets:
        return GateVerdict("copyright", ERROR, "no candidate assets to check (the regression gate did not run)")
    from musicops.evaluation.catalog.assets_gate import gate_assets

    results = gate_assets(catalog, asset_ids=list(assets), settings=settings)
    blocked = [r for r in results if r.blocked]
    detail = (f"{len(blocked)} of {len(results)} assets match catalog works: " + "; ".join(r.reason for r in blocked)
              if blocked else f"none of {len(results)} assets matches a work in catalog {catalog!r}")
    return GateVerdict("copyright", FAIL if blocked else PASS, detail,
                       {"blocked": [r.asset_id for r in blocked], "checked": len(results)})


def mos_gate(cand: Any, base: Any, campaign: str | None, settings: Settings) -> GateVerdict:
    if not campaign:
        return GateVerdict("mos", SKIPPED, "MOS gate switched off for this run (no --mos-campaign)")
    from musicops.evaluation.mos.service import MosService

    service = MosService.from_settings(settings)
    try:
        results = service.results(campaign)
    finally:
        service.close()
    if not results.quorum_met:
        return GateVerdict("mos", FAIL, f"campaign {campaign}: quorum not met", {"campaign": campaign})
    scores = {m.model_version: m for m in results.model_versions}
    mine = scores.get(cand.pinned_uri)
    if mine is None:
        return GateVerdict("mos", ERROR, f"campaign {campaign} has no ratings for {cand.pinned_uri}")
    theirs = scores.get(base.pinned_uri) if base else None
    figures = {"campaign": campaign, "candidate_mos": mine.mos, "candidate_ci": [mine.ci_low, mine.ci_high]}
    if theirs is None:
        return GateVerdict("mos", PASS, f"candidate MOS {mine.mos:.2f} (no baseline ratings)", figures)
    figures.update(baseline_mos=theirs.mos, baseline_ci=[theirs.ci_low, theirs.ci_high])
    worse = mine.ci_high < theirs.mos  # the candidate's whole interval sits below the champion's mean
    return GateVerdict("mos", FAIL if worse else PASS,
                       f"candidate MOS {mine.mos:.2f} [{mine.ci_low:.2f}, {mine.ci_high:.2f}] vs baseline "
                       f"{theirs.mos:.2f}", figures)


def licence_gate(cand: Any, alias: str) -> GateVerdict:
    from musicops.release.promotion import licence_blocks

    licence = cand.tags.get("musicops.licence") if cand.kind == "registry" else None
    reason = licence_blocks(licence, alias)
    if reason:
        return GateVerdict("licence", FAIL, reason, {"licence": licence})
    return GateVerdict("licence", PASS, f"licence {licence or 'unknown'!r} allowed for alias {alias!r}",
                       {"licence": licence})


def verdict_from_json(text: str) -> GateVerdict:
    """Gate verdicts cross kfp step boundaries as JSON strings."""
    return GateVerdict(**json.loads(text))


def verdict_to_json(verdict: GateVerdict) -> str:
    return json.dumps(asdict(verdict), default=str)


def log_verdicts(report: ReleaseReport, cand: Any, settings: Settings) -> None:
    """Tags on the candidate's model version; the full report as an artifact of its run."""
    import tempfile

    from mlflow import MlflowClient

    # Explicit URIs: MLflow's module-level URI (and the env var it writes) may be another store's.
    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri,
                          registry_uri=settings.mlflow_registry_uri or settings.mlflow_tracking_uri)
    for gate in report.gates:
        client.set_model_version_tag(cand.name, cand.version, f"musicops.gate.{gate.name}", gate.status)
    client.set_model_version_tag(cand.name, cand.version, "musicops.release_verdict", report.to_dict()["verdict"])
    if cand.run_id:
        from mlflow.exceptions import MlflowException

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "release.json"
            path.write_text(json.dumps(report.to_dict(), indent=2, default=str))
            folder = f"release/{report.started_at.replace(':', '')}"
            try:
                client.log_artifact(cand.run_id, str(path), folder)
                if report.out_dir and (Path(report.out_dir) / "release.html").is_file():
                    client.log_artifact(cand.run_id, str(Path(report.out_dir) / "release.html"), folder)
            except MlflowException as exc:  # the verdict tags above are the record; the copy is a convenience
                import sys

                print(f"warning: release report not attached to run {cand.run_id}: {exc}", file=sys.stderr)


def write_release_outputs(report: ReleaseReport, out: Path) -> dict[str, Path]:
    """release.json, junit.xml (one test case per gate; skipped gates as <skipped/>), summary.md, release.html."""
    from xml.etree import ElementTree as ET

    out.mkdir(parents=True, exist_ok=True)
    (out / "release.json").write_text(json.dumps(report.to_dict(), indent=2, default=str))
    failures = sum(g.status == FAIL for g in report.gates)
    errors = sum(g.status == ERROR for g in report.gates)
    skipped = sum(g.status == SKIPPED for g in report.gates)
    root = ET.Element("testsuites", tests=str(len(report.gates)), failures=str(failures), errors=str(errors))
    suite = ET.SubElement(root, "testsuite", name="musicops-release-gates", tests=str(len(report.gates)),
                          failures=str(failures), errors=str(errors), skipped=str(skipped))
    for gate in report.gates:
        case = ET.SubElement(suite, "testcase", classname="musicops.release", name=gate.name)
        tag = {FAIL: "failure", ERROR: "error", SKIPPED: "skipped"}.get(gate.status)
        if tag:
            ET.SubElement(case, tag, message=gate.detail[:500]).text = gate.detail
        else:
            ET.SubElement(case, "system-out").text = gate.detail
    ET.ElementTree(root).write(out / "junit.xml", encoding="utf-8", xml_declaration=True)
    (out / "summary.md").write_text(markdown_summary(report))
    (out / "release.html").write_text(release_html(report))
    return {n: out / n for n in ("release.json", "junit.xml", "summary.md", "release.html")}


_ICON = {PASS: "✅", FAIL: "❌", SKIPPED: "⏭️", ERROR: "⚠️"}


def markdown_summary(report: ReleaseReport) -> str:
    """Fit for a pull-request comment."""
    verdict = report.to_dict()["verdict"]
    lines = [f"### musicops release gates: **{verdict}**", "",
             f"Candidate `{report.candidate}` vs baseline `{report.baseline or '-'}`", "",
             "| gate | status | detail |", "|---|---|---|"]
    for gate in report.gates:
        lines.append(f"| {gate.name} | {_ICON[gate.status]} {gate.status} | {gate.detail.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def release_html(report: ReleaseReport) -> str:
    """Gate verdicts, metric deltas with CIs, per-prompt outliers with audio, matches, MOS plot."""
    import html

    e = html.escape
    gates = {g.name: g for g in report.gates}

    def link(gate: GateVerdict) -> str:
        if not (gate.report and report.out_dir):
            return ""
        return f"<a href='{e(Path(gate.report).relative_to(report.out_dir).as_posix())}'>full report</a>"

    rows = "".join(f"<tr><td>{e(g.name)}</td><td>{_ICON[g.status]} {e(g.status)}</td><td>{e(g.detail)}</td>"
                   f"<td>{link(g)}</td></tr>" for g in report.gates)
    sections = []
    metrics = gates["regression"].figures.get("metrics") if "regression" in gates else None
    if metrics:
        deltas = "".join(
            f"<tr><td>{e(label)}</td><td>{m['mean_delta']:+.4f}</td><td>{m['ci_low']:+.4f} .. {m['ci_high']:+.4f}</td></tr>"
            for label, m in (("CLAP text-audio score", metrics["clap"]), ("log spectral flatness", metrics["flatness"])))
        sections.append(f"<h2>Metric deltas (candidate - baseline, 95% bootstrap CI)</h2><table><tr><th>metric</th>"
                        f"<th>mean delta</th><th>CI</th></tr>{deltas}</table><p>Fréchet distance to the baseline's "
                        f"outputs {metrics['frechet_distance']:.4g}; drift median {metrics['drift_median']:.4g}, "
                        f"max {metrics['drift_max']:.4g}.</p>")
        outliers = gates["regression"].figures.get("outliers") or []
        if outliers:
            cells = "".join(
                f"<tr><td>{e(o['id'])}</td><td>{e(o['prompt'])}</td><td>{o['fd_contribution']:+.4g}</td>"
                f"<td>{o['drift']:.4g}</td><td><audio controls preload='none' src='regression/audio/"
                f"{e(o['candidate_audio'])}.wav'></audio></td><td><audio controls preload='none' "
                f"src='regression/audio/{e(o['baseline_audio'])}.wav'></audio></td></tr>" for o in outliers)
            sections.append("<h2>Per-prompt outliers (largest Fréchet contributions)</h2><table><tr><th>id</th>"
                            "<th>prompt</th><th>FD contribution</th><th>drift</th><th>candidate</th><th>baseline</th>"
                            f"</tr>{cells}</table>")
    if "copyright" in gates and gates["copyright"].status != SKIPPED:
        sections.append(f"<h2>Similarity matches</h2><p>{e(gates['copyright'].detail)}</p>")
    mos = gates["mos"].figures if "mos" in gates else {}
    if mos.get("candidate_mos") is not None:
        sections.append(f"<h2>MOS</h2><img alt='MOS with 95% CI' src='data:image/png;base64,{_mos_plot(mos)}'>")
    verdict = e(report.to_dict()["verdict"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>musicops release: {verdict}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1300px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top;font-size:13px}}audio{{width:200px}}</style></head><body>
<h1>Release gates: {verdict}</h1>
<p>Candidate <code>{e(report.candidate)}</code> vs baseline <code>{e(report.baseline or "-")}</code>,
{e(report.started_at)}</p>
<table><tr><th>gate</th><th>status</th><th>detail</th><th></th></tr>{rows}</table>
{"".join(sections)}</body></html>"""


def _mos_plot(mos: dict[str, Any]) -> str:
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, means, lows, highs = ["candidate"], [mos["candidate_mos"]], [mos["candidate_ci"][0]], [mos["candidate_ci"][1]]
    if mos.get("baseline_mos") is not None:
        labels.append("baseline")
        means.append(mos["baseline_mos"])
        lows.append(mos["baseline_ci"][0])
        highs.append(mos["baseline_ci"][1])
    fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
    errors = [[m - (lo if lo == lo else m) for m, lo in zip(means, lows, strict=True)],
              [(hi if hi == hi else m) - m for m, hi in zip(means, highs, strict=True)]]
    ax.errorbar(labels, means, yerr=errors, fmt="o", capsize=6)
    ax.set_ylabel("MOS")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")

"""The release gates, run the same way by the kfp release pipeline and by `musicops gate` in CI.

Order: regression -> copyright similarity -> MOS -> licence. A gate that cannot run for a stated
reason (no catalog configured, MOS switched off) is recorded as *skipped*, never as passed; a gate
that fails to run for an unexpected reason is an *error*, and the verdict is "could not evaluate".

The regression gate cannot be fooled by the choice of baseline: the baseline defaults to the
alias's current holder, a candidate is never its own baseline (refused), and absolute floors that
no baseline can lower apply always, also on a first release with no baseline at all. An override
may overrule a gate that ran and failed, never one that could not evaluate.

Required gates: a gate in the required set that is skipped fails the release ("required but
skipped", exit 1), so CI cannot go green with the copyright or MOS gate silently off. The default
set is `DEFAULT_REQUIRED` (the regression gate, the one that always has what it needs); every report
states the set in force. An override cannot stand in for a required gate that never ran.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from musicops.config import Settings
from musicops.errors import MusicopsError

PASS, FAIL, SKIPPED, ERROR = "pass", "fail", "skipped", "error"
VERDICTS = {0: "pass", 1: "fail", 2: "could not evaluate"}
GATES = ("regression", "copyright", "mos", "licence")
DEFAULT_REQUIRED = ("regression",)


def parse_required(value: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """The required gate set from "a,b" or a list; None or empty means `DEFAULT_REQUIRED`; "all" all four.

    Unknown names are refused (a typo must not leave a gate unrequired without anyone noticing)."""
    if value is None:
        return DEFAULT_REQUIRED
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [n.strip().lower() for n in items if n.strip()]
    if names == ["all"]:
        return GATES
    unknown = sorted(set(names) - set(GATES))
    if unknown:
        raise ReleaseRefused(f"unknown gate(s) in --require: {', '.join(unknown)}; known: {', '.join(GATES)} "
                             "(or 'all')")
    return tuple(g for g in GATES if g in names) or DEFAULT_REQUIRED


class ReleaseRefused(MusicopsError, ValueError):
    """The release will not proceed as asked (e.g. the candidate is its own baseline): nothing moves."""


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
    # Set by `release` once the gates have run: what happened to the alias, and any override.
    promotion: dict[str, Any] | None = None
    override: dict[str, Any] | None = None
    final_code: int | None = None
    model: Any = field(default=None, repr=False)  # the resolved candidate (for tagging)
    required: tuple[str, ...] = DEFAULT_REQUIRED

    @property
    def exit_code(self) -> int:
        """The gates' outcome: 0 pass, 1 a gate failed (or a required gate was skipped), 2 could not evaluate."""
        if any(g.status == ERROR for g in self.gates):
            return 2
        return 1 if self.failed_gates() else 0

    def skipped_required(self) -> list[str]:
        """Required gates that did not run: each fails the release."""
        return [g.name for g in self.gates if g.status == SKIPPED and g.name in self.required]

    def is_required(self, gate: GateVerdict) -> bool:
        return gate.name in self.required

    @property
    def outcome_code(self) -> int:
        """What the command exits with: the gates' outcome, or 0 after a recorded override promoted."""
        return self.exit_code if self.final_code is None else self.final_code

    @property
    def passed(self) -> bool:
        return self.exit_code == 0

    @property
    def suite(self) -> dict[str, Any] | None:
        """The regression suite the verdict was measured with (name, version, sha256, floors)."""
        for gate in self.gates:
            if gate.name == "regression" and gate.figures.get("suite"):
                return gate.figures["suite"]
        return None

    @property
    def warning(self) -> str | None:
        """The random-embedder warning of the suite the regression gate measured with, if any."""
        from musicops.evaluation.regression import embedder_warning

        return embedder_warning(self.suite)

    def failed_gates(self) -> list[str]:
        """Gates that failed, and required gates that were skipped."""
        return [g.name for g in self.gates if g.status == FAIL or (g.status == SKIPPED and g.name in self.required)]

    def headline(self, gate: GateVerdict) -> str:
        """One gate in one phrase, e.g. "copyright: required but skipped (no catalog configured ...)"."""
        if gate.status == SKIPPED and self.is_required(gate):
            return f"{gate.name}: required but skipped ({gate.detail})"
        return f"{gate.name}: {gate.status} ({gate.detail})"

    def to_dict(self) -> dict[str, Any]:
        head = {"warning": self.warning} if self.warning else {}
        return {**head, "candidate": self.candidate, "baseline": self.baseline, "started_at": self.started_at,
                "verdict": VERDICTS[self.exit_code], "exit_code": self.outcome_code, "suite": self.suite,
                "required_gates": list(self.required), "skipped_required": self.skipped_required(),
                "skipped": [g.name for g in self.gates if g.status == SKIPPED],
                "promotion": self.promotion, "override": self.override,
                "gates": [{**asdict(g), "required": self.is_required(g)} for g in self.gates]}


def resolve_pair(candidate: str, baseline: str | None, alias: str, settings: Settings) -> tuple[Any, Any]:
    """Resolve candidate and baseline; the baseline defaults to the alias's current holder.

    Refuses a candidate that is its own baseline: every relative check would pass by construction.
    """
    from musicops.models.loading import resolve_model
    from musicops.registry import ModelNotFoundError

    cand = resolve_model(candidate, settings)  # ModelNotFoundError propagates: could not evaluate
    if baseline is None and cand.kind == "registry":
        try:
            base = resolve_model(f"models:/{cand.name}@{alias}", settings)
        except ModelNotFoundError:
            base = None  # first release: nothing holds the alias yet; the absolute floors still apply
    else:
        base = resolve_model(baseline, settings) if baseline else None
    if base is not None and base.pinned_uri == cand.pinned_uri:
        given = baseline or f"models:/{cand.name}@{alias} (the default baseline)"
        raise ReleaseRefused(f"the candidate {cand.pinned_uri} is its own baseline: {given} resolves to the same "
                             "version, and a model compared with itself passes every relative check. Gate it "
                             f"against another version (by default the current @{alias}); nothing was evaluated "
                             "or moved")
    return cand, base


def run_release_gates(candidate: str, baseline: str | None = None, *, settings: Settings | None = None,
                      out_dir: str | Path | None = None, suite: str | Path | None = None,
                      catalog: str | None = None, mos_campaign: str | None = None,
                      alias: str = "champion", record: bool = True,
                      required: str | list[str] | tuple[str, ...] | None = None) -> ReleaseReport:
    """Every gate on `candidate` (a registry URI); with `record`, reports are written and verdicts logged.

    `baseline` None means the current holder of `alias` (none on a first release). `required`: the
    gates that must run (see `parse_required`); a required gate that is skipped fails the release.
    """
    from musicops.registry import configure_mlflow

    settings = configure_mlflow(settings)
    needed = parse_required(required if required is not None else settings.release_require)
    out = Path(out_dir) if out_dir else None
    cand, base = resolve_pair(candidate, baseline, alias, settings)
    report = ReleaseReport(cand.pinned_uri, base.pinned_uri if base else None, [],
                           datetime.now(UTC).isoformat(timespec="seconds"), str(out) if out else None, model=cand,
                           required=needed)
    from musicops import progress

    progress.stage(f"gate 1/4 regression: {cand.pinned_uri} vs {base.pinned_uri if base else 'absolute floors only'}")
    regression = guard("regression", lambda: regression_gate(cand, base, suite, out, settings))
    report.gates.append(regression)
    progress.stage(f"gate 2/4 copyright: {'catalog ' + catalog if catalog else 'no catalog'}")
    report.gates.append(guard("copyright", lambda: copyright_gate(regression, catalog, settings)))
    progress.stage(f"gate 3/4 mos: {'campaign ' + mos_campaign if mos_campaign else 'no campaign'}")
    report.gates.append(guard("mos", lambda: mos_gate(cand, base, mos_campaign, settings)))
    progress.stage("gate 4/4 licence")
    report.gates.append(guard("licence", lambda: licence_gate(cand, alias)))
    if record:
        record_release(report, settings)
    return report


def release(candidate: str, baseline: str | None = None, *, promote_to: str | None = None,
            override_reason: str | None = None, user: str | None = None, settings: Settings | None = None,
            out_dir: str | Path | None = None, suite: str | Path | None = None, catalog: str | None = None,
            mos_campaign: str | None = None,
            required: str | list[str] | tuple[str, ...] | None = None) -> ReleaseReport:
    """Gates, then the alias decision, then the record: what `musicops gate` runs.

    Passed -> promote. Failed + override reason -> promote, exit 0, the override recorded (reason,
    user, time, failed gates). Could not evaluate, or a required gate skipped -> nothing moves, and an
    override is refused: an override overrules a measured failure, never a missing measurement.
    """
    from musicops.registry import configure_mlflow
    from musicops.release.promotion import PromotionError, promote

    if override_reason is not None and not override_reason.strip():
        raise ReleaseRefused("--override-reason needs a non-empty reason")
    if override_reason and not promote_to:
        raise ReleaseRefused("--override-reason only applies with --promote ALIAS")
    settings = configure_mlflow(settings)
    report = run_release_gates(candidate, baseline, settings=settings, out_dir=out_dir, suite=suite,
                               catalog=catalog, mos_campaign=mos_campaign, alias=promote_to or "champion",
                               record=False, required=required)
    code = report.exit_code
    if promote_to:
        report.promotion = {"alias": promote_to, "promoted": False, "previous": None, "detail": ""}
        errored = [g.name for g in report.gates if g.status == ERROR]
        cand = report.model
        if code == 2:
            report.promotion["detail"] = (
                f"override refused: gate(s) {', '.join(errored)} could not evaluate; an override may overrule a "
                f"gate that ran and failed, never one that did not run. @{promote_to} unchanged"
                if override_reason else f"could not evaluate ({', '.join(errored)}): @{promote_to} unchanged")
            report.final_code = 2
        elif code == 1 and not override_reason:
            report.promotion["detail"] = f"gate(s) {', '.join(report.failed_gates())} failed: @{promote_to} unchanged"
        elif code == 1 and report.skipped_required():
            report.promotion["detail"] = (
                f"override refused: required gate(s) {', '.join(report.skipped_required())} were skipped; an "
                f"override may overrule a gate that ran and failed, never one that did not run. @{promote_to} unchanged")
        elif cand.kind != "registry":
            report.promotion["detail"] = f"{cand.pinned_uri} is not a registry version: nothing to promote"
            report.final_code = 2
        else:
            failed = report.failed_gates()
            try:
                done = promote(cand.name, str(cand.version), settings, alias=promote_to, gates_passed=code == 0,
                               override_reason=override_reason if code == 1 else None, user=user,
                               failed_gates=failed if code == 1 else None)
            except PromotionError as exc:
                report.promotion["detail"] = f"not promoted: {exc}"
                report.final_code = 1
            else:
                report.promotion.update(promoted=True, previous=done.previous,
                                        detail=f"{cand.pinned_uri} is @{promote_to}"
                                        + (f" (previous: v{done.previous})" if done.previous else ""))
                report.override = done.override
                report.final_code = 0
    record_release(report, settings)
    return report


def record_release(report: ReleaseReport, settings: Settings) -> None:
    """Reports into `out_dir` (when set) and verdict tags on the candidate's registry version."""
    if report.out_dir is not None:
        write_release_outputs(report, Path(report.out_dir))
    if report.model is not None and report.model.kind == "registry":
        log_verdicts(report, report.model, settings)


def guard(name: str, run: Any) -> GateVerdict:
    try:
        return run()
    except Exception as exc:  # noqa: BLE001 - an unexpected failure must read as "could not evaluate"
        return GateVerdict(name, ERROR, f"{type(exc).__name__}: {exc}")


def regression_gate(cand: Any, base: Any, suite: Any, out: Path | None, settings: Settings) -> GateVerdict:
    """Absolute floors always; with a baseline, also the relative comparison."""
    from musicops.evaluation.regression import DEFAULT_SUITE, run_floors, run_regression

    if base is None:
        floors = run_floors(cand.pinned_uri, suite or DEFAULT_SUITE, settings)
        if out is not None:
            (out / "regression").mkdir(parents=True, exist_ok=True)
            (out / "regression" / "floors.json").write_text(json.dumps(floors.to_dict(), indent=2, default=str))
        detail = "first release (no baseline): absolute floors only; " + _summary(floors.checks) + _ignored(floors.suite)
        return GateVerdict("regression", PASS if floors.passed else FAIL, detail,
                           {"suite": floors.suite, "floors": floors.metrics,
                            "checks": [asdict(c) for c in floors.checks],
                            "candidate_assets": floors.candidate_assets})
    target = out / "regression" if out else None
    result = run_regression(cand.pinned_uri, base.pinned_uri, suite or DEFAULT_SUITE, target, settings)
    detail = _summary(result.checks) + _ignored(result.suite)
    return GateVerdict("regression", PASS if result.passed else FAIL, detail,
                       {"suite": result.suite, "metrics": result.metrics, "checks": [asdict(c) for c in result.checks],
                        "candidate_assets": [r.candidate_asset for r in result.rows],
                        "outliers": [{"id": r.id, "prompt": r.prompt, "fd_contribution": r.fd_contribution,
                                      "drift": r.drift, "candidate_audio": r.candidate_audio,
                                      "baseline_audio": r.baseline_audio}
                                     for r in sorted(result.rows, key=lambda r: -r.fd_contribution)[:3]]},
                       str(target / "report.html") if target else None)


def _summary(checks: list[Any]) -> str:
    """Failed checks in full; on a pass, the floors in one phrase and the comparisons in full."""
    failed = [c for c in checks if not c.passed]
    if failed:
        return "; ".join(f"{c.name}: {c.detail}" for c in failed)
    floors = [c for c in checks if c.name.startswith("floor_")]
    shown = [f"{len(floors)} absolute floors pass ("
             + ", ".join(f"{c.name.removeprefix('floor_')} {c.value:.2g}" for c in floors) + ")"]
    return "; ".join(shown + [f"{c.name}: {c.detail}" for c in checks if not c.name.startswith("floor_")])


def _ignored(suite: dict[str, Any]) -> str:
    ignored = suite.get("floors_ignored") or {}
    if not ignored:
        return ""
    return ("; the suite file's floors looser than musicops' built-in minimums were ignored ("
            + ", ".join(f"{k}={v:g}" for k, v in sorted(ignored.items())) + ")")


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
    if not licence or licence.strip().lower() == "unknown":
        # Nothing to check against: recorded as skipped (never as passed); `--require licence` fails it.
        return GateVerdict("licence", SKIPPED, f"no licence recorded on {cand.pinned_uri} (version tag "
                           "musicops.licence; `models import --licence` sets it)", {"licence": licence or "unknown"})
    return GateVerdict("licence", PASS, f"licence {licence!r} allowed for alias {alias!r}", {"licence": licence})


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
    client.set_model_version_tag(cand.name, cand.version, "musicops.release_baseline", report.baseline or "none")
    suite = report.suite
    if suite:
        client.set_model_version_tag(cand.name, cand.version, "musicops.release_suite_sha256", suite["sha256"])
        client.set_model_version_tag(cand.name, cand.version, "musicops.release_suite",
                                     f"{suite['name']} v{suite['version']}")
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
    """release.json, junit.xml (one test case per gate; skipped gates as <skipped/>, a required one as a
    failure), summary.md, release.html."""
    from musicops.reports import JUnitCase, write_junit
    from musicops.reports.junit import Outcome

    out.mkdir(parents=True, exist_ok=True)
    (out / "release.json").write_text(json.dumps(report.to_dict(), indent=2, default=str))
    outcome: dict[str, Outcome] = {FAIL: "failure", ERROR: "error", SKIPPED: "skipped"}
    missing = report.skipped_required()
    write_junit(out / "junit.xml", "musicops-release-gates",
                [JUnitCase(g.name, "failure", f"required but skipped: {g.detail}") if g.name in missing
                 else JUnitCase(g.name, outcome.get(g.status, "passed"), g.detail) for g in report.gates],
                classname="musicops.release")
    (out / "summary.md").write_text(markdown_summary(report))
    (out / "release.html").write_text(release_html(report))
    return {n: out / n for n in ("release.json", "junit.xml", "summary.md", "release.html")}


_ICON = {PASS: "✅", FAIL: "❌", SKIPPED: "⏭️", ERROR: "⚠️"}


def markdown_summary(report: ReleaseReport) -> str:
    """Fit for a pull-request comment."""
    verdict = report.to_dict()["verdict"]
    lines = [f"> ⚠️ **{report.warning}**", ""] if report.warning else []
    lines += [f"### musicops release gates: **{verdict}**", ""]
    missing = report.skipped_required()
    skipped = [g.name for g in report.gates if g.status == SKIPPED and g.name not in missing]
    if missing:
        lines += [f"> ❌ **Required but skipped: {', '.join(missing)}** (a required gate that did not run fails the "
                  "release)", ""]
    if skipped:
        lines += [f"> ⏭️ **Skipped (not required): {', '.join(skipped)}**: this verdict says nothing about "
                  + ("them" if len(skipped) > 1 else "it"), ""]
    lines += [f"Candidate `{report.candidate}` vs baseline `{report.baseline or '- (first release: absolute floors only)'}`",
              "", f"Required gates: {', '.join(report.required)}"
              + (" (the default; `--require` adds more)" if report.required == DEFAULT_REQUIRED else ""), ""]
    if report.suite:
        lines += [f"Suite `{report.suite['name']}` v{report.suite['version']}, sha256 `{report.suite['sha256']}`", ""]
    lines += ["| gate | status | detail |", "|---|---|---|"]
    for gate in report.gates:
        status = "required but skipped" if gate.name in missing else gate.status
        icon = _ICON[FAIL] if gate.name in missing else _ICON[gate.status]
        lines.append(f"| {gate.name} | {icon} {status} | {gate.detail.replace('|', '/')} |")
    if report.override:
        o = report.override
        lines += ["", f"**Overridden** by {o['by']} at {o['at']}: failed gate(s) {', '.join(o['failed_gates']) or '-'}; "
                  f"reason: {o['reason']}"]
    if report.promotion:
        lines += ["", f"Promotion: {report.promotion['detail']}"]
    return "\n".join(lines) + "\n"


def release_html(report: ReleaseReport) -> str:
    """Gate verdicts, metric deltas with CIs, per-prompt outliers with audio, matches, MOS plot."""
    from musicops.reports import render

    gates = {g.name: g for g in report.gates}
    links = {g.name: Path(g.report).relative_to(report.out_dir).as_posix() if g.report and report.out_dir else None
             for g in report.gates}
    regression = gates["regression"].figures if "regression" in gates else {}
    metrics = regression.get("metrics")
    copyright_gate = gates.get("copyright")
    mos = gates["mos"].figures if "mos" in gates else {}
    return render("release.html.j2", report=report, verdict=report.to_dict()["verdict"], icons=_ICON, links=links,
                  missing=report.skipped_required(),
                  skipped=[g.name for g in report.gates if g.status == SKIPPED and g.name not in report.required],
                  metrics=metrics if metrics and "clap" in metrics else None,
                  outliers=regression.get("outliers") or [],
                  matches=copyright_gate.detail if copyright_gate and copyright_gate.status != SKIPPED else None,
                  mos_plot=_mos_plot(mos) if mos.get("candidate_mos") is not None else None)


def _mos_plot(mos: dict[str, Any]) -> str:
    """The MOS gate's figures (candidate, and baseline when rated) as the shared error-bar plot."""
    from musicops.reports.plots import MosPoint, b64, mos_errorbar_png

    points = [MosPoint("candidate", mos["candidate_mos"], *mos["candidate_ci"])]
    if mos.get("baseline_mos") is not None:
        points.append(MosPoint("baseline", mos["baseline_mos"], *mos["baseline_ci"]))
    return b64(mos_errorbar_png(points))

"""kfp components for the release pipeline: one step per gate, then promote.

Each gate step returns its verdict as JSON; `promote_step` moves `champion` only if no gate failed
(skipped gates are recorded as skipped, never as passed) and logs every verdict to the candidate.
An empty baseline means the alias's current holder, as in `musicops gate`; the regression gate's
absolute floors apply with or without one. The pipeline has no override: that is `musicops gate`'s.
"""

# No `from __future__ import annotations` here: kfp reads the real annotation objects.
from kfp import dsl
from kfp.dsl import HTML, Output

from musicops.components.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def regression_gate_step(candidate: str, baseline: str, alias: str, suite_path: str, musicops_home: str,
                         mlflow_tracking_uri: str, report: Output[HTML]) -> str:
    """Batch-generates the suite with candidate and baseline (cached), embeds, compares, applies the floors.

    Empty `baseline` means the alias's current holder; a candidate that is its own baseline is an error.
    """
    import tempfile
    from pathlib import Path

    from musicops.components.runtime import component_settings
    from musicops.release.gates import guard, regression_gate, resolve_pair, verdict_to_json

    settings = component_settings(musicops_home, mlflow_tracking_uri)

    def run(tmp: str) -> object:  # kfp ships only this function's source: helpers live inside
        cand, base = resolve_pair(candidate, baseline or None, alias, settings)
        return regression_gate(cand, base, suite_path or None, Path(tmp), settings)

    with tempfile.TemporaryDirectory() as tmp:
        verdict = guard("regression", lambda: run(tmp))
        page = Path(tmp) / "regression" / "report.html"
        with open(report.path, "w") as handle:
            handle.write(page.read_text() if page.is_file() else f"<p>{verdict.detail}</p>")
    return verdict_to_json(verdict)


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def copyright_gate_step(regression: str, catalog: str, musicops_home: str, mlflow_tracking_uri: str) -> str:
    from musicops.components.runtime import component_settings
    from musicops.release.gates import copyright_gate, guard, verdict_from_json, verdict_to_json

    settings = component_settings(musicops_home, mlflow_tracking_uri)
    previous = verdict_from_json(regression)
    return verdict_to_json(guard("copyright", lambda: copyright_gate(previous, catalog or None, settings)))


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def mos_gate_step(candidate: str, baseline: str, alias: str, mos_campaign: str, musicops_home: str,
                  mlflow_tracking_uri: str) -> str:
    """Empty `mos_campaign` switches the gate off for this run: recorded as skipped."""
    from musicops.components.runtime import component_settings
    from musicops.release.gates import guard, mos_gate, resolve_pair, verdict_to_json

    settings = component_settings(musicops_home, mlflow_tracking_uri)
    return verdict_to_json(guard("mos", lambda: mos_gate(*resolve_pair(candidate, baseline or None, alias, settings),
                                                         mos_campaign or None, settings)))


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def licence_gate_step(candidate: str, alias: str, musicops_home: str, mlflow_tracking_uri: str) -> str:
    from musicops.components.runtime import component_settings
    from musicops.models.loading import resolve_model
    from musicops.release.gates import guard, licence_gate, verdict_to_json

    settings = component_settings(musicops_home, mlflow_tracking_uri)
    cand = resolve_model(candidate, settings)
    return verdict_to_json(guard("licence", lambda: licence_gate(cand, alias)))


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def promote_step(candidate: str, baseline: str, alias: str, regression: str, copyright: str, mos: str,
                 licence: str, musicops_home: str, mlflow_tracking_uri: str, require: str = "") -> str:
    """Logs every verdict to the candidate's version; promotes only when no gate failed or errored and
    no required gate (`require`, else MUSICOPS_RELEASE_REQUIRE, else regression) was skipped."""
    from datetime import UTC, datetime

    from musicops.components.runtime import component_settings
    from musicops.models.loading import resolve_model
    from musicops.release.gates import (
        ReleaseRefused,
        ReleaseReport,
        log_verdicts,
        parse_required,
        resolve_pair,
        verdict_from_json,
    )
    from musicops.release.promotion import promote

    settings = component_settings(musicops_home, mlflow_tracking_uri)
    try:
        cand, base = resolve_pair(candidate, baseline or None, alias, settings)
    except ReleaseRefused:  # the regression step already recorded this as an error: nothing will move
        cand, base = resolve_model(candidate, settings), None
    gates = [verdict_from_json(v) for v in (regression, copyright, mos, licence)]
    report = ReleaseReport(cand.pinned_uri, base.pinned_uri if base else None, gates,
                           datetime.now(UTC).isoformat(timespec="seconds"),
                           required=parse_required(require or settings.release_require))
    log_verdicts(report, cand, settings)
    for gate in gates:
        print(report.headline(gate))
    if not report.passed:
        return f"blocked: {report.to_dict()['verdict']}"
    done = promote(cand.name, cand.version, settings, alias=alias)
    return f"promoted models:/{done.name}/{done.version} to @{done.alias}"

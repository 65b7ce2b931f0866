"""The required-gate set: parsing, the verdict it implies, and how reports show skipped gates (no model needed)."""

from __future__ import annotations

import pytest

from musicops.release.gates import (
    DEFAULT_REQUIRED,
    ERROR,
    FAIL,
    PASS,
    SKIPPED,
    GateVerdict,
    ReleaseRefused,
    ReleaseReport,
    markdown_summary,
    parse_required,
)


def _report(required: tuple[str, ...], **status: str) -> ReleaseReport:
    gates = [GateVerdict(name, status.get(name, PASS), f"{name} detail") for name in
             ("regression", "copyright", "mos", "licence")]
    return ReleaseReport("models:/m/2", "models:/m/1", gates, "2026-12-01T00:00:00+00:00", required=required)


def test_parse_required() -> None:
    assert parse_required(None) == DEFAULT_REQUIRED == ("regression",)
    assert parse_required("") == DEFAULT_REQUIRED
    assert parse_required(" Licence, copyright ") == ("copyright", "licence")  # canonical order
    assert parse_required("all") == ("regression", "copyright", "mos", "licence")
    assert parse_required(["mos"]) == ("mos",)
    with pytest.raises(ReleaseRefused, match="unknown gate.*copyrite"):
        parse_required("regression,copyrite")


def test_a_skipped_gate_fails_only_when_required() -> None:
    relaxed = _report(DEFAULT_REQUIRED, copyright=SKIPPED, mos=SKIPPED)
    assert relaxed.exit_code == 0 and relaxed.skipped_required() == []
    strict = _report(("regression", "copyright"), copyright=SKIPPED, mos=SKIPPED)
    assert strict.exit_code == 1 and strict.failed_gates() == ["copyright"]
    assert strict.headline(strict.gates[1]) == "copyright: required but skipped (copyright detail)"
    assert strict.to_dict()["skipped"] == ["copyright", "mos"]
    assert [g["required"] for g in strict.to_dict()["gates"]] == [True, True, False, False]
    # could-not-evaluate still outranks a skipped requirement
    assert _report(("copyright",), copyright=SKIPPED, mos=ERROR).exit_code == 2
    assert _report(DEFAULT_REQUIRED, licence=FAIL).exit_code == 1


def test_summary_puts_skipped_gates_first() -> None:
    text = markdown_summary(_report(("regression", "mos"), copyright=SKIPPED, mos=SKIPPED))
    lines = text.splitlines()
    assert lines[0] == "### musicops release gates: **fail**"
    assert "Required but skipped: mos" in lines[2] and "Skipped (not required): copyright" in lines[4]
    assert "| mos | ❌ required but skipped |" in text and "Required gates: regression, mos" in text


def test_reports_lead_with_a_warning_when_clap_weights_are_random(tmp_path) -> None:
    import json

    from musicops.evaluation.regression import DEFAULT_SUITE, load_suite

    info = load_suite(DEFAULT_SUITE).info()  # the shipped suite uses the random-init clap-tiny preset
    assert info["embedder"] == "clap-tiny" and info["embedder_random_weights"] is True
    report = _report(DEFAULT_REQUIRED)
    report.gates[0].figures["suite"] = info
    assert markdown_summary(report).splitlines()[0].startswith("> ⚠️ **WARNING: CLAP scores here come from 'clap-tiny'")
    assert next(iter(report.to_dict())) == "warning"
    from musicops.release.gates import release_html

    assert release_html(report).split("<h1>")[0].count("random weights") == 1
    real = json.loads((DEFAULT_SUITE).read_text())
    real.update(embedder="clap", embedder_path="models:/clap-real/1")
    (tmp_path / "suite.json").write_text(json.dumps(real))
    suite = load_suite(tmp_path / "suite.json")
    assert suite.embedder_path == "models:/clap-real/1"  # a URI is kept, not resolved against the folder
    report.gates[0].figures["suite"] = suite.info()
    assert report.warning is None and "WARNING" not in markdown_summary(report)

"""The copyright gate on real music (public-domain scores rendered through FluidSynth, `conftest.py`):
copies under every transform are found with the right work and offset, calibration draws its
negatives from the catalog itself and states a bounded FPR, a channel that does not separate is left
out, synthetic negatives are refused, and `catalog search --json` answers every file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from musicops.audio.io import read_audio
from musicops.cli import app
from musicops.config import get_settings
from musicops.evaluation.catalog.calibrate import (
    CalibrationError,
    calibrate,
    clopper_pearson_upper,
    roc_auc,
)
from musicops.evaluation.catalog.gate import check_asset
from musicops.evaluation.catalog.store import add_works, load_catalog


@pytest.fixture
def catalog(realset):
    return add_works(realset.catalog_dir, "real", get_settings(), embedder=None)


@pytest.mark.slow  # FluidSynth renders (realset)
def test_every_copy_is_found_with_its_work_and_offset(catalog, realset) -> None:
    """Uncalibrated defaults: literal, tempo- and pitch-changed copies blocked, attributed, located."""
    for q in realset.queries:
        if q.kind != "copy" or q.transform == "mix":
            continue
        audio = read_audio(realset.queries_dir / q.file)
        verdict = check_asset(catalog, audio.samples, audio.sample_rate)
        best = verdict.top[0]
        assert verdict.blocked, (q, verdict.reason)
        assert Path(best.path).name == q.work, (q, best)
        assert abs(best.offset_s - q.offset_s) <= 1.0, (q, best)
        if q.transform == "pitch":
            assert best.channel == "alignment" and best.semitones == int(q.param), (q, best)


@pytest.mark.slow  # FluidSynth renders (realset)
def test_calibration_states_a_bounded_fpr_from_catalog_negatives(catalog, realset) -> None:
    report = calibrate(catalog, get_settings(), target_fpr=0.05, n_per_transform=6, n_negatives=120)
    assert report.negative_sources == {"catalog leave-one-work-out": 120}
    assert not report.synthetic_catalog and not report.warnings
    assert report.n_negatives + report.n_fit_negatives == 120 and report.n_negatives >= 40
    false_positives = round(report.fpr * report.n_negatives)
    assert report.fpr_upper_bound == pytest.approx(clopper_pearson_upper(false_positives, report.n_negatives),
                                                   abs=1e-4)
    assert report.fpr_upper_bound > report.fpr
    assert "alignment" in report.channels
    channels = {c.channel: c for c in report.channel_report}
    assert channels["alignment"].used and channels["alignment"].auc >= 0.95
    assert channels["embedding"].reason == "catalog has no embeddings"
    assert {r.transform for r in report.rows} == {"shift", "gain", "noise", "reencode", "tempo", "pitch", "mix"}
    assert report.tpr >= 0.9
    markdown = report.to_markdown()
    assert "95 % upper bound" in markdown and "| alignment |" in markdown

    saved = load_catalog("real")
    assert saved.calibrated and saved.threshold == pytest.approx(report.threshold)
    assert saved.info["calibration"]["fpr_upper_bound"] == report.fpr_upper_bound

    # Known-original music from a folder joins the null; a folder of synthetic clips is refused.
    originals = Path(get_settings().home) / "originals"
    originals.mkdir()
    for q in realset.queries:
        if q.kind == "negative" and q.split == "fit":
            shutil.copy(realset.queries_dir / q.file, originals / q.file)
    with_folder = calibrate(catalog, get_settings(), target_fpr=0.05, n_per_transform=4, n_negatives=90,
                            negatives_dir=originals, save=False)
    assert with_folder.negative_sources[str(originals)] == 30
    from musicops.datasets.synth import synthesize

    synthetic = Path(get_settings().home) / "synthetic"
    synthesize(synthetic, n=3, seed=1, duration_s=12.0)
    with pytest.raises(CalibrationError, match="synthetic"):
        calibrate(catalog, get_settings(), target_fpr=0.05, n_negatives=90, negatives_dir=synthetic, save=False)


@pytest.mark.slow  # FluidSynth renders (realset)
def test_random_init_embedder_is_left_out_for_not_separating(realset) -> None:
    catalog = add_works(realset.catalog_dir, "real-clap", get_settings(), embedder="clap-tiny")
    report = calibrate(catalog, get_settings(), target_fpr=0.05, n_per_transform=4, n_negatives=90)
    embedding = next(c for c in report.channel_report if c.channel == "embedding")
    assert not embedding.used and embedding.auc < 0.8
    assert "does not separate" in embedding.reason and "embedding" not in report.channels

    # A search with the calibrated fusion never builds the embedder it leaves out.
    loaded = load_catalog("real-clap")
    query = next(q for q in realset.queries if q.kind == "copy" and q.transform == "shift")
    audio = read_audio(realset.queries_dir / query.file)
    verdict = check_asset(loaded, audio.samples, audio.sample_rate)
    assert verdict.blocked and verdict.top[0].embedding_score is None and loaded._embedder is None


@pytest.mark.slow  # ~15 s calibration
def test_synthetic_catalog_is_flagged(tmp_path) -> None:
    from musicops.datasets.synth import synthesize

    synthesize(tmp_path / "works", n=6, seed=2, duration_s=12.0)
    catalog = add_works(tmp_path / "works", "synthetic", get_settings(), embedder=None)
    report = calibrate(catalog, get_settings(), target_fpr=0.1, n_per_transform=2, n_negatives=40, save=False)
    assert report.synthetic_catalog and any("synthetic" in w for w in report.warnings)


def test_roc_auc_counts_ties_half() -> None:
    assert roc_auc([2.0, 3.0], [1.0, 2.0]) == pytest.approx(0.875)


@pytest.mark.slow  # FluidSynth renders (realset)
def test_search_json_answers_every_file_and_exits_by_verdict(catalog, realset, tmp_path) -> None:
    copy = next(q for q in realset.queries if q.kind == "copy" and q.transform == "pitch")
    negative = next(q for q in realset.queries if q.kind == "negative" and q.transform == "none")
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    files = [realset.queries_dir / copy.file, corrupt, realset.queries_dir / negative.file]
    result = CliRunner().invoke(app, ["catalog", "search", *map(str, files), "--name", "real", "--json"])
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert result.exit_code == 1, result.output  # one file blocked
    assert [r["file"] for r in lines] == [str(f) for f in files]
    blocked, bad, passed = lines
    assert blocked["blocked"] is True and blocked["work"] == copy.work
    assert abs(blocked["offset_s"] - copy.offset_s) <= 1.0 and blocked["score"] >= blocked["threshold"]
    assert "error" in bad and "corrupt.wav" in bad["error"] and bad["blocked"] is None
    assert passed["blocked"] is False and passed["work"] is None and passed["score"] < passed["threshold"]
    assert {"file", "blocked", "work", "offset_s", "score", "threshold"} <= set(passed)

    only_bad = CliRunner().invoke(app, ["catalog", "search", str(corrupt), "--name", "real", "--json"])
    assert only_bad.exit_code == 2 and "error" in json.loads(only_bad.stdout)
    clean = CliRunner().invoke(app, ["catalog", "search", str(files[2]), "--name", "real", "--json"])
    assert clean.exit_code == 0, clean.output

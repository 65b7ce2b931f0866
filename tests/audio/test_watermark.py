"""Watermarks at delivery: PerthNet (the resemble-perth wheel's trained weights, offline) on 20 clips of
the tiny preset (noise-like audio), detection on the delivered files and none on the same clips
unmarked, loudness/true-peak targets still met, and `musicops watermark detect`'s JSON and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from musicops.audio.io import read_audio
from musicops.audio.measure import integrated_loudness, true_peak_dbtp
from musicops.audio.watermark import (
    Detection,
    WatermarkUnavailable,
    get_watermarker,
    payload_for,
    watermark_params,
)
from musicops.config import get_settings
from musicops.generation.batch import run_batch
from musicops.generation.delivery import deliver
from musicops.generation.planning import BatchOptions, item_params
from musicops.generation.prompts import expand, read_prompts

pytestmark = pytest.mark.slow  # 2 x 20 tiny-model clips (~1 min on one thread)

N_CLIPS = 20
TOLERANCE_LU = 0.5


@pytest.fixture(scope="module")
def delivered(tmp_path_factory):
    """The same 20 prompts/seeds delivered twice: with --watermark perth and with none."""
    import os

    root = tmp_path_factory.mktemp("wm")
    prompts = root / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": f"watermark probe {i}", "duration_s": 1.5, "seed": 100 + i})
                                 for i in range(N_CLIPS)) + "\n")
    old = os.environ.get("MUSICOPS_HOME")
    os.environ["MUSICOPS_HOME"] = str(root / "home")
    try:
        settings = get_settings()
        out = {}
        for method in ("perth", "none"):
            options = BatchOptions(log_to_mlflow=False, watermark=method, batch_size=10)
            result = run_batch(prompts, "musicgen-tiny", options, settings)
            assert len(result.delivered) == N_CLIPS, [c for o in result.outcomes for c in o.record.checks
                                                      if not c["passed"]]
            out[method] = (result, deliver(result, root / method, settings, "wav"))
    finally:
        if old is None:
            os.environ.pop("MUSICOPS_HOME", None)
        else:
            os.environ["MUSICOPS_HOME"] = old
    return prompts, out


def test_delivered_files_are_detected_20_of_20_and_unmarked_0_of_20(delivered) -> None:
    _prompts, out = delivered
    detector = get_watermarker("perth")
    marked = [detector.detect(a.samples, a.sample_rate) for a in map(read_audio, out["perth"][1])]
    clean = [detector.detect(a.samples, a.sample_rate) for a in map(read_audio, out["none"][1])]
    assert len(marked) == len(clean) == N_CLIPS
    assert sum(d.detected for d in marked) == N_CLIPS, [d.confidence for d in marked]
    assert sum(d.detected for d in clean) == 0, [d.confidence for d in clean]
    assert all(d.method == "perth" and d.payload is None for d in marked + clean)


def test_watermarked_files_still_meet_loudness_and_true_peak_targets(delivered) -> None:
    _prompts, out = delivered
    result, paths = out["perth"]
    target, ceiling = result.plan.options.postprocess.target_lufs, result.plan.options.postprocess.true_peak_dbtp
    for path in paths:
        audio = read_audio(path)
        assert abs(integrated_loudness(audio.samples, audio.sample_rate) - target) <= TOLERANCE_LU, path
        assert true_peak_dbtp(audio.samples, audio.sample_rate) <= ceiling + 1e-6, path
        assert audio.samples[0].max() == 0.0 and audio.samples[-1].max() == 0.0  # fades kept: ends exactly 0
    for outcome in result.outcomes:
        assert outcome.record.passed and abs(outcome.record.loudness_after - target) <= 0.05
        assert outcome.record.params["watermark"] == watermark_params("perth")
        assert outcome.record.params["watermark"]["payload"] is None  # perth carries none, and says so


def test_watermark_is_in_params_and_keys_only_when_enabled(delivered) -> None:
    prompts, out = delivered
    marked, clean = out["perth"][0], out["none"][0]
    assert not set(marked.plan.keys) & set(clean.plan.keys)
    item = expand(read_prompts(prompts))[0]
    assert item_params(item, BatchOptions(user="u")) == item_params(item, BatchOptions(user="u", watermark="none"))
    assert "watermark" not in item_params(item, BatchOptions(user="u"))
    assert all("watermark" not in o.record.params for o in clean.outcomes)
    with pytest.raises(ValueError, match="watermark must be one of none, perth"):
        BatchOptions(watermark="lsb")


def test_cli_detect_json_shape_and_exit_codes(delivered, tmp_path) -> None:
    from typer.testing import CliRunner

    from musicops.cli import app

    _prompts, out = delivered
    files = [str(out["perth"][1][0]), str(out["none"][1][0])]
    result = CliRunner().invoke(app, ["watermark", "detect", *files, "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert [set(r) for r in rows] == [{"file", "detected", "method", "confidence", "payload"}] * 2
    assert [r["file"] for r in rows] == files
    assert [r["detected"] for r in rows] == [True, False]
    assert all(r["method"] == "perth" and r["payload"] is None and 0.0 <= r["confidence"] <= 1.0 for r in rows)

    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really a wave file")
    missing = tmp_path / "missing.flac"
    result = CliRunner().invoke(app, ["watermark", "detect", files[0], str(broken), str(missing), "--json"])
    assert result.exit_code == 2
    assert str(broken) in result.output and str(missing) in result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["file"] for r in rows] == [files[0]]  # the readable file is still reported

    result = CliRunner().invoke(app, ["watermark", "detect", files[0]])
    assert result.exit_code == 0 and "marked" in result.output


def test_perth_refuses_a_payload_and_keeps_shape() -> None:
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal((44_100, 2))).astype(np.float32)
    w = get_watermarker("perth")
    y = w.embed(x, 44_100)
    assert y.shape == x.shape and y.dtype == np.float32
    assert w.detect(y, 44_100).detected and not w.detect(x, 44_100).detected
    with pytest.raises(ValueError, match="no payload"):
        w.embed(x, 44_100, "0101010101010101")
    assert w.detect(x[:100], 44_100) == Detection(False, 0.0, None, "perth")


def test_audioseal_offline_gives_a_clear_error_and_payload_bits_come_from_the_asset_id() -> None:
    with pytest.raises(WatermarkUnavailable, match="audioseal"):
        get_watermarker("audioseal")
    assert payload_for("a_ffff00000000000000000000") == "1" * 16
    assert payload_for("a_0001abcdef0123456789abcd") == "0000000000000001"
    assert watermark_params("audioseal")["payload"] == "asset_id bits 0..15"


def test_unknown_method_is_refused(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from musicops.cli import app

    with pytest.raises(ValueError, match="unknown watermark method"):
        get_watermarker("lsb")
    result = CliRunner().invoke(app, ["watermark", "detect", str(tmp_path / "x.wav"), "--method", "lsb"])
    assert result.exit_code == 2 and "unknown watermark method" in result.output

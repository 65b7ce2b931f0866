"""`musicops catalog add / search / calibrate / versions` (fingerprint-only catalogs keep it fast)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import soundfile as sf
from typer.testing import CliRunner

from musicops.cli import app
from musicops.datasets.synth import synthesize

SR = 16000


def _text(result) -> str:
    """Output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def test_add_search_calibrate_versions(tmp_path) -> None:
    works = tmp_path / "works"
    synthesize(works, n=4, seed=8, duration_s=6.0, sample_rate=SR)
    (works / "broken.wav").write_text("not audio at all\n" * 10)
    runner = CliRunner()

    added = runner.invoke(app, ["catalog", "add", str(works), "--name", "cli", "--embedder", "none"])
    assert added.exit_code == 0, added.output
    assert "broken.wav" in added.output and "cli@v1" in added.output and "added 4 work(s)" in added.output

    data, _ = sf.read(str(works / "clip_0002.wav"), dtype="float32")
    query = tmp_path / "query.wav"
    sf.write(str(query), data[SR: 5 * SR] * 0.5, SR)
    found = runner.invoke(app, ["catalog", "search", str(query), "--name", "cli", "--k", "2"])
    assert found.exit_code == 1, found.output  # 1: a file was blocked
    assert "clip_0002" in found.output and "BLOCK" in found.output

    # Four synthetic works: too few for leave-one-work-out negatives on two folds, and not real music.
    refused = runner.invoke(app, ["catalog", "calibrate", "--name", "cli", "--target-fpr", "0.05"])
    assert refused.exit_code == 2 and "needs at least 6" in _text(refused)

    listed = runner.invoke(app, ["catalog", "versions", "--name", "cli"])
    assert listed.exit_code == 0 and "v1" in listed.output

    too_few = runner.invoke(app, ["catalog", "calibrate", "--name", "cli", "--n-negatives", "50"])
    assert too_few.exit_code == 2 and "at least 400" in _text(too_few)


def test_bad_inputs_fail_cleanly(tmp_path) -> None:
    runner = CliRunner()
    bad_name = runner.invoke(app, ["catalog", "add", str(tmp_path), "--name", "../up", "--embedder", "none"])
    assert bad_name.exit_code == 1 and "invalid catalog name" in _text(bad_name)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "silent.wav").write_bytes(b"")
    nothing = runner.invoke(app, ["catalog", "add", str(empty), "--name", "none-here", "--embedder", "none"])
    assert nothing.exit_code == 1 and "silent.wav" in _text(nothing)
    sf.write(str(tmp_path / "q.wav"), np.zeros(SR, np.float32), SR)
    no_catalog = runner.invoke(app, ["catalog", "search", str(tmp_path / "q.wav"), "--name", "absent"])
    assert no_catalog.exit_code == 2 and "no complete versions" in _text(no_catalog)


def test_catalog_help_stays_light() -> None:
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom musicops.cli import app\n"
            "r = CliRunner().invoke(app, ['catalog', '--help'])\nassert r.exit_code == 0 and 'calibrate' in r.output\n"
            "import musicops.evaluation.catalog\n"
            "print(sorted(m for m in ('torch', 'faiss', 'scipy', 'transformers', 'pandas') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from musicops.cli.datasets import app
from musicops.config import Settings

runner = CliRunner()


def test_synth_then_ingest(settings: Settings, tmp_path: Path) -> None:
    out = tmp_path / "synth"
    result = runner.invoke(app, ["synth", str(out), "--n", "2", "--seed", "3", "--duration", "1"])
    assert result.exit_code == 0, result.output
    assert "wrote 2 clips" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["clip_0000.wav", "clip_0001.wav", "metadata.jsonl"]

    result = runner.invoke(app, ["ingest", str(out), "--name", "cli-demo"])
    assert result.exit_code == 0, result.output
    assert "cli-demo@v1" in result.output
    assert (settings.datasets_dir / "cli-demo" / "v0001" / "manifest.parquet").is_file()


def test_ingest_failure_lists_problems_and_exits_1(settings: Settings, tiny_dataset: Path) -> None:
    (tiny_dataset / "broken.wav").write_bytes(b"RIFF....not really")
    (tiny_dataset / "broken.txt").write_text("a broken file")
    result = runner.invoke(app, ["ingest", str(tiny_dataset), "--name", "tiny"])
    assert result.exit_code == 1
    assert "broken.wav" in result.output and "not published" in result.output
    assert "report:" in result.output
    assert not (settings.datasets_dir / "tiny" / "v0001").exists()


def test_ingest_rejects_bad_name(settings: Settings, tiny_dataset: Path) -> None:
    result = runner.invoke(app, ["ingest", str(tiny_dataset), "--name", "../evil"])
    assert result.exit_code == 1
    assert "invalid dataset name" in result.output

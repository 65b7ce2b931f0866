"""The command line: help works and stays fast because heavy libraries load lazily."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "mlflow", "kfp", "great_expectations", "wandb", "pandas", "faiss")


def test_help_imports_no_heavy_library() -> None:
    # --help exits 0. No arguments prints the same help but exits 2: the app is no_args_is_help, and
    # since Click 8.2 that raises NoArgsIsHelpError, a UsageError (a missing command is a usage error).
    # An unknown command also exits 2, so 2 is accepted only where no arguments were given.
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from musicops.cli import app\n"
        "for args, expected in (([], 2), (['--help'], 0), (['datasets', '--help'], 0), (['models', '--help'], 0),\n"
        "                       (['pipelines', 'run', '--help'], 0)):\n"
        "    result = CliRunner().invoke(app, args)\n"
        "    assert result.exit_code == expected and 'Usage' in result.output, (args, result.exit_code, result.output)\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_console_script_answers_help() -> None:
    exe = subprocess.run([sys.executable, "-m", "musicops.cli", "--help"], capture_output=True, text=True)
    assert exe.returncode == 0, exe.stderr
    for group in ("datasets", "models", "pipelines", "demo"):
        assert group in exe.stdout


def test_version_flag() -> None:
    from typer.testing import CliRunner

    from musicops import __version__
    from musicops.cli import app

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


@pytest.mark.slow  # a CLI subprocess ingesting, ~8 s
def test_ingest_command_rejects_the_three_bad_files(tmp_path) -> None:
    """The acceptance case, through the real console entry point: non-zero, each file named, no manifest."""
    import numpy as np
    import soundfile as sf

    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "zero.wav").write_bytes(b"")
    (folder / "text.wav").write_text("not audio at all\n" * 10)
    sf.write(str(folder / "nan.wav"), np.full(8000, np.nan, dtype=np.float32), 32000, subtype="FLOAT")
    home = tmp_path / "home"
    env = {**__import__("os").environ, "MUSICOPS_HOME": str(home)}
    out = subprocess.run([sys.executable, "-m", "musicops.cli", "datasets", "ingest", str(folder), "--name", "bad"],
                         capture_output=True, text=True, env=env)
    assert out.returncode != 0
    text = out.stdout + out.stderr
    for name in ("zero.wav", "text.wav", "nan.wav"):
        assert name in text
    assert not list(home.glob("datasets/bad/v*"))


def test_flags_show_no_value_type_in_help() -> None:
    """`--no-cache` takes no value, so help must not print "<bool>" after it; valued options keep theirs."""
    from typer.testing import CliRunner

    from musicops.cli import app

    for args in (["generate", "batch", "--help"], ["gate", "--help"], ["serve", "--help"]):
        result = CliRunner().invoke(app, args, terminal_width=200)
        assert result.exit_code == 0, result.output
        assert "<bool>" not in result.output, args
    batch = CliRunner().invoke(app, ["generate", "batch", "--help"], terminal_width=200).output
    assert "--batch-size" in batch and "<int>" in batch and "--no-cache" in batch

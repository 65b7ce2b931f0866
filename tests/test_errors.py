"""One error root: expected failures derive from MusicopsError, and the CLI turns them into one red
line and an exit code in one place, while a genuine bug keeps its traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from musicops.cli.common import MusicopsGroup
from musicops.errors import EXIT_BAD_INPUT, MusicopsError


def _error_classes() -> list[tuple[type[Exception], type[Exception]]]:
    """(error, the built-in base it always had, which callers may still catch)."""
    from musicops.audio.io import AudioError
    from musicops.datasets.ingest import IngestError
    from musicops.datasets.scores import RenderError
    from musicops.evaluation.catalog.calibrate import CalibrationError
    from musicops.evaluation.catalog.store import CatalogError
    from musicops.evaluation.mos.errors import MosError
    from musicops.evaluation.provenance import ProvenanceMismatchError
    from musicops.evaluation.regression import SuiteError
    from musicops.generation.prompts import PromptsFileError
    from musicops.models.musicgen import ModelLoadError
    from musicops.registry import ModelNotFoundError
    from musicops.release.gates import ReleaseRefused
    from musicops.release.promotion import PromotionError
    from musicops.store.assets import AssetCorruptError
    from musicops.store.migrations import SchemaError
    from musicops.training.finetune import CheckpointMismatchError

    return [(AudioError, ValueError), (IngestError, RuntimeError), (RenderError, RuntimeError),
            (CalibrationError, ValueError), (CatalogError, ValueError), (MosError, Exception),
            (ProvenanceMismatchError, ValueError), (SuiteError, ValueError), (PromptsFileError, ValueError),
            (ModelLoadError, ValueError), (ModelNotFoundError, LookupError), (ReleaseRefused, ValueError),
            (PromotionError, RuntimeError), (AssetCorruptError, ValueError), (SchemaError, RuntimeError),
            (CheckpointMismatchError, RuntimeError)]


def test_library_errors_share_the_root_and_keep_their_builtin_base() -> None:
    for error, builtin in _error_classes():
        assert issubclass(error, MusicopsError), error
        assert issubclass(error, builtin), error
    assert MusicopsError("x").exit_code == EXIT_BAD_INPUT == 2


def _app() -> typer.Typer:
    app = typer.Typer(cls=MusicopsGroup, pretty_exceptions_enable=False)

    class Refused(MusicopsError):
        exit_code = 1

    @app.command()
    def expected(code: int = 2) -> None:
        raise (Refused if code == 1 else MusicopsError)("duration_s must be in [0.5, 60]")

    @app.command()
    def bug() -> None:
        raise RuntimeError("a genuine bug")

    return app


@pytest.mark.parametrize("code", [1, 2])
def test_the_root_group_maps_an_expected_error_to_one_line_and_its_code(code: int) -> None:
    result = CliRunner().invoke(_app(), ["expected", "--code", str(code)])
    assert result.exit_code == code
    assert result.output.strip() == "error: duration_s must be in [0.5, 60]"  # brackets are not Rich markup


def test_a_bug_is_not_swallowed() -> None:
    result = CliRunner().invoke(_app(), ["bug"])
    assert isinstance(result.exception, RuntimeError)


@pytest.mark.parametrize(("args", "message"), [
    (["mos", "results", "nosuch"], "error: no campaign 'nosuch'"),
    (["assets", "show", "a_000000000000000000000000"], "error: no asset 'a_000000000000000000000000'"),
])
def test_cli_expected_error_is_one_line_without_traceback(args: list[str], message: str) -> None:
    out = subprocess.run([sys.executable, "-m", "musicops.cli", *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines()[-1] == message
    assert "Traceback" not in out.stderr and "╭" not in out.stderr

"""Real music for the copyright-gate tests: the 8-work slice of the real-music set, rendered once per
session from public-domain scores through FluidSynth (`make test` installs fluidsynth and the GM
soundfont; nothing rendered is committed)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def realset(tmp_path_factory: pytest.TempPathFactory):
    from musicops.datasets.scores import RenderError, check_tools
    from musicops.evaluation.catalog import realset as rs

    try:
        check_tools()
    except RenderError as exc:
        pytest.fail(f"real-music tests need FluidSynth and a GM soundfont (make test installs them): {exc}")
    return rs.build(tmp_path_factory.mktemp("realset"), rs.SetSpec.small(0))


@pytest.fixture(scope="session")
def unrelated_music(realset):
    """(mono float32, rate): a real piece that is in no catalog the tests build from synthetic clips."""
    from musicops.audio.io import read_audio

    query = next(q for q in realset.queries if q.kind == "negative" and q.transform == "none")
    audio = read_audio(realset.queries_dir / query.file)
    return audio.mono(), audio.sample_rate

"""Progress of long work: the decode loop reports every step, reporters print stages at once and
counters at most every interval, and a CLI run off a terminal prints advancing step lines."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import pytest

from musicops import progress


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def stage(self, name: str) -> None:
        self.events.append(("stage", name))

    def update(self, task: str, done: int, total: int | None) -> None:
        self.events.append((task, done, total))


def test_nothing_is_reported_without_a_reporter_and_contexts_nest() -> None:
    progress.update("x", 1, 2)  # no reporter installed: a no-op
    outer, inner = Recorder(), Recorder()
    with progress.reporting(outer):
        progress.stage("a")
        with progress.reporting(inner):
            progress.update("x", 1, 2)
        progress.update("x", 2, 2)
    assert outer.events == [("stage", "a"), ("x", 2, 2)] and inner.events == [("x", 1, 2)]


def test_line_reporter_prints_stages_at_once_and_counters_at_most_every_interval() -> None:
    out = io.StringIO()
    reporter = progress.LineReporter(out, interval_s=3600)
    reporter.stage("regression: embedding")
    for done in range(1, 11):
        reporter.update("clips embedded", done, 10)
    lines = out.getvalue().splitlines()
    assert [re.sub(r"^\[ *[\d.]+ s\] ", "", line) for line in lines] == [
        "regression: embedding", "clips embedded 1/10", "clips embedded 10/10"]  # first, then completion
    every = io.StringIO()
    chatty = progress.LineReporter(every, interval_s=0)
    for done in range(1, 4):
        chatty.update("decode steps", done, 3)
    assert len(every.getvalue().splitlines()) == 3 and "left)" in every.getvalue().splitlines()[1]
    reporter.close()


def test_silent_work_still_prints_a_line_every_interval() -> None:
    """Loading a model reports nothing for a while: the log still says what is going on."""
    import time

    out = io.StringIO()
    reporter = progress.LineReporter(out, interval_s=0.2)
    reporter.stage("loading models:/m/1")
    deadline = time.monotonic() + 60
    while "still loading models:/m/1" not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.05)
    reporter.close()
    assert "still loading models:/m/1 (" in out.getvalue()


def test_the_decode_loop_reports_every_step() -> None:
    from musicops.models.base import GenerationParams
    from musicops.models.musicgen import TransformersMusicGen

    model = TransformersMusicGen.from_preset()
    recorder = Recorder()
    with progress.reporting(recorder):
        model.generate(["calm piano", "drums"], GenerationParams(duration_s=1.0), seed=[1, 2])
    steps = [e for e in recorder.events if e[0] == "decode steps"]
    total = steps[0][2]
    assert total == model.tokens_for(1.0) and [done for _, done, _ in steps] == list(range(1, total + 1))


@pytest.mark.slow  # a CLI subprocess generating a clip
def test_cli_generation_off_a_terminal_prints_advancing_step_lines(tmp_path) -> None:
    env = {**os.environ, "MUSICOPS_HOME": str(tmp_path / "home"), "MUSICOPS_PROGRESS_INTERVAL_S": "0",
           "MUSICOPS_TORCH_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "musicops.cli", "models", "generate", "-p", "calm piano",
                          "--duration", "2", "--out", str(tmp_path / "out")], env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "planning: reading prompts" in run.stderr and "loading musicgen-tiny" in run.stderr
    steps = [(int(a), int(b)) for a, b in re.findall(r"decode steps (\d+)/(\d+)", run.stderr)]
    assert len(steps) > 50 and steps[-1][0] == steps[-1][1]
    assert all(later > earlier for (earlier, _), (later, _) in zip(steps, steps[1:], strict=False))
    assert re.search(r"assets 1/1", run.stderr)

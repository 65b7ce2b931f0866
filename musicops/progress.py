"""Progress of long work, in one place: stages ("regression: embedding") and counters ("decode steps
120/1500") reported from deep inside the library (the decode loop, embedding, regression, gates).

Library code calls `stage()` / `update()`, which cost one context-variable read and do nothing
unless a caller installed a reporter with `reporting()`. A context variable rather than a callback
parameter on every function: the decode loop sits five calls below the CLI command that wants to
show it, behind model classes that serving, kfp steps and benchmarks also call without any progress.
Commands install `RichReporter` in a terminal and `LineReporter` otherwise (CI logs, kfp steps: a
line whenever a stage starts and at most every `interval_s` for counters).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol, TextIO


class Reporter(Protocol):
    def stage(self, name: str) -> None: ...

    def update(self, task: str, done: int, total: int | None) -> None: ...


_current: ContextVar[Reporter | None] = ContextVar("musicops_progress", default=None)


def stage(name: str) -> None:
    """A new phase of the work has started (printed at once)."""
    reporter = _current.get()
    if reporter is not None:
        reporter.stage(name)


def update(task: str, done: int, total: int | None = None) -> None:
    """`done` of `total` units of `task` are finished (reporters decide how often to show it)."""
    reporter = _current.get()
    if reporter is not None:
        reporter.update(task, done, total)


@contextmanager
def reporting(reporter: Reporter | None) -> Iterator[Reporter | None]:
    """Route `stage`/`update` calls made in this context (this thread, tasks it starts) to `reporter`."""
    token = _current.set(reporter)
    try:
        yield reporter
    finally:
        _current.reset(token)


def install(reporter: Reporter | None) -> None:
    """Report everything this process does from now on to `reporter` (a kfp step: one job per process,
    its stdout the step's log), without a `with` block around it."""
    _current.set(reporter)


class LineReporter:
    """Plain lines for logs: every stage, and each counter at most every `interval_s` (and when it
    completes), with the time since the reporter started and a rate-based estimate of what is left.
    Work that reports nothing for `interval_s` (loading a model, encoding prompts) still gets a
    "still ..." line that often, from a daemon thread, so a log never looks stuck."""

    def __init__(self, stream: TextIO | None = None, interval_s: float = 4.0, prefix: str = "") -> None:
        self.stream = stream or sys.stderr
        self.interval_s = interval_s
        self.prefix = prefix
        self.started = time.monotonic()
        self._last: dict[str, float] = {}
        self._first: dict[str, tuple[float, int]] = {}
        self._stage = ("starting", self.started)
        self._last_line = self.started
        self._lock = threading.Lock()
        self._closed = threading.Event()
        if interval_s > 0:
            threading.Thread(target=self._heartbeat, name="progress-heartbeat", daemon=True).start()

    def _emit(self, text: str) -> None:
        with self._lock:
            self._last_line = time.monotonic()
            print(f"{self.prefix}[{self._last_line - self.started:7.1f} s] {text}", file=self.stream, flush=True)

    def _heartbeat(self) -> None:
        while not self._closed.wait(self.interval_s / 8):  # a line at most interval_s x 1.125 apart
            now = time.monotonic()
            if now - self._last_line >= self.interval_s:
                name, since = self._stage
                self._emit(f"still {name} ({now - since:.0f} s)")

    def close(self) -> None:
        self._closed.set()

    def stage(self, name: str) -> None:
        self._first.clear()
        self._stage = (name, time.monotonic())
        self._emit(name)

    def update(self, task: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        self._stage = (task, self._stage[1]) if self._stage[0] == task else (task, now)
        first = self._first.setdefault(task, (now, done))
        if done < first[1]:  # a new run of the same counter (next batch): measure the rate afresh
            first = self._first[task] = (now, done)
        finished = total is not None and done >= total
        if not finished and now - self._last.get(task, -1e9) < self.interval_s:
            return
        self._last[task] = now
        text = f"{task} {done}/{total}" if total is not None else f"{task} {done}"
        elapsed, progressed = now - first[0], done - first[1]
        if total is not None and not finished and progressed > 0 and elapsed > 0:
            text += f" (about {(total - done) * elapsed / progressed:.0f} s left)"
        self._emit(text)


class RichReporter:
    """A rich progress bar per counter; stages are printed above the bars."""

    def __init__(self, progress: Any) -> None:
        self.progress = progress  # a started rich.progress.Progress
        self._tasks: dict[str, Any] = {}
        self._stage_task: Any = None

    def stage(self, name: str) -> None:
        self.progress.console.print(f"[bold]{name}[/]")
        if self._stage_task is not None:
            self.progress.remove_task(self._stage_task)
        self._stage_task = self.progress.add_task(f"  {name[:60]}", total=None)  # pulses while nothing counts

    def update(self, task: str, done: int, total: int | None) -> None:
        if task not in self._tasks:
            self._tasks[task] = self.progress.add_task(task, total=total)
        self.progress.update(self._tasks[task], completed=done, total=total)


@contextmanager
def console_reporting(console: Any, interval_s: float = 4.0) -> Iterator[Reporter]:
    """Rich bars on a terminal, `LineReporter` lines on anything else (CI logs, pipes)."""
    if console.is_terminal:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True) as bars:
            rich_reporter = RichReporter(bars)
            with reporting(rich_reporter):
                yield rich_reporter
        return
    line_reporter = LineReporter(console.file, interval_s)
    try:
        with reporting(line_reporter):
            yield line_reporter
    finally:
        line_reporter.close()

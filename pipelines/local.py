"""Run a pipeline on this machine with kfp.local's SubprocessRunner (no cluster, no Docker).

A local run executes the compiled IR YAML, not the Python function: the pipeline is compiled into the
run folder (`<kfp root>/runs/<run id>/pipeline.yaml`), loaded back from disk and run, so what runs here
is byte for byte what a cluster would get. Each step is a subprocess of the current interpreter
(`use_venv=False`) that inherits this process's environment (MUSICOPS_HOME, MLFLOW_TRACKING_URI, ...),
the same way a pod gets its settings from task environment and secrets.

Readable runs: kfp's own logging and every step's output go to `executor.log` in the run folder, not
to the console; the caller gets one `StepRecord` per finished step (status, seconds, key outputs), and
a failure names the step, its last log lines and the log path.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from musicops.config import Settings, get_settings

TAIL_LINES = 15
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class StepRecord:
    """One finished step: kfp's task name, `ok` or `failed`, wall seconds, short key outputs."""

    task: str
    status: str
    seconds: float
    outputs: dict[str, str] = field(default_factory=dict)
    tail: list[str] = field(default_factory=list)  # last log lines, kept for failed steps only

    def line(self, width: int = 150) -> str:
        """`task  status  seconds  key=value ...`, cut to `width` characters."""
        shown = " ".join(f"{key}={value}" for key, value in self.outputs.items())
        text = f"{self.task:<22} {self.status:<6} {self.seconds:6.1f}s  {shown}".rstrip()
        return text if len(text) <= width else text[: width - 3] + "..."


@dataclass
class LocalRun:
    """A finished (or failed) local run: where its YAML and log are, every step, the pipeline's output."""

    pipeline: str
    run_dir: Path
    yaml_path: Path
    log_path: Path
    steps: list[StepRecord] = field(default_factory=list)
    output: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {"pipeline": self.pipeline, "ok": self.ok, "output": self.output, "error": self.error,
                "run_dir": str(self.run_dir), "yaml": str(self.yaml_path), "log": str(self.log_path),
                "steps": [asdict(step) for step in self.steps]}


class PipelineFailed(RuntimeError):
    """A step failed; `run` holds the steps so far, the failing step's last log lines and the log path."""

    def __init__(self, run: LocalRun) -> None:
        super().__init__(run.error)
        self.run = run


def run_local(name: str, arguments: dict[str, Any], settings: Settings | None = None,
              on_step: Callable[[StepRecord], None] | None = None) -> Any:
    """Run pipeline `name` locally; returns its output (None if it has none). Raises PipelineFailed."""
    return run_pipeline(name, arguments, settings, on_step).output


def run_pipeline(name: str, arguments: dict[str, Any], settings: Settings | None = None,
                 on_step: Callable[[StepRecord], None] | None = None) -> LocalRun:
    """Compile `name` into a new run folder, run that YAML with kfp.local; raises PipelineFailed."""
    from musicops.pipelines.compile import compile_pipeline

    settings = (settings or get_settings()).ensure()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    run_dir = settings.kfp_root / "runs" / f"{stamp}-{name}-{secrets.token_hex(3)}"
    yaml_path = compile_pipeline(name, run_dir / "pipeline.yaml")
    arguments = {"musicops_home": str(settings.home), **arguments}
    return run_compiled(yaml_path, arguments, pipeline_root=run_dir, log_path=run_dir / "executor.log",
                        on_step=on_step, pipeline=name)


def run_compiled(yaml_path: str | Path, arguments: dict[str, Any], pipeline_root: str | Path,
                 log_path: str | Path, on_step: Callable[[StepRecord], None] | None = None,
                 pipeline: str | None = None) -> LocalRun:
    """Load a compiled pipeline YAML from disk and run it under kfp.local; raises PipelineFailed.

    Steps get their settings from this process's environment (plus `arguments`): nothing about this
    machine needs to be in the YAML.
    """
    from kfp import components, local

    yaml_path, log_path = Path(yaml_path), Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    run = LocalRun(pipeline or yaml_path.stem, log_path.parent, yaml_path, log_path)
    loaded = components.load_component_from_file(str(yaml_path))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(Path(pipeline_root).resolve()),
               raise_on_error=True)

    def record(step: StepRecord) -> None:
        run.steps.append(step)
        if on_step is not None:
            on_step(step)

    with _observed(log_path, record), warnings.catch_warnings():
        # Known and harmless under the local runner: display names and the cluster image are ignored.
        warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        try:
            task = loaded(**arguments)
        except RuntimeError as exc:
            run.error = _failure_message(run, str(exc))
        else:
            outputs = getattr(task, "outputs", {}) or {}
            run.output = outputs.get("Output") if isinstance(outputs, dict) else None
    (log_path.parent / "run.json").write_text(json.dumps(run.to_dict(), indent=2, default=str))
    if run.error is not None:
        raise PipelineFailed(run)
    return run


def _failure_message(run: LocalRun, raw: str) -> str:
    failed = next((step for step in reversed(run.steps) if step.status == "failed"), None)
    if failed is None:
        return f"{_ANSI.sub('', raw)} (log: {run.log_path})"
    tail = "\n".join(f"  | {line}" for line in failed.tail)
    return f"step {failed.task} failed after {failed.seconds:.1f}s; last log lines:\n{tail}\nfull log: {run.log_path}"


class _LogStream:
    """Stands in for sys.stdout during a run: everything goes to the log file, and each thread's lines
    to its current step's tail; a thread marked `echo` (printing a step line) also reaches the console."""

    def __init__(self, log: TextIO, console: TextIO) -> None:
        self.log, self.console = log, console
        self.lock = threading.Lock()
        self.local = threading.local()

    def write(self, text: str) -> int:
        with self.lock:
            if self.log.closed:  # a late write after the run: the console is the only place left
                return self.console.write(text)
            self.log.write(text)
            if getattr(self.local, "echo", False):
                self.console.write(text)
            tail = getattr(self.local, "tail", None)
            if tail is not None:
                tail.extend(line for line in _ANSI.sub("", text).splitlines() if line.strip())
        return len(text)

    def flush(self) -> None:
        with self.lock:
            if not self.log.closed:
                self.log.flush()
            self.console.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.log.fileno()


@contextlib.contextmanager
def _observed(log_path: Path, record: Callable[[StepRecord], None]) -> Iterator[None]:
    """Route kfp.local's output into `log_path` and report each step as it finishes.

    kfp.local (2.17) runs every step through `task_executor.execute_single_task`, in worker threads for
    a ParallelFor; wrapping it is the one place that sees each step's status, time and outputs.
    The root logger's handlers are restored afterwards: kfp swaps them per step, and two parallel steps
    can leave one step's handler (bound to this run's log) installed.
    """
    import logging

    from kfp.local.orchestrator import task_executor

    original = task_executor.execute_single_task
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    with log_path.open("a") as log:
        stream = _LogStream(log, sys.stdout)

        def observed(*args: Any, **kwargs: Any) -> Any:
            task_name = kwargs.get("task_name", args[0] if args else "?")
            stream.local.tail = deque(maxlen=TAIL_LINES)
            started = time.perf_counter()
            try:
                outputs, status = original(*args, **kwargs)
            except BaseException:
                status, outputs = None, {}
                raise
            finally:
                ok = status is not None and status.name == "SUCCESS"
                step = StepRecord(task_name, "ok" if ok else "failed", round(time.perf_counter() - started, 1),
                                  _key_outputs(outputs), [] if ok else list(stream.local.tail))
                stream.local.tail = None
                stream.local.echo = True
                try:
                    record(step)
                finally:
                    stream.local.echo = False
            return outputs, status

        task_executor.execute_single_task = observed
        try:
            with contextlib.redirect_stdout(stream):
                yield
        finally:
            task_executor.execute_single_task = original
            root.handlers[:] = saved_handlers
            root.setLevel(saved_level)


def _key_outputs(outputs: dict[str, Any], width: int = 48) -> dict[str, str]:
    """Parameters first, then metrics, then other artifacts' short scalar metadata; a value already
    shown is not repeated and long values are cut."""
    shown: dict[str, str] = {}
    seen: set[str] = set()

    def add(key: str, value: Any) -> None:
        text = _short(value, width)
        if text not in seen:
            shown[key] = text
            seen.add(text)

    artifacts = []
    for name, value in (outputs or {}).items():
        if isinstance(getattr(value, "metadata", None), dict):
            artifacts.append((getattr(value, "schema_title", "") != "system.Metrics", name, value))
        else:
            add(name, value)
    for _, name, artifact in sorted(artifacts, key=lambda item: item[0]):
        for key, item in artifact.metadata.items():
            if isinstance(item, str | int | float | bool) and not key.startswith("display_name"):
                add(f"{name}.{key}", item)
    return shown


def _short(value: Any, width: int) -> str:
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return text if len(text) <= width else text[: width - 3] + "..."

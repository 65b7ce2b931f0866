"""Real server processes on 127.0.0.1: `musicops serve`, the MOS rating app, an MLflow server.

`ServerProcess` runs a command in its own process group on a free port, its output in a log file
under `home`, and waits until GET `ready_path` answers 200. stop() = SIGTERM to the group (SIGKILL
after `grace` seconds), kill() = SIGKILL. As a context manager it starts and stops the server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from helpers.net import free_port

PORT = "{port}"  # placeholder in a command, replaced by the port start() picks

# Store locations that other tests (in-process kfp components) may leave in os.environ: the serving
# tests always use the state directory's own stores.
STORE_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MUSICOPS_DATABASE_URL", "MUSICOPS_ASSET_STORE",
              "MUSICOPS_SERVING_DATABASE_URL")
# Settings the MOS app reads from the environment: each MOS server test sets its own.
MOS_VARS = ("MUSICOPS_MOS_SECRET", "MUSICOPS_MOS_DATABASE_URL", "MUSICOPS_ASSET_STORE", "MUSICOPS_MOS_ADMIN_TOKEN",
            "MUSICOPS_DATABASE_URL")
# Launch the CLI's MOS serve function: the same log redaction and defaults a user gets.
_MOS_SERVER = "import sys; from musicops.cli.mos import serve; serve(host='127.0.0.1', port=int(sys.argv[1]))"


@dataclass
class ServerProcess:
    """A server process; `command` holds PORT where the port goes."""

    command: list[str]
    home: Path
    env: dict[str, str] = field(default_factory=dict)
    drop_env: tuple[str, ...] = ()
    ready_path: str = "/readyz"
    cwd: Path | None = None
    name: str = "server"
    grace: float = 20.0
    port: int = 0
    proc: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0, attempts: int = 3) -> ServerProcess:
        """Start and wait until ready; a port taken between free_port() and the bind is retried."""
        self.home.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in self.drop_env}
        env.update(self.env)
        for attempt in range(attempts):
            self.port = free_port()
            self.log_path = self.home / f"{self.name}-{self.port}-{time.monotonic_ns()}.log"
            with self.log_path.open("ab") as log:
                self.proc = subprocess.Popen([part.replace(PORT, str(self.port)) for part in self.command],
                                             env=env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
                                             start_new_session=True)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    if "address already in use" in self.log().lower() and attempt + 1 < attempts:
                        break
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
                try:
                    if httpx.get(f"{self.url}{self.ready_path}", timeout=1).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            else:
                self.kill()
                raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.log()[-4000:]}")
        raise AssertionError("unreachable")  # every attempt returns, raises or retries

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=self.grace)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def musicops_serve(home: Path, args: list[str], env: dict[str, str] | None = None) -> ServerProcess:
    """`musicops serve ARGS` on state dir `home`, its own stores unless `env` names others."""
    return ServerProcess(
        [sys.executable, "-m", "musicops.cli", "serve", "--port", PORT, *args], home,
        env={"MUSICOPS_HOME": str(home), "MUSICOPS_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1",
             "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})},
        drop_env=STORE_VARS, ready_path="/readyz", name="serve")


def mos_serve(home: Path, env: dict[str, str] | None = None) -> ServerProcess:
    """The MOS rating app (`musicops mos serve`'s function) on state dir `home`, run from `home`."""
    return ServerProcess([sys.executable, "-c", _MOS_SERVER, PORT], home,
                         env={"MUSICOPS_HOME": str(home), "PYTHONUNBUFFERED": "1", **(env or {})},
                         drop_env=MOS_VARS, ready_path="/healthz", cwd=home, name="mos", grace=10.0)


def mlflow_serve(root: Path) -> ServerProcess:
    """`mlflow server` with a sqlite backend and artifacts under `root`."""
    mlflow_exe = Path(sys.executable).with_name("mlflow")
    return ServerProcess([str(mlflow_exe), "server", "--backend-store-uri", f"sqlite:///{root / 'db.sqlite'}",
                          "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
                          "--port", PORT, "--workers", "1"], root, ready_path="/health", name="mlflow",
                         grace=30.0)

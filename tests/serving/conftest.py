"""Real server processes on 127.0.0.1 against the tiny model registered in a real MLflow sqlite store."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from musicops.config import get_settings

# Store locations that other tests (in-process kfp components) may leave in os.environ: the
# servers and fixtures here always use the state directory's own stores.
STORE_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MUSICOPS_DATABASE_URL", "MUSICOPS_ASSET_STORE",
              "MUSICOPS_SERVING_DATABASE_URL")


@pytest.fixture(autouse=True)
def _own_stores(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in STORE_VARS:
        monkeypatch.delenv(name, raising=False)


def home_settings(home: Path):  # noqa: ANN201 - Settings
    """Settings of a state dir with its embedded stores, whatever the environment says."""
    import dataclasses

    return dataclasses.replace(get_settings(home), mlflow_tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
                               mlflow_registry_uri=None, database_url=f"sqlite:///{home / 'provenance.db'}",
                               asset_store_url=None)


@dataclass
class Keys:
    main: str
    other: str
    tiny_quota: str
    slow: str


@dataclass
class ServerProcess:
    """`musicops serve` in its own process group; stop() = SIGTERM, kill() = SIGKILL."""

    home: Path
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> ServerProcess:
        self.port = free_port()
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_path = self.home / f"server-{self.port}.log"
        env = {k: v for k, v in os.environ.items() if k not in STORE_VARS}
        env.update({"MUSICOPS_HOME": str(self.home), "MUSICOPS_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1",
                    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **self.env})
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "musicops.cli", "serve", "--port", str(self.port), *self.args],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"server not ready after {timeout}s:\n{self.log()[-4000:]}")

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
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def server_process() -> type[ServerProcess]:
    """The server-process class, for tests that start (and kill) servers of their own."""
    return ServerProcess


@pytest.fixture(scope="session")
def serve_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """State dir with models:/tiny/1 (champion) and models:/tiny/2 (another random init) registered."""
    from mlflow import MlflowClient

    from musicops.models.musicgen import TransformersMusicGen
    from musicops.registry import configure_mlflow
    from musicops.training.run import import_model_dir

    home = tmp_path_factory.mktemp("serve-home")
    settings = home_settings(home)
    v1 = import_model_dir(TransformersMusicGen.from_preset(seed=0).save(home / "weights-1"), "tiny", settings)
    v2 = import_model_dir(TransformersMusicGen.from_preset(seed=1).save(home / "weights-2"), "tiny", settings)
    assert (v1, v2) == ("1", "2")
    configure_mlflow(settings)
    MlflowClient().set_registered_model_alias("tiny", "champion", v1)
    return home


@pytest.fixture(scope="session")
def keys(serve_home: Path) -> Keys:
    from musicops.serving.keys import KeyStore

    store = KeyStore.for_home(serve_home)
    try:
        return Keys(main=store.create("main")[1], other=store.create("other")[1],
                    tiny_quota=store.create("tiny-quota", quota_minutes=0.01)[1],  # 0.6 s of audio a day
                    slow=store.create("slow", rate="2/min")[1])
    finally:
        store.close()


@pytest.fixture(scope="session")
def server(serve_home: Path, keys: Keys):
    """The main server: champion alias (not polled here), small limits, webhooks to 127.0.0.1 allowed."""
    proc = ServerProcess(serve_home, ["--model", "models:/tiny@champion", "--poll-interval", "0",
                                      "--max-duration", "2", "--max-variations", "2", "--max-batch-size", "8",
                                      "--max-wait-ms", "50", "--webhook-host", "127.0.0.1", "--url-ttl", "120"])
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture()
def client(server: ServerProcess, keys: Keys):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {keys.main}"}, timeout=60) as c:
        yield c

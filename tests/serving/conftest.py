"""Real server processes on 127.0.0.1 against the tiny model registered in a real MLflow sqlite store."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from helpers.registry import register_tiny
from helpers.servers import STORE_VARS, ServerProcess, musicops_serve

from musicops.config import Settings


@pytest.fixture(autouse=True)
def _own_stores(monkeypatch: pytest.MonkeyPatch) -> None:
    """Store locations other tests (in-process kfp components) may leave in os.environ: the servers and
    fixtures here always use the state directory's own stores."""
    for name in STORE_VARS:
        monkeypatch.delenv(name, raising=False)


def home_settings(home: Path):  # noqa: ANN201 - Settings
    """Settings of a state dir with its embedded stores, whatever the environment says."""
    return Settings.from_values(home=home)  # no environment: the embedded stores inside `home`


@dataclass
class Keys:
    main: str
    other: str
    tiny_quota: str
    slow: str


@pytest.fixture()
def server_process() -> Callable[..., ServerProcess]:
    """`musicops serve` launcher (home, args, env), for tests that start (and kill) servers of their own."""
    return musicops_serve


@pytest.fixture(scope="session")
def serve_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """State dir with models:/tiny/1 (champion) and models:/tiny/2 (another random init) registered."""
    home = tmp_path_factory.mktemp("serve-home")
    settings = home_settings(home)
    v1 = register_tiny(home, "tiny", alias="champion", seed=0, settings=settings)
    v2 = register_tiny(home, "tiny", alias=None, seed=1, settings=settings)
    assert (v1, v2) == ("1", "2")
    return home


@pytest.fixture(scope="session")
def keys(serve_home: Path) -> Keys:
    from musicops.serving.keys import KeyStore

    store = KeyStore.for_settings(home_settings(serve_home))
    try:
        return Keys(main=store.create("main")[1], other=store.create("other")[1],
                    tiny_quota=store.create("tiny-quota", quota_minutes=0.01)[1],  # 0.6 s of audio a day
                    slow=store.create("slow", rate="2/min")[1])
    finally:
        store.close()


@pytest.fixture(scope="session")
def server(serve_home: Path, keys: Keys):
    """The main server: champion alias (not polled here), small limits, webhooks to 127.0.0.1 allowed."""
    proc = musicops_serve(serve_home, ["--model", "models:/tiny@champion", "--poll-interval", "0",
                                        "--max-duration", "2", "--max-variations", "2", "--max-batch-size", "8",
                                        "--max-wait-ms", "50", "--webhook-host", "127.0.0.1", "--url-ttl", "120"])
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture()
def client(server: ServerProcess, keys: Keys):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {keys.main}"}, timeout=60) as c:
        yield c

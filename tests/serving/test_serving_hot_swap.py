"""Moving `champion` under load: the new version is loaded in the background and swapped in with
zero failed requests, and responses and /v1/models report it."""

from __future__ import annotations

import threading
import time

import httpx


def test_alias_move_under_load_fails_nothing(serve_home, keys, server_process) -> None:
    from mlflow import MlflowClient

    from musicops.config import get_settings
    from musicops.registry import configure_mlflow

    server = server_process(serve_home, ["--model", "models:/tiny@champion", "--poll-interval", "0.5",
                                         "--max-duration", "2", "--max-batch-size", "8"]).start()
    headers = {"Authorization": f"Bearer {keys.main}"}
    results: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def client(n: int) -> None:
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as c:
            i = 0
            while not stop.is_set():
                r = c.post("/v1/generate", json={"prompt": f"swap load {n} {i}", "duration_s": 0.5})
                results.append((r.status_code, r.json()["model"]["version"] if r.status_code == 200 else r.text))
                i += 1

    configure_mlflow(get_settings(serve_home))
    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    try:
        for t in threads:
            t.start()
        time.sleep(2.0)
        MlflowClient().set_registered_model_alias("tiny", "champion", "2")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(v == "2" for _, v in results[-8:]):
            time.sleep(0.2)
        time.sleep(1.0)  # keep the load on after the swap
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
        models = httpx.get(f"{server.url}/v1/models", headers=headers).json()
        server.stop()
        MlflowClient().set_registered_model_alias("tiny", "champion", "1")
    failed = [r for r in results if r[0] != 200]
    assert not failed, failed[:3]
    versions = [v for _, v in results]
    assert "1" in versions and "2" in versions, set(versions)
    first_new = versions.index("2")
    assert versions[first_new:].count("1") <= 8, "after the swap only in-flight requests finish on version 1"
    assert models["model"]["version"] == "2" and models["swaps"] == 1 and models["alias"] == "champion"
    assert len(results) >= 40

"""Issue #14 against real `musicops serve` processes on 127.0.0.1: one request never fails another,
request bodies are bounded before authentication, webhooks never follow redirects, a SIGKILLed
server leaves no process behind, and readiness follows the asset store.

Assertions are about outcomes (status codes, hits, processes alive), never about speed; deadlines
only bound a hung server."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import pytest

from musicops.audio.encode import read_tags

linux_only = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")


# --- helpers ---------------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(ppid, state, start time) of a live /proc entry, None when gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[1]), fields[0], int(fields[19])


def descendants(pid: int) -> dict[int, int]:
    """Every process under `pid` now, as {pid: start time} (the start time tells a reused pid apart)."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (info := _stat(int(entry.name))) is not None:
            children.setdefault(info[0], []).append(int(entry.name))
            starts[int(entry.name)] = info[2]
    found, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = starts[child]
            todo.append(child)
    return found


def alive(processes: dict[int, int]) -> list[int]:
    """Those still running (a zombie has exited; a reused pid is another process)."""
    return [pid for pid, start in processes.items()
            if (info := _stat(pid)) is not None and info[1] != "Z" and info[2] == start]


def rss_kib(pid: int) -> int:
    """VmRSS of `pid` and all its descendants, KiB."""
    total = 0
    for each in (pid, *descendants(pid)):
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def wait_for(condition, what: str, timeout: float = 120.0) -> None:  # noqa: ANN001 - a callable
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def stream_post(port: int, path: str, total: int, chunked: bool) -> tuple[int | None, int]:
    """POST `total` bytes from a generator over a raw socket, reading the answer while sending (as a
    client would see a 413 mid-upload). Returns (status or None, bytes sent before the answer)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 f"{framing}\r\n\r\n".encode())
    answer = bytearray()
    answered = threading.Event()

    def read() -> None:
        try:
            while b"\r\n" not in answer:
                data = sock.recv(65536)
                if not data:
                    break
                answer.extend(data)
        except OSError:
            pass
        finally:
            answered.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    chunk = b"x" * (64 << 10)
    pieces = (chunk for _ in range(total // len(chunk)))  # never more than one chunk in memory
    sent = 0
    try:
        for piece in pieces:
            if answered.is_set():
                break
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            sent += len(piece)
        if chunked and not answered.is_set():
            sock.sendall(b"0\r\n\r\n")
    except OSError:
        pass  # the server closed the connection after answering
    reader.join(120)
    sock.close()
    line = bytes(answer).split(b"\r\n", 1)[0].split()
    return (int(line[1]) if len(line) > 1 and line[1].isdigit() else None), sent


def own_server(server_process, serve_home: Path, home: Path, *args: str, env: dict[str, str] | None = None):  # noqa: ANN001, ANN201
    """A server with a state dir of its own on the shared registry, without API keys."""
    return server_process(home, ["--model", "models:/tiny/1", "--poll-interval", "0", "--max-duration", "2",
                                 "--no-auth", *args],
                          {"MLFLOW_TRACKING_URI": f"sqlite:///{serve_home / 'mlflow.db'}", **(env or {})})


# --- one request never fails another ---------------------------------------------------------------


@pytest.mark.slow  # musicops serve processes
def test_an_emoji_prompt_over_the_wav_tag_limit_fails_no_request(server, client) -> None:
    """1,000 emoji are 4,000 bytes of UTF-8, twice what a WAV INFO tag holds: the encoder used to raise
    an exception the finisher pool could not unpickle, breaking every clip in flight."""
    run = uuid.uuid4().hex[:8]
    bodies = [{"prompt": f"hardening {run} calm piano {i}", "duration_s": 0.5, "seed": i} for i in range(12)]
    emoji = "\U0001f3b5" * 1000
    bodies.insert(6, {"prompt": emoji, "duration_s": 0.5, "seed": int(run, 16) % 10_000})
    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(lambda body: client.post("/v1/generate", json=body), bodies))
    statuses = [a.status_code for a in answers]
    assert 500 not in statuses, statuses
    innocent = statuses[:6] + statuses[7:]
    assert innocent == [200] * 12, statuses
    odd = answers[6]
    assert odd.status_code == 200 or 400 <= odd.status_code < 500, odd.text
    if odd.status_code == 200:  # delivered with the title cut on a character boundary
        (asset,) = odd.json()["assets"]
        wav = httpx.get(asset["audio_url"], timeout=60)
        title = read_tags(wav.content)["title"]
        assert emoji.startswith(title) and 0 < len(title.encode()) <= 2045
        flac = httpx.get(asset["urls"]["flac"], timeout=60)
        assert read_tags(flac.content)["title"] == emoji  # FLAC holds it whole
        assert read_tags(wav.content)["asset_id"] == asset["asset_id"]


def test_a_clip_failing_in_a_worker_fails_alone_and_the_pool_survives(tmp_path) -> None:
    """A real spawn pool: an exception whose class cannot be rebuilt from its args (AudioError) comes
    back as a FinishError naming it, and the same pool keeps serving other work."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import numpy as np

    from musicops.config import get_settings
    from musicops.generation.planning import BatchOptions, BatchPlan
    from musicops.serving import finisher
    from musicops.serving.engine import request_items

    settings = get_settings(tmp_path).ensure()  # the autouse fixture cleared store variables: tmp stores
    plan = BatchPlan("b", "api:test", "", None, "preset:test", request_items({"prompt": "x", "duration_s": 0.5}), ["k"], {}, BatchOptions())
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=finisher.init_worker,
                             initargs=(settings, os.getpid())) as pool:
        bad = pool.submit(finisher.finish_clip, plan, np.zeros((0, 1), np.float32), 32_000, 0.1)
        others = [pool.submit(finisher.ping) for _ in range(3)]
        with pytest.raises(finisher.FinishError) as raised:
            bad.result(timeout=120)
        assert raised.value.kind == "AudioError" and "non-empty" in raised.value.message
        assert [f.result(timeout=120) for f in others] == [True] * 3
        assert pool.submit(finisher.ping).result(timeout=120) is True  # not broken


# --- bounded request bodies --------------------------------------------------------------------------


@pytest.mark.slow  # musicops serve processes
@linux_only
def test_huge_unauthenticated_bodies_are_refused_while_read(server, client) -> None:
    """Four concurrent 200 MB bodies without a key: 413 before authentication, and the server (with its
    worker processes) grows by far less than one body."""
    pid = server.proc.pid
    before = rss_kib(pid)
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_kib(pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    size = 200 << 20
    try:
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda chunked: stream_post(server.port, "/v1/generate", size, chunked),
                                    [False, True, False, True]))
    finally:
        done.set()
        sampler.join()
    growth_mib = (peak - before) / 1024
    print(f"server RSS {before / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB (+{growth_mib:.1f} MiB); "
          f"sent before the answer: {[sent >> 20 for _, sent in results]} MiB")
    assert [status for status, _ in results] == [413] * 4, results
    assert all(sent < size for _, sent in results), "answered before the whole body was sent"
    assert growth_mib < 50
    # The refusal names the limit, and a normal request on a new connection still works.
    refused = httpx.post(f"{server.url}/v1/generate", content=b"x" * (2 << 20),
                         headers={"Content-Type": "application/json"}, timeout=60)
    assert refused.status_code == 413 and refused.json()["error"]["code"] == "body_too_large"
    assert "1048576 bytes" in refused.json()["error"]["message"]
    assert httpx.post(f"{server.url}/v1/generate", json={}, timeout=60).status_code == 401  # small bodies reach auth
    ok = client.post("/v1/generate", json={"prompt": "after the flood", "duration_s": 0.5, "seed": 1})
    assert ok.status_code == 200, ok.text


# --- webhooks ----------------------------------------------------------------------------------------


def _recording_server(answer: int, location: str | None = None) -> tuple[HTTPServer, list[dict[str, str]]]:
    hits: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            hits.append(dict(self.headers))
            self.send_response(answer)
            if location:
                self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, hits


@pytest.mark.slow  # musicops serve processes
def test_lone_surrogates_in_tags_or_prompt_are_a_422_naming_the_field(server, client) -> None:
    """JSON escapes like \\ud800 decode to code points no encoder takes: echoed back in the response
    they failed it with a 500; refused up front, and the next request is unaffected."""
    for body, field in ((b'{"prompt": "surrogate tag", "duration_s": 0.5, "tags": ["\\ud800"]}', "tags"),
                        (b'{"prompt": "bad \\udc00 prompt", "duration_s": 0.5}', "prompt")):
        answer = client.post("/v1/generate", content=body, headers={"Content-Type": "application/json"})
        assert answer.status_code == 422, answer.text
        assert field in answer.json()["error"]["message"], answer.text
    assert client.post("/v1/generate", json={"prompt": "after the surrogates", "duration_s": 0.5,
                                              "tags": ["ok"]}).status_code == 200


@pytest.mark.slow  # musicops serve processes
def test_webhook_redirect_is_not_followed_and_recorded_as_failed(server, client, serve_home) -> None:
    target, target_hits = _recording_server(204)
    redirector, redirector_hits = _recording_server(
        302, f"http://127.0.0.1:{target.server_port}/stolen")  # another port on an allowed host
    try:
        created = client.post("/v1/jobs", json={"prompt": f"redirected hook {uuid.uuid4().hex[:6]}",
                                                "duration_s": 0.5,
                                                "webhook_url": f"http://127.0.0.1:{redirector.server_port}/hook"})
        assert created.status_code == 202, created.text
        job_id = created.json()["job_id"]
        wait_for(lambda: client.get(f"/v1/jobs/{job_id}").json()["webhook_state"] in ("delivered", "failed"),
                 "the webhook outcome")
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["state"] == "succeeded" and job["webhook_state"] == "failed", job
        assert "redirect (HTTP 302) not followed" in job["webhook_error"], job
        assert len(redirector_hits) == 1, "a redirect is final: not retried"
        assert redirector_hits[0]["X-Musicops-Signature"].startswith("sha256=")
        assert target_hits == [], "the redirect must not be followed"
        with sqlite3.connect(serve_home / "serve" / "jobs.db", timeout=30) as conn:
            (error,) = conn.execute("SELECT webhook_error FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        assert "redirect (HTTP 302) not followed" in error
    finally:
        redirector.shutdown()
        target.shutdown()


# --- processes ---------------------------------------------------------------------------------------


@pytest.mark.slow  # musicops serve processes
@linux_only
def test_dead_worker_fails_no_request_and_sigkill_leaves_no_process(serve_home, server_process, tmp_path) -> None:
    server = own_server(server_process, serve_home, tmp_path / "kill").start()
    started: dict[int, int] = {}
    try:
        pid = server.proc.pid
        wait_for(lambda: any("spawn_main" in _cmdline(p) for p in descendants(pid)), "the finisher worker")

        def generate(i: int) -> int:
            body = {"prompt": f"worker death {i}", "duration_s": 0.5, "seed": i}
            return httpx.post(f"{server.url}/v1/generate", json=body, timeout=180).status_code

        # A finisher worker killed (out of memory, say) while requests arrive: the pool is rebuilt and
        # every clip is finished by the new one.
        worker = next(p for p in descendants(pid) if "spawn_main" in _cmdline(p))
        os.kill(worker, signal.SIGKILL)
        with ThreadPoolExecutor(6) as pool:
            assert list(pool.map(generate, range(6))) == [200] * 6
        assert "finisher pool broken" in server.log()
        # Again with clips in flight in the new worker.
        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(generate, i) for i in range(6, 12)]
            wait_for(lambda: any("spawn_main" in _cmdline(p) for p in descendants(pid)), "the new worker")
            worker = next(p for p in descendants(pid) if "spawn_main" in _cmdline(p))
            os.kill(worker, signal.SIGKILL)
            assert [f.result() for f in futures] == [200] * 6

        # SIGKILL of the server's pid alone (not its group): everything it started goes with it.
        started = descendants(pid)
        commands = [_cmdline(p) for p in started]
        assert any("spawn_main" in c for c in commands) and any("resource_tracker" in c for c in commands), commands
        os.kill(pid, signal.SIGKILL)
        server.proc.wait(timeout=30)
        deadline = time.monotonic() + 5
        while alive(started) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = {p: _cmdline(p) for p in alive(started)}
        assert not left, f"still running 5 s after the server died: {left}"
    finally:
        server.kill()
        for orphan in alive(started):  # never leak them into the rest of the run
            os.kill(orphan, signal.SIGKILL)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


# --- readiness and start-up follow the asset store ---------------------------------------------------


def _chattr(flag: str, path: Path) -> bool:
    try:
        return subprocess.run(["chattr", flag, str(path)], capture_output=True).returncode == 0
    except OSError:
        return False


@pytest.mark.slow  # musicops serve processes
def test_readiness_fails_while_the_asset_store_cannot_be_written(serve_home, server_process, tmp_path) -> None:
    store = tmp_path / "store"
    server = own_server(server_process, serve_home, tmp_path / "ready", env={"MUSICOPS_ASSET_STORE": str(store)})
    server.start()
    try:
        assert httpx.get(f"{server.url}/readyz", timeout=60).json()["status"] == "ready"
        # Root ignores permission bits, so make the store unwritable for anyone: a file where its
        # directory was (every write below it fails with "Not a directory").
        aside = tmp_path / "store-aside"
        store.rename(aside)
        store.write_text("not a directory")
        ready = httpx.get(f"{server.url}/readyz", timeout=60)
        assert ready.status_code == 503, ready.text
        assert ready.json()["status"] == "store_unwritable" and str(store) in ready.json()["detail"]
        assert "Not a directory" in ready.json()["detail"]
        store.unlink()
        aside.rename(store)
        assert httpx.get(f"{server.url}/readyz", timeout=60).status_code == 200
        # An immutable directory refuses new files even to root, where the filesystem allows it.
        if _chattr("+i", store):
            try:
                ready = httpx.get(f"{server.url}/readyz", timeout=60)
                assert ready.status_code == 503 and "not writable" in ready.json()["detail"], ready.text
            finally:
                _chattr("-i", store)
            assert httpx.get(f"{server.url}/readyz", timeout=60).status_code == 200
    finally:
        server.stop()


def _serve(home: Path, store: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MUSICOPS_", "MLFLOW_"))}
    env.update({"MUSICOPS_HOME": str(home), "MUSICOPS_ASSET_STORE": str(store)})
    return subprocess.run([sys.executable, "-m", "musicops.cli", "serve", "--model", "musicgen-tiny", "--port", "0"],
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # starts musicops serve processes (they fail to start)
def test_a_store_path_that_cannot_hold_files_fails_the_start_in_one_line(tmp_path) -> None:
    blocker = tmp_path / "store-is-a-file"
    blocker.write_text("x")
    for store in (blocker, blocker / "assets"):
        result = _serve(tmp_path / "home", store)
        output = (result.stdout + result.stderr).strip()
        assert result.returncode == 2, output
        assert "Traceback" not in output and len(output.splitlines()) == 1, output
        assert str(store) in output and "not a directory" in output
    immutable = tmp_path / "immutable"
    immutable.mkdir()
    if _chattr("+i", immutable):
        try:
            result = _serve(tmp_path / "home", immutable)
        finally:
            _chattr("-i", immutable)
        output = (result.stdout + result.stderr).strip()
        assert result.returncode == 2 and "not writable" in output and str(immutable) in output, output
        assert "Traceback" not in output

"""Serving benchmark: tiny model on CPU, real `musicops serve` processes on 127.0.0.1, one run.

1. Throughput, 16 concurrent clients, cache misses: continuous batching (--max-batch-size 16: clips
   join the running batch at any decode step and leave when done) vs one clip in flight at a time
   (--max-batch-size 1). Goal: >= 3x.
1b. Short requests while long ones run (continuous server): `--long-clients` clients keep asking for
   `--long-duration` s clips while one client asks for `--duration` s clips one after another; the
   short requests' p99 vs their solo latency (same server, nothing else running), measured in the
   same run. Goal: p99 under load <= 2x the solo median. The same on the one-at-a-time server shows
   what a long request used to cost a short one.
2. Server overhead: one client, one request at a time (cache misses) vs the same work as a direct
   library call in this process (open_batch, generate_items, process_clip, store_clip, finish_batch
   on a loaded model), alternating so both see the same machine load. Goal: < 5 % (median latency).
3. Cache-hit latency (client-side, one client, repeated requests): p50/p95/p99. Goal: p99 < 5 ms.

    .venv/bin/python benchmarks/serving.py [--duration 1.0] [--clients 16] [--per-client 4]
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # same BLAS threading as the servers (before numpy loads)
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, home: Path, args: list[str], threads: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "MUSICOPS_HOME": str(home), "MUSICOPS_TORCH_THREADS": str(threads),
               "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
        self.log = (home / f"server-{self.port}.log").open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "musicops.cli", "serve", "--port", str(self.port),
                                      "--log-level", "warning", *args], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not become ready")

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=30)
        self.log.close()


def throughput(url: str, key: str, clients: int, per_client: int, duration: float, tag: str) -> dict[str, float]:
    latencies: list[float] = []
    errors: list[int] = []
    barrier = threading.Barrier(clients + 1)

    def client(n: int) -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=300) as c:
            c.get("/healthz")
            barrier.wait()
            for i in range(per_client):
                started = time.perf_counter()
                r = c.post("/v1/generate", json={"prompt": f"{tag} client {n} request {i}", "duration_s": duration})
                latencies.append(time.perf_counter() - started)
                if r.status_code != 200:
                    errors.append(r.status_code)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {"requests": len(latencies), "errors": len(errors), "wall_s": wall,
            "clips_per_s": len(latencies) / wall, "latency_p50_s": float(np.percentile(latencies, 50)),
            "latency_p99_s": float(np.percentile(latencies, 99))}


def model_stats(url: str) -> dict[str, float]:
    """Decode runs, decoder steps, mean clips per step, peak clips in flight and seconds inside the
    model, from the server's /metrics (a decode run: from an idle model to the batch draining)."""
    values: dict[str, float] = {}
    names = ("musicops_batch_size_sum", "musicops_batch_size_count", "musicops_generation_seconds_sum",
             "musicops_decode_steps_total", "musicops_decode_row_steps_total", "musicops_decode_rows_in_flight_peak")
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        for name in names:
            if line.startswith(name + " ") or line.startswith(name + "{"):
                values[name] = values.get(name, 0.0) + float(line.split()[-1])
    runs = values.get("musicops_batch_size_count", 0.0)
    steps = values.get("musicops_decode_steps_total", 0.0)
    return {"decode_runs": runs, "clips_per_run": values.get("musicops_batch_size_sum", 0.0) / max(1.0, runs),
            "decode_steps": steps, "mean_clips_per_step": values.get("musicops_decode_row_steps_total", 0.0)
            / max(1.0, steps), "peak_clips_in_flight": values.get("musicops_decode_rows_in_flight_peak", 0.0),
            "model_seconds": values.get("musicops_generation_seconds_sum", 0.0)}


def in_flight(url: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("musicops_decode_rows_in_flight "):
            return float(line.split()[-1])
    return 0.0


def short_under_long(url: str, key: str, n: int, duration: float, long_duration: float, long_clients: int,
                     tag: str) -> dict[str, float]:
    """Short requests alone, then while `long_clients` clients keep long clips decoding."""
    solo = sequential(url, key, n, duration, f"{tag} solo short")
    stop = threading.Event()
    longs: list[int] = []

    def long_client(k: int) -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=600) as c:
            i = 0
            while not stop.is_set():
                r = c.post("/v1/generate", json={"prompt": f"{tag} long {k} {i}", "duration_s": long_duration})
                longs.append(r.status_code)
                i += 1

    threads = [threading.Thread(target=long_client, args=(k,)) for k in range(long_clients)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    while in_flight(url) < min(long_clients, 1) and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        loaded = sequential(url, key, n, duration, f"{tag} loaded short")
    finally:
        stop.set()
        for t in threads:
            t.join()
    solo_p50, solo_p99 = np.percentile(solo, [50, 99])
    load_p50, load_p99 = np.percentile(loaded, [50, 99])
    return {"solo_p50_s": float(solo_p50), "solo_p99_s": float(solo_p99), "under_long_p50_s": float(load_p50),
            "under_long_p99_s": float(load_p99), "p99_over_solo_p50": float(load_p99 / solo_p50),
            "p99_over_solo_p99": float(load_p99 / solo_p99), "long_requests": len(longs),
            "long_errors": sum(1 for code in longs if code != 200)}


def sequential(url: str, key: str, n: int, duration: float, tag: str, repeat_of: int | None = None) -> list[float]:
    out = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=300) as c:
        for i in range(n):
            prompt = f"{tag} request {i if repeat_of is None else i % repeat_of}"
            started = time.perf_counter()
            r = c.post("/v1/generate", json={"prompt": prompt, "duration_s": duration})
            out.append(time.perf_counter() - started)
            r.raise_for_status()
    return out


class Direct:
    """The same work without the server: a loaded model; per request open_batch, generate_items,
    process_clip, store_clip, finish_batch (the batch row per request the server also writes)."""

    def __init__(self, home: Path, duration: float) -> None:
        from musicops.config import get_settings
        from musicops.generation.planning import BatchOptions
        from musicops.models.loading import load_model
        from musicops.store.assets import open_asset_store
        from musicops.store.provenance import ProvenanceDB

        self.settings = get_settings(home).ensure()
        self.duration = duration
        self.model = load_model("musicgen-tiny", self.settings)
        self.options = BatchOptions(batch_size=1, log_to_mlflow=False)
        self.store, self.db = open_asset_store(self.settings), ProvenanceDB.from_settings(self.settings)

    def call(self, prompt: str, seed: int) -> float:
        from musicops.generation.batch import open_batch
        from musicops.generation.delivery import process_clip, store_clip
        from musicops.generation.planning import plan_batch
        from musicops.generation.prompts import cli_items
        from musicops.generation.runner import generate_items

        plan = plan_batch("<bench>", "musicgen-tiny", self.options, self.settings,
                          items=cli_items([prompt], self.duration, seed=seed))
        started = time.perf_counter()
        open_batch(plan, self.db)

        def on_batch(local: list[int], clips: list, seconds: float) -> None:
            for position, clip in zip(local, clips, strict=True):
                processed = process_clip(clip, self.model.sample_rate, self.duration, self.options)
                store_clip(plan, position, processed, seconds, self.store, self.db)

        generate_items(self.model, plan.items, self.options, on_batch)
        self.db.finish_batch(plan.batch_id, "finished", {"n_items": 1})
        return time.perf_counter() - started


def overhead(url: str, key: str, home: Path, n: int, duration: float) -> tuple[list[float], list[float]]:
    """Server request and direct call alternately (same load conditions), distinct prompts."""
    direct = Direct(home, duration)
    direct.call("warm-up", 0)
    served, local = [], []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=300) as c:
        for i in range(n):
            started = time.perf_counter()
            c.post("/v1/generate", json={"prompt": f"overhead served {i}", "duration_s": duration}).raise_for_status()
            served.append(time.perf_counter() - started)
            local.append(direct.call(f"overhead direct {i}", i))
    direct.db.close()
    return served, local


def model_ceiling(batch: int, duration: float, repeats: int = 3) -> float:
    """What batching can give at most here: model.generate at `batch` prompts vs 1, clips/s ratio."""
    from musicops.models.base import GenerationParams
    from musicops.models.loading import load_model

    model = load_model("musicgen-tiny")
    params = GenerationParams(duration_s=duration)
    prompts = [f"ceiling {i}" for i in range(batch)]
    model.generate(prompts[:2], params, seed=[0, 1])
    ratios = []
    for _ in range(repeats):
        started = time.perf_counter()
        for i, prompt in enumerate(prompts):
            model.generate([prompt], params, seed=[i])
        one = time.perf_counter() - started
        started = time.perf_counter()
        model.generate(prompts, params, seed=list(range(batch)))
        ratios.append(one / (time.perf_counter() - started))
    return statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=1.0, help="seconds per clip")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--per-client", type=int, default=4, help="requests per client in the throughput runs")
    parser.add_argument("--sequential", type=int, default=30, help="requests for the overhead comparison")
    parser.add_argument("--cache-requests", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (server and direct call)")
    parser.add_argument("--finish-processes", type=int, default=1, help="server --finish-processes")
    parser.add_argument("--long-duration", type=float, default=10.0, help="seconds per long clip (1b)")
    parser.add_argument("--long-clients", type=int, default=4, help="clients asking for long clips (1b)")
    parser.add_argument("--short-requests", type=int, default=20, help="short requests, solo and under load (1b)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="musicops-serving-bench-"))
    from musicops.config import get_settings
    from musicops.serving.keys import KeyStore

    results: dict[str, object] = {"duration_s": args.duration, "clients": args.clients, "threads": args.threads,
                                  "cpus": os.cpu_count()}
    for name, batch in (("continuous", args.clients), ("one_at_a_time", 1)):
        home = root / name
        store = KeyStore.for_settings(get_settings(home).ensure())
        key = store.create("bench")[1]
        store.close()
        # --max-wait-ms only matters when the model is idle (a new decode run waits for arrivals)
        server = Server(home, ["--model", "musicgen-tiny", "--max-batch-size", str(batch), "--max-wait-ms", "10",
                               "--job-concurrency", "1", "--finish-processes", str(args.finish_processes)],
                        args.threads)
        try:
            sequential(server.url, key, 2, args.duration, "warm-up")
            results[name] = throughput(server.url, key, args.clients, args.per_client, args.duration, name)
            results[name].update(model_stats(server.url))
            results[f"short_under_long_{name}"] = short_under_long(
                server.url, key, args.short_requests if name == "continuous" else max(3, args.short_requests // 4),
                args.duration, args.long_duration, args.long_clients, name)
            if name == "continuous":
                served, local = overhead(server.url, key, root / "direct", args.sequential, args.duration)
                results["server_sequential_median_s"] = statistics.median(served)
                results["direct_sequential_median_s"] = statistics.median(local)
                sequential(server.url, key, 20, args.duration, "cache", repeat_of=20)  # fill the cache
                hits = sequential(server.url, key, args.cache_requests, args.duration, "cache", repeat_of=20)
                p50, p95, p99 = np.percentile(hits, [50, 95, 99])
                results["cache_hit_latency_ms"] = {"p50": p50 * 1000, "p95": p95 * 1000, "p99": p99 * 1000}
        finally:
            server.stop()
    results["model_batching_ceiling"] = model_ceiling(args.clients, args.duration)
    continuous, single = results["continuous"], results["one_at_a_time"]
    results["throughput_ratio_continuous_over_one_at_a_time"] = continuous["clips_per_s"] / single["clips_per_s"]
    short = results["short_under_long_continuous"]
    results["short_p99_under_long_over_solo"] = short["p99_over_solo_p50"]
    results["server_overhead_fraction"] = (results["server_sequential_median_s"]
                                           / results["direct_sequential_median_s"] - 1.0)
    results["goals"] = {
        "throughput_ratio>=3": bool(results["throughput_ratio_continuous_over_one_at_a_time"] >= 3),
        "short_p99_under_long<=2x_solo": bool(results["short_p99_under_long_over_solo"] <= 2),
        "overhead<5%": bool(results["server_overhead_fraction"] < 0.05),
        "cache_hit_p99<5ms": bool(results["cache_hit_latency_ms"]["p99"] < 5),
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

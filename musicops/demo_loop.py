"""The end-to-end demo loop, as a library function (the `musicops demo` command prints its steps).

synth dataset -> [first run: the tiny base model becomes champion through the gates] -> fine-tune a
candidate from the champion with the kfp pipeline -> batch-generate the example prompts -> reference
catalog from the dataset -> release gates (regression, copyright, MOS skipped, licence) -> promote
-> serve the champion on 127.0.0.1 -> call it once -> the served asset's audit record.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from musicops.config import Settings

EXAMPLE_PROMPTS = Path(__file__).resolve().parent.parent / "examples" / "prompts.jsonl"


@dataclass
class DemoResult:
    dataset_dir: Path
    manifest: str = ""
    candidate: str = ""
    champion_before: str | None = None
    champion_after: str | None = None
    gates: list[dict[str, Any]] = field(default_factory=list)
    promoted: bool = False
    batch_id: str = ""
    report_dir: Path | None = None
    served: dict[str, Any] = field(default_factory=dict)
    audit: dict[str, Any] = field(default_factory=dict)


def run_demo(settings: Settings, say: Callable[[str], None], clips: int = 12, steps: int = 20,
             seed: int = 0, detail: Callable[[str], None] | None = None) -> DemoResult:
    """Run the loop; `say` gets one line per stage, `detail` one line per pipeline step (kfp's own
    logs go to the run folder's executor.log)."""
    from musicops.datasets.manifest import latest_version
    from musicops.datasets.synth import synthesize
    from musicops.evaluation.catalog.store import add_works, list_versions
    from musicops.generation.batch import run_batch
    from musicops.generation.planning import BatchOptions
    from musicops.models.musicgen import TransformersMusicGen
    from musicops.pipelines.local import run_local
    from musicops.registry import configure_mlflow
    from musicops.release.gates import run_release_gates
    from musicops.release.promotion import current_alias, promote
    from musicops.training.run import import_model_dir

    name = settings.registered_model_name
    configure_mlflow(settings)
    data_dir = settings.home / "demo" / f"synth-n{clips}-s{seed}"
    result = DemoResult(data_dir)
    if not (data_dir / "metadata.jsonl").is_file():
        synthesize(data_dir, n=clips, seed=seed)
    say(f"synthetic dataset: {data_dir}")

    result.champion_before = current_alias(name, "champion")
    if result.champion_before is None:
        base_dir = TransformersMusicGen.from_preset().save(settings.home / "demo" / "base-musicgen-tiny")
        version = import_model_dir(base_dir, name, settings)
        first = run_release_gates(f"models:/{name}/{version}", None, settings=settings)
        promote(name, version, settings, gates_passed=first.passed)
        result.champion_before = version
        say(f"first run: the tiny base model is models:/{name}/{version} and became @champion "
            f"(no baseline yet: absolute quality floors only)")

    candidate = run_local("fine-tune", {
        "source_dir": str(data_dir), "dataset_name": "demo-synth", "base_model": f"models:/{name}@champion",
        "registered_name": name, "steps": steps, "seed": seed, "mlflow_tracking_uri": settings.mlflow_tracking_uri,
    }, settings, on_step=(lambda step: detail(step.line())) if detail else None)
    result.candidate = f"models:/{name}/{candidate}"
    result.manifest = str(latest_version("demo-synth", settings).path)
    say(f"fine-tune pipeline (kfp.local) registered candidate {result.candidate}")

    batch = run_batch(EXAMPLE_PROMPTS, result.candidate, BatchOptions(), settings)
    result.batch_id = batch.plan.batch_id
    say(f"batch {batch.plan.batch_id}: {len(batch.outcomes)} assets from {EXAMPLE_PROMPTS.name} "
        f"({int(batch.metrics['n_cache_hits'])} from cache, {len(batch.failed)} failed checks)")

    if not list_versions("demo-references", settings):
        add_works(data_dir, "demo-references", settings, embedder=None)
    result.report_dir = settings.home / "demo" / "release" / f"v{candidate}"
    report = run_release_gates(result.candidate, f"models:/{name}@champion", settings=settings,
                               out_dir=result.report_dir, catalog="demo-references")
    result.gates = [{"gate": g.name, "status": g.status, "detail": g.detail} for g in report.gates]
    if report.passed:
        promote(name, candidate, settings)
        result.promoted = True
    result.champion_after = current_alias(name, "champion")
    say(f"release gates: {report.to_dict()['verdict']}; @champion is now v{result.champion_after}")

    result.served, result.audit = serve_once(settings, f"models:/{name}@champion")
    served_asset = result.served["assets"][0]
    say(f"served one clip from {result.served['model']['uri']} through POST /v1/generate: "
        f"{served_asset['asset_id']} ({served_asset['duration_s']:.1f} s)")
    return result


def serve_once(settings: Settings, model: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Start `musicops serve` on a free loopback port, call /v1/generate once, fetch the audit record."""
    from musicops.serving.keys import KeyStore

    store = KeyStore.for_settings(settings)
    try:
        _, secret = store.create(f"demo-{int(time.time())}", quota_minutes=10)
    finally:
        store.close()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "MUSICOPS_HOME": str(settings.home)}
    log = (settings.home / "demo" / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "musicops.cli", "serve", "--model", model, "--port", str(port),
                             "--poll-interval", "0"], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(f"{base}/readyz", proc)
        body = json.dumps({"prompt": "a calm ambient pad to close the demo", "duration_s": 2.0, "seed": 7}).encode()
        served = _request(f"{base}/v1/generate", secret, body)
        asset_id = served["assets"][0]["asset_id"]
        audit = _request(f"{base}/v1/audit/{asset_id}", secret)
        return served, audit
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _request(url: str, key: str, body: bytes | None = None) -> dict[str, Any]:
    request = urllib.request.Request(url, data=body, method="POST" if body else "GET",
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def _wait_ready(url: str, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the server exited during start-up; see .musicops/demo/serve.log")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the server was not ready within {timeout_s:.0f} s")

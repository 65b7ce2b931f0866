"""Continuous batching: clips join the running batch at any decode step, leave when done, and are
bit-identical to a solo `generate`; in serving a short request is not held hostage by a long one, and
never more clips are in flight than --max-batch-size. Behaviour only: order of completion and
counters, never durations."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from musicops.models.base import GenerationParams


@pytest.fixture(scope="module")
def tiny():
    import torch

    from musicops.models.musicgen import TransformersMusicGen

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield TransformersMusicGen.from_preset("musicgen-tiny")
    torch.set_num_threads(before)


def test_clips_joining_at_different_steps_equal_solo_generate(tiny) -> None:
    """Serving's defaults (sampled, guided): six clips through a batch of four places, one submitted
    every few steps, each equal to `generate` of it alone."""
    from musicops.models.continuous import ClipRequest

    prompts = ["warm rhodes", "a much longer prompt about energetic drums and bass at 128 BPM", "x",
               "cinematic strings swell", "lofi beat", "chiptune arpeggio in a minor key"]
    requests = [ClipRequest(p, GenerationParams(duration_s=0.5 + 0.1 * (i % 4)), 40 + i, tag=i)
                for i, p in enumerate(prompts)]
    batch = tiny.continuous(max_rows=4)
    clips: dict[int, np.ndarray] = {}
    joined: dict[int, int] = {}
    pending = list(requests)
    while pending or not batch.idle:
        if pending and batch.steps_run % 3 == 0:
            batch.submit(pending.pop(0))
        result = batch.step()
        assert result.rows <= 4
        for clip in result.finished:
            clips[clip.request.tag] = batch.audio(clip)
            joined[clip.request.tag] = clip.joined_at
    assert len(set(joined.values())) == len(requests), "each clip joined at its own step"
    for request in requests:
        alone = tiny.generate([request.prompt], request.params, request.seed)[0]
        assert np.array_equal(clips[request.tag], alone), f"clip {request.tag} differs from its solo run"


def metrics(server) -> dict[str, float]:
    text = httpx.get(f"{server.url}/metrics", timeout=60).text
    return {line.split()[0]: float(line.split()[-1]) for line in text.splitlines()
            if line.startswith("musicops_decode_")}


@pytest.fixture(scope="module")
def cb_server(serve_home, keys):
    from helpers.servers import musicops_serve

    proc = musicops_serve(serve_home, ["--model", "models:/tiny@champion", "--poll-interval", "0",
                                       "--max-duration", "30", "--max-batch-size", "2"])
    proc.start()
    yield proc
    proc.stop()


@pytest.mark.slow  # a musicops serve process
def test_short_request_finishes_while_a_long_one_decodes(cb_server, keys) -> None:
    headers = {"Authorization": f"Bearer {keys.main}"}
    long_done = threading.Event()
    answers: dict[str, httpx.Response] = {}

    def long() -> None:
        answers["long"] = httpx.post(f"{cb_server.url}/v1/generate", headers=headers, timeout=600,
                                     json={"prompt": "a long evolving ambient drone", "duration_s": 30.0})
        long_done.set()

    before = metrics(cb_server)
    thread = threading.Thread(target=long)
    thread.start()
    try:
        while metrics(cb_server)["musicops_decode_rows_in_flight"] < 1:  # the long clip is decoding
            assert not long_done.is_set(), answers["long"].text
            time.sleep(0.01)  # polling pace only; nothing asserts on time
        short = httpx.post(f"{cb_server.url}/v1/generate", headers=headers, timeout=600,
                           json={"prompt": "a short stab", "duration_s": 0.5})
        still_running = not long_done.is_set()
    finally:
        thread.join(timeout=600)
    assert short.status_code == 200 and answers["long"].status_code == 200
    assert still_running, "the short request waited for the long one"
    seen = metrics(cb_server)
    steps = seen["musicops_decode_steps_total"] - before["musicops_decode_steps_total"]
    clip_steps = seen["musicops_decode_row_steps_total"] - before["musicops_decode_row_steps_total"]
    assert clip_steps > steps, "the short clip never decoded alongside the long one"
    assert seen["musicops_decode_rows_in_flight"] == 0


@pytest.mark.slow  # a musicops serve process
def test_never_more_clips_in_flight_than_max_batch_size(cb_server, keys) -> None:
    headers = {"Authorization": f"Bearer {keys.main}"}
    before = metrics(cb_server)

    def one(i: int) -> int:
        body = {"prompt": f"bounded groove {i}", "duration_s": 0.5 + 0.1 * (i % 3), "n_variations": 1 + i % 2}
        return httpx.post(f"{cb_server.url}/v1/generate", headers=headers, json=body, timeout=600).status_code

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(one, range(6))) == [200] * 6
    after = metrics(cb_server)
    steps = after["musicops_decode_steps_total"] - before["musicops_decode_steps_total"]
    clip_steps = after["musicops_decode_row_steps_total"] - before["musicops_decode_row_steps_total"]
    assert steps > 0 and clip_steps <= 2 * steps  # at most 2 clips in any step
    assert after["musicops_decode_rows_in_flight_peak"] == 2  # the bound held, and was reached
    assert after["musicops_decode_rows_in_flight"] == 0
    assert after["musicops_decode_kv_bytes"] > 0  # two slots, kept for the next requests

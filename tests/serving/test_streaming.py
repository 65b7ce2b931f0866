"""True streaming against a real `musicops serve` process: audio is sent while the clip is decoded,
and the stored asset is exactly the streamed bytes (behaviour only; no durations asserted)."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import httpx
import numpy as np

from musicops.config import Settings


def metric(text: str, name: str) -> float:
    """Sum of a metric's samples named exactly `name` (any labels)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def stored_bytes(home: Path, asset_id: str) -> tuple[bytes, dict]:
    from musicops.store.assets import open_asset_store
    from musicops.store.provenance import ProvenanceDB

    settings = Settings.from_values(home=home)
    with ProvenanceDB.from_settings(settings) as db:
        record = db.get_asset(asset_id)
    assert record is not None
    path = open_asset_store(settings).path_for(record.files["wav"]["sha256"], "wav")
    return path.read_bytes(), record.to_dict()


def test_http_stream_sends_audio_before_the_clip_is_done_and_stores_the_streamed_bytes(
        server, keys, serve_home: Path) -> None:
    headers = {"Authorization": f"Bearer {keys.main}"}
    body = {"prompt": "streamed ambient drone", "duration_s": 2.0, "seed": 11}
    with httpx.Client(base_url=server.url, headers=headers, timeout=120) as client:
        before = client.get("/metrics").text
        chunks: list[bytes] = []
        with client.stream("POST", "/v1/generate/stream", json=body) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["x-cache"] == "miss"
            asset_id = response.headers["x-asset-id"]
            chunks.extend(response.iter_raw())
        after = client.get("/metrics").text
        data = b"".join(chunks)
        # the WAV header went out on its own, first, with the exact length; then the audio in pieces
        assert chunks[0][:4] == b"RIFF" and len(chunks[0]) == 44
        channels, rate = struct.unpack("<H", chunks[0][22:24])[0], struct.unpack("<I", chunks[0][24:28])[0]
        declared = struct.unpack("<I", chunks[0][40:44])[0]
        assert declared == len(data) - 44 == round(2.0 * rate) * channels * 2
        assert len(chunks) > 3
        # first audio before the clip was decoded: the server's fraction of frames decoded at first audio
        count = "musicops_stream_first_audio_decoded_fraction_count"
        fraction_sum = "musicops_stream_first_audio_decoded_fraction_sum"
        assert metric(after, count) == metric(before, count) + 1
        assert metric(after, fraction_sum) - metric(before, fraction_sum) < 1.0
        ttfa = "musicops_stream_time_to_first_audio_seconds_count"
        assert metric(after, ttfa) == metric(before, ttfa) + 1
        assert "musicops_stream_chunk_jitter_seconds_count" in after and "musicops_stream_underruns_total" in after

        stored, record = stored_bytes(serve_home, asset_id)
        assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(data).hexdigest()
        assert record["params"]["delivery"] == "stream"
        samples = np.frombuffer(data[44:], dtype="<i2")
        assert np.abs(samples).max() > 0

        # the same stream request again streams the stored bytes; /v1/generate never gets them
        with client.stream("POST", "/v1/generate/stream", json=body) as again:
            assert again.headers["x-cache"] == "hit" and again.headers["x-asset-id"] == asset_id
            assert again.read() == data
        plain = client.post("/v1/generate", json=body).json()["assets"][0]
        assert plain["asset_id"] != asset_id


def test_websocket_prompt_change_gives_a_continuous_stream_stored_as_streamed(server, keys, serve_home: Path) -> None:
    """A prompt change mid-stream: the next segment uses it and continues the previous one's tail,
    with no gap (samples = sum of segments) and no click at the joins; the stored asset is exactly
    the streamed PCM and its provenance lists the change and where it took effect."""
    import json

    import pytest
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    url = server.url.replace("http://", "ws://") + "/v1/stream/ws"
    with pytest.raises(InvalidStatus), connect(url):
        pass  # no key: refused at the handshake
    pcm = bytearray()
    changed = False
    with connect(url, additional_headers={"Authorization": f"Bearer {keys.main}"}, max_size=None) as ws:
        ws.send(json.dumps({"prompt": "calm lake at dawn", "seed": 4, "segment_s": 1.0, "max_s": 3.0,
                            "context_s": 0.5}))
        start = json.loads(ws.recv(timeout=120))
        assert start["type"] == "start" and start["format"] == "pcm_s16le"
        while True:
            message = ws.recv(timeout=120)
            if isinstance(message, bytes):
                pcm.extend(message)
                if not changed:
                    ws.send(json.dumps({"prompt": "storm over the sea"}))
                    changed = True
                continue
            end = json.loads(message)
            break
    assert end["type"] == "end", end
    x = np.frombuffer(bytes(pcm), dtype="<i2").astype(np.float64)
    segments = end["segments"]
    assert len(segments) >= 2 and sum(s["samples"] for s in segments) == len(x) == end["samples"]  # no gap
    assert [s["start_sample"] for s in segments] == list(np.cumsum([0] + [s["samples"] for s in segments[:-1]]))
    assert segments[0]["prompt"] == "calm lake at dawn" and segments[-1]["prompt"] == "storm over the sea"
    # no click: the step across each join is within the signal's own 99.9th percentile step
    steps = np.abs(np.diff(x))
    joins = [s["start_sample"] for s in segments[1:]]
    inside = np.delete(steps, [j - 1 for j in joins])
    bound = np.percentile(inside, 99.9)
    worst = max(steps[j - 1] for j in joins)
    print(f"join step {worst:.0f} vs within-segment p99.9 {bound:.0f} (PCM16 units)")
    assert worst <= bound

    stored, record = stored_bytes(serve_home, end["asset_id"])
    assert stored[44:] == bytes(pcm) and hashlib.sha256(stored).hexdigest() == end["sha256"]
    prompts = record["params"]["prompts"]
    assert [p["prompt"] for p in prompts] == ["calm lake at dawn", "storm over the sea"]
    change = next(s for s in segments if s["prompt"] == "storm over the sea")
    assert prompts[1]["sample_offset"] == change["start_sample"] > 0
    assert record["params"]["delivery"] == "stream-ws"

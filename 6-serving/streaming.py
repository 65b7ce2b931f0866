"""True streaming: audio decoded, levelled and sent while the clip's tokens are still being generated.

Path of one streamed clip: the model thread's continuous batch hands each step's newly complete
frames (delay pattern undone) to the stream (`ClipRequest.on_frames`) -> `StreamingCodecDecoder`
(EnCodec in overlapping, cross-faded windows with its LSTM state carried) -> `StreamLeveler`
(streaming loudness leveller + true-peak limiter) -> PCM16 -> the client. The codec and leveller run
on the stream's own thread (the request's), never on the model thread.

Latency to the first audio of a clip: the delay pattern's K-1 extra decoder steps, `first_chunk_frames`
codec frames (chunk + the codec's look-ahead), and the leveller's `latency_samples` look-ahead.

A finished stream is stored as exactly the bytes that were sent (a WAV: header + PCM16), with its own
params marker (`delivery`), so a streamed asset never answers a request for the post-processed one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import struct
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from musicops import __version__, code_version
from musicops.audio.checks import run_checks, thresholds_for
from musicops.audio.stream_level import StreamLeveler
from musicops.generation.batch import open_batch
from musicops.generation.planning import BatchOptions, BatchPlan, item_params
from musicops.generation.prompts import MAX_SEED, WorkItem
from musicops.models.codec_stream import StreamingCodecDecoder
from musicops.models.sampling import SamplingParams
from musicops.serving.schemas import Sampling
from musicops.store.cache import asset_id_for, cache_key

log = logging.getLogger(__name__)
STREAM_TIMEOUT_S = 300.0  # longest wait for the model's next frames before a stream gives up
CHUNK_FRAMES = 5  # codec frames per audio chunk (100 ms at 50 Hz)
LEVELER = {"target_lufs": -14.0, "ceiling_dbtp": -1.0, "window_s": 3.0, "max_slew_db_per_s": 6.0}
STREAM_SETTINGS = {"chunk_frames": CHUNK_FRAMES, "leveler": LEVELER, "format": "pcm_s16le"}
# The leveller follows loudness as it comes (no whole-clip search), so the stored check allows more
# than the post-processed path's 0.5 LU around the target.
STREAM_LOUDNESS_TOLERANCE_LU = 3.0
WAV_HEADER_BYTES = 44


def wav_header(frames: int, channels: int, sample_rate: int) -> bytes:
    """A canonical 44-byte PCM16 WAV header for `frames` sample frames (exact when the length is known)."""
    data = frames * channels * 2
    return (b"RIFF" + struct.pack("<I", 36 + data) + b"WAVE" + b"fmt " +
            struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * channels * 2, channels * 2, 16) +
            b"data" + struct.pack("<I", data))


def pcm16(chunk: np.ndarray) -> bytes:
    """Float (frames, channels) -> interleaved little-endian PCM16 (clipped, rounded)."""
    scaled = np.rint(np.clip(chunk, -1.0, 1.0) * 32767.0).astype("<i2")
    return scaled.tobytes()


def pcm16_to_float(data: bytes, channels: int) -> np.ndarray:
    return (np.frombuffer(data, dtype="<i2").astype(np.float32) / 32767.0).reshape(-1, channels)


class AudioPipe:
    """Codes in, PCM16 bytes out: StreamingCodecDecoder -> StreamLeveler -> PCM16, state carried,
    so consecutive clips (segments of an endless stream) join into one continuous signal."""

    def __init__(self, engine: Any, total_samples: int | None = None) -> None:
        self.channels = int(engine.audio_channels)
        self.sample_rate = int(engine.sample_rate)
        self.codec = StreamingCodecDecoder(engine.model.audio_encoder, audio_channels=self.channels,
                                           chunk_frames=CHUNK_FRAMES, total_samples=total_samples)
        self.leveler = StreamLeveler(self.sample_rate, self.channels, **LEVELER)  # type: ignore[arg-type]
        self.frames = 0  # codec frames pushed

    @property
    def first_audio_frames(self) -> int:
        return self.codec.first_chunk_frames

    @property
    def latency_samples(self) -> int:
        return self.codec.latency_samples + self.leveler.latency_samples

    def push(self, codes: Any) -> bytes:
        self.frames += int(codes.shape[1])
        out = [self.leveler.process(chunk) for chunk in self.codec.push(codes)]
        return b"".join(pcm16(chunk) for chunk in out if chunk.shape[0])

    def finish(self) -> bytes:
        last = self.codec.finish()
        parts = [self.leveler.process(last)] if last.shape[0] else []
        parts.append(self.leveler.flush())
        return b"".join(pcm16(chunk) for chunk in parts if chunk.shape[0])


class Pacer:
    """Delivery metrics of one stream: time to first audio, inter-arrival jitter, underruns.

    Playback is assumed to start when the first audio is sent; an underrun is a chunk sent after the
    audio already sent would have finished playing in real time (the listener heard a gap)."""

    def __init__(self, metrics: Any, sample_rate: int, channels: int, started: float | None = None) -> None:
        self.metrics = metrics
        self.bytes_per_second = sample_rate * channels * 2
        self.started = started if started is not None else time.monotonic()
        self.first: float | None = None
        self.last = 0.0
        self.interval: float | None = None
        self.sent_bytes = 0
        self.underruns = 0
        self.ttfa_s: float | None = None

    def sent(self, size: int, decoded_fraction: float | None = None) -> None:
        if size <= 0:
            return
        now = time.monotonic()
        if self.first is None:
            self.first = now
            self.ttfa_s = now - self.started
            if self.metrics:
                self.metrics.stream_first_audio(self.ttfa_s, decoded_fraction)
        else:
            interval = now - self.last
            if self.interval is not None and self.metrics:
                self.metrics.stream_jitter.observe(abs(interval - self.interval))
            self.interval = interval
            if now > self.first + self.sent_bytes / self.bytes_per_second:
                self.underruns += 1
                if self.metrics:
                    self.metrics.stream_underruns.inc()
        self.last = now
        self.sent_bytes += size


def stream_plan(engine: Any, item: WorkItem, options: BatchOptions, source: str,
                extra: dict[str, Any] | None = None) -> tuple[BatchPlan, dict[str, Any]]:
    """The plan of one streamed clip: its own cache key (params marked `delivery`, the stream
    settings, WAV only), looked up in the tenant's cache like any request."""
    from musicops.serving.engine import new_batch_id

    options = dataclasses.replace(options, formats=("wav",))
    loaded = engine.manager.current
    params = item_params(item, options)
    params.update({"delivery": "stream", "stream": STREAM_SETTINGS})
    params.update(extra or {})
    key = cache_key(item.normalized_prompt, params, loaded.model_id, item.seed, options.tenant)
    found = engine.db.find_by_cache_keys([key])
    cached = {k: r for k, r in found.items() if all(engine.store.exists(f["sha256"], fmt) for fmt, f in r.files.items())}
    if engine.metrics:
        engine.metrics.cache(len(cached), 1 - len(cached))
    plan = BatchPlan(new_batch_id("stream"), source, "", loaded.resolved, loaded.model_id, [item], [key], cached,
                     options)
    return plan, params


def store_stream(engine: Any, plan: BatchPlan, params: dict[str, Any], wav: bytes, channels: int,
                 sample_rate: int, generation_seconds: float, expected_duration_s: float | None) -> Any:
    """Store exactly the streamed bytes (content-addressed) with one provenance row; returns the record."""
    from musicops.store.provenance import AssetRecord

    item, key = plan.items[0], plan.keys[0]
    samples = pcm16_to_float(wav[WAV_HEADER_BYTES:], channels)
    checks = run_checks(samples, sample_rate, expected_duration_s,
                        thresholds_for(plan.options.postprocess, STREAM_LOUDNESS_TOLERANCE_LU))
    open_batch(plan, engine.db)
    stored = engine.store.put(wav, "wav")
    loudness = next((c.value for c in checks if c.name == "loudness"), None)
    peak = next((c.value for c in checks if c.name == "true_peak"), None)
    record = AssetRecord(
        asset_id=asset_id_for(key), cache_key=key, sha256=stored.sha256,
        files={"wav": {"sha256": stored.sha256, "size": stored.size}}, prompt=item.prompt,
        normalized_prompt=item.normalized_prompt, seed=item.seed, params=params, model_name=plan.model.name,
        model_version=plan.model.version, model_run_id=plan.model.run_id, model_uri=plan.model.pinned_uri,
        user=plan.options.user, code_version=code_version(),
        postprocess={"stream_leveler": LEVELER, "software": f"musicops {__version__}"},
        loudness_after=_finite(loudness), true_peak_after=_finite(peak), checks=[c.to_dict() for c in checks],
        passed=all(c.passed for c in checks), batch_id=plan.batch_id, line_no=item.line_no,
        variation=item.variation, tags=list(item.tags), duration_s=samples.shape[0] / sample_rate,
        sample_rate=sample_rate, generation_seconds=generation_seconds, tenant=plan.options.tenant)
    record, _ = engine.db.add_asset(record)
    n = len(plan.items)
    engine.db.finish_batch(plan.batch_id, "finished", {"n_items": n, "n_generated": n})
    return record


def _finite(value: Any) -> float | None:
    import math

    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def stream_clip(svc: Any, plan: BatchPlan, params: dict[str, Any], refund: Any) -> Iterator[bytes]:
    """The body of one HTTP stream (run by the server's threadpool): queue the clip with an
    `on_frames` hook, then decode and send its frames as they come; store what was sent at the end.
    A failure cuts the response short (the client sees an incomplete body) and refunds the quota."""
    from musicops.models.continuous import ClipRequest
    from musicops.serving.engine import StreamTicket

    engine = svc.engine
    metrics = svc.metrics
    loaded = engine.manager.current
    decode = loaded.model.engine()
    item = plan.items[0]
    total = int(round(item.duration_s * decode.sample_rate))
    pipe = AudioPipe(decode, total_samples=total)
    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    sampling = plan.options.sampling
    expected_frames = max(1, loaded.model.tokens_for(item.duration_s) - decode.channel_codebooks + 1)
    received = [0]

    def on_frames(request: Any, codes: Any) -> None:
        received[0] += int(codes.shape[1])
        events.put(("frames", codes))

    request = ClipRequest(item.normalized_prompt, sampling.params(item.duration_s), item.seed, on_frames=on_frames)
    pacer = Pacer(metrics, pipe.sample_rate, pipe.channels)
    engine.stream(StreamTicket(request, plan.model_id, lambda clip, exc: events.put(("done", (clip, exc)))))
    header = wav_header(total, pipe.channels, pipe.sample_rate)
    sent = [header]
    ok = False
    try:
        yield header
        while True:
            kind, payload = events.get(timeout=STREAM_TIMEOUT_S)
            if kind == "frames":
                data = pipe.push(payload)
            else:
                clip, exc = payload
                if exc is not None:
                    raise exc
                data = pipe.finish()
            if data:
                pacer.sent(len(data), min(1.0, received[0] / expected_frames))
                sent.append(data)
                yield data
            if kind == "done":
                break
        wav = b"".join(sent)
        store_stream(engine, plan, params, wav, pipe.channels, pipe.sample_rate, time.monotonic() - pacer.started,
                     item.duration_s)
        ok = True
        if metrics:
            metrics.generated_audio_seconds.inc(item.duration_s)
            metrics.streams.labels("http", "ok").inc()
    finally:
        if not ok:
            if metrics:
                metrics.streams.labels("http", "failed").inc()
            try:
                refund()
            except Exception:
                log.exception("refunding a failed stream failed")


class WsStart(BaseModel):
    """The first message of `WS /v1/stream/ws`."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=2000, pattern=r"\S")
    seed: int = Field(0, ge=0, le=MAX_SEED)
    segment_s: float = Field(5.0, gt=0, description="Seconds generated per segment (a prompt change waits for the next).")
    max_s: float = Field(60.0, gt=0, le=3600, description="The stream ends after this much audio.")
    context_s: float = Field(1.0, gt=0, le=10, description="Seconds of the previous segment each segment continues from.")
    sampling: Sampling = Field(default_factory=Sampling)


async def ws_session(websocket: Any, svc: Any, key: Any, start: WsStart) -> None:
    """An endless/adaptive stream: segments of `segment_s`, each continuing the codes of the last
    `context_s` of the one before (a decoder prefix), decoded through one codec/leveller state so
    they join without a gap; prompt changes take effect at the next segment boundary."""
    import asyncio
    import uuid

    from fastapi.concurrency import run_in_threadpool
    from starlette.websockets import WebSocketDisconnect

    from musicops.models.continuous import ClipRequest
    from musicops.serving.engine import StreamTicket, request_items

    engine = svc.engine
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[str, int, Any]] = asyncio.Queue()
    loaded = engine.manager.current
    decode = loaded.model.engine()
    pipe = AudioPipe(decode)
    hop, rate = pipe.codec.hop, pipe.sample_rate
    started = time.monotonic()
    state: dict[str, Any] = {"prompt": start.prompt, "requested": None, "stop": False}
    sampling = SamplingParams(**start.sampling.model_dump())

    async def receive() -> None:
        try:
            while True:
                message = await websocket.receive_json()
                if isinstance(message, dict) and message.get("stop"):
                    state["stop"] = True
                    events.put_nowait(("stop", -1, None))
                    return
                prompt = message.get("prompt") if isinstance(message, dict) else None
                if isinstance(prompt, str) and prompt.strip() and len(prompt) <= 2000:
                    state["prompt"], state["requested"] = prompt, time.monotonic() - started
                else:
                    await websocket.send_json({"type": "error", "code": "invalid_message",
                                               "message": "send {\"prompt\": \"...\"} or {\"stop\": true}"})
        except (WebSocketDisconnect, RuntimeError, ValueError):
            state["stop"] = True
            events.put_nowait(("stop", -1, None))

    receiver = asyncio.create_task(receive())
    pacer = Pacer(svc.metrics, rate, pipe.channels, started)
    pcm: list[bytes] = []
    segments: list[dict[str, Any]] = []
    prefix = None
    context = max(1, round(start.context_s * decode.frame_rate))
    min_s = (2 * decode.channel_codebooks) / decode.frame_rate
    books = decode.num_codebooks

    async def send(data: bytes) -> None:
        if data:
            pcm.append(data)
            pacer.sent(len(data))
            await websocket.send_bytes(data)

    await websocket.send_json({"type": "start", "sample_rate": rate, "channels": pipe.channels,
                               "format": "pcm_s16le", "segment_s": start.segment_s, "max_s": start.max_s})
    try:
        index = 0
        while not state["stop"]:
            remaining = start.max_s - pipe.frames * hop / rate
            duration = min(start.segment_s, remaining)
            if duration < min_s:
                break
            segment = {"segment": index, "prompt": state["prompt"], "start_sample": pipe.frames * hop,
                       "time_s": round(time.monotonic() - started, 3), "requested_s": state["requested"]}
            first_frame = pipe.frames
            params = sampling.params(duration)

            def on_frames(request: Any, codes: Any, index: int = index) -> None:
                loop.call_soon_threadsafe(events.put_nowait, ("frames", index, codes))

            def on_done(clip: Any, exc: BaseException | None, index: int = index) -> None:
                loop.call_soon_threadsafe(events.put_nowait, ("done", index, (clip, exc)))

            request = ClipRequest(state["prompt"], params, start.seed + index, on_frames=on_frames, prefix=prefix)
            engine.stream(StreamTicket(request, loaded.model_id, on_done))
            while True:
                kind, owner, payload = await events.get()
                if kind == "stop":
                    break
                if owner != index:
                    continue
                if kind == "frames":
                    await send(await run_in_threadpool(pipe.push, payload))
                    continue
                clip, exc = payload
                if exc is not None:
                    raise exc
                prefix = clip.codes[:, -context:] if clip.codes.shape[1] >= 1 else None
                break
            segment["samples"] = (pipe.frames - first_frame) * hop
            if segment["samples"]:
                segments.append(segment)
            index += 1
            if prefix is not None and prefix.shape[0] != books:
                prefix = None
        await send(await run_in_threadpool(pipe.finish))
        data = b"".join(pcm)
        frames = len(data) // (2 * pipe.channels)
        wav = wav_header(frames, pipe.channels, rate) + data
        changes = [{"prompt": s["prompt"], "sample_offset": s["start_sample"], "time_s": s["time_s"],
                    "requested_s": s["requested_s"], "segment": s["segment"]}
                   for i, s in enumerate(segments) if i == 0 or s["prompt"] != segments[i - 1]["prompt"]]
        item = request_items({"prompt": start.prompt, "duration_s": min(start.segment_s, svc.config.max_duration_s),
                              "seed": start.seed})[0]
        options = engine.options(sampling, key.user).for_tenant(key.tenant)
        extra = {"delivery": "stream-ws", "session": uuid.uuid4().hex, "segment_s": start.segment_s,
                 "context_s": start.context_s, "max_s": start.max_s, "prompts": changes}
        plan, params_out = await run_in_threadpool(stream_plan, engine, item, options, "api:/v1/stream/ws", extra)
        record = await run_in_threadpool(store_stream, engine, plan, params_out, wav, pipe.channels, rate,
                                         time.monotonic() - started, None)
        if svc.metrics:
            svc.metrics.generated_audio_seconds.inc(frames / rate)
            svc.metrics.streams.labels("ws", "ok").inc()
        await run_in_threadpool(svc.keys.refund, key, max(0.0, start.max_s - frames / rate))
        if not receiver.done():
            await websocket.send_json({"type": "end", "asset_id": record.asset_id, "sha256": record.sha256,
                                       "samples": frames, "segments": segments, "prompts": changes,
                                       "underruns": pacer.underruns})
            await websocket.close()
    except Exception:
        if svc.metrics:
            svc.metrics.streams.labels("ws", "failed").inc()
        await run_in_threadpool(svc.keys.refund, key, max(0.0, start.max_s - pipe.frames * hop / rate))
        log.exception("websocket stream failed")
        with contextlib.suppress(Exception):
            await websocket.close(code=1011)
    finally:
        receiver.cancel()

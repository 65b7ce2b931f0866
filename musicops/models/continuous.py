"""Continuous batching (iteration-level scheduling) on top of the decode engine.

`DecodeEngine.decode_codes` runs one batch in lock-step: every row is at the same position and
the batch ends when its longest item does, so a request arriving meanwhile waits for all of it.
`ContinuousBatch` keeps a running batch instead: a request joins at the next decode step and
leaves as soon as its own steps are done, freeing its place for the next waiting request.

Exactness (fp32): a clip is bit-identical to `TransformersMusicGen.generate` of its prompt, params
and seed alone, whatever it decodes alongside and at whatever step it joined. Only the row-wise
work is batched across requests (embeddings, layer norms, every Linear, the lm heads, the sampling
math, which the engine's batch-independence tests already pin); everything a request's numbers
could share with another's is kept per request, shaped exactly as its solo run shapes it:

- its text encoding and cross-attention keys/values are computed alone (batch of one prompt, no
  padding to a batch mate's length) and cross-attention runs per request over its own keys/values
  and mask;
- each request owns a KV slot (cond + uncond rows) and self-attention runs per request over
  exactly its filled prefix (no mask over a longer padded cache, which could change the float
  summation order); attention is small next to the Linear layers, so the per-request loop is cheap;
- its delay pattern, tokens, sampling generator and guidance (its own cond/uncond row pair, only
  when its guidance_scale > 1) are its own.

Bounds: at most `max_rows` requests (clips) in flight; each holds one KV slot of
`slot_steps` steps x 2 decoder rows per layer. With `slot_steps` set, memory is pre-allocated once
per slot (at most `max_rows` slots, reused as requests come and go) and a request needing more steps
than the slot holds is refused at `submit` (ValueError); serving sets it from its max duration,
which it already enforces, so nothing valid is refused there. With `slot_steps=None` slots are sized
on demand and grow to the longest request they served.

Streaming hooks (both optional; a request without them decodes exactly as before):

- `on_frames(request, codes)`: after each step, the frames that just became complete (all
  codebooks present: the delay pattern undone, (codebooks, n) in `decode_codes`' layout) are handed
  to this callback, on the thread that runs `step`; a clip's frames arrive in order, each once, and
  their concatenation is its `FinishedClip.codes`. Keep it cheap (put the codes on a queue).
- `prefix`: codes (codebooks, frames) the clip continues from (MusicGen continuation, e.g.
  `continuation.prompt_codes` of the audio already played): the delay pattern is laid over
  start token + prefix, as transformers' `generate` does with an audio prompt, and the decoder runs
  through the prefix columns (its sampled tokens are discarded where the pattern is fixed) before
  the clip's own steps. The clip still gets `steps_for(duration)` new steps (its duration's frames);
  a prefix of P frames costs P more decoder steps and P more KV positions (`slot_steps` must hold
  them). `FinishedClip.codes` and `on_frames` carry only the new frames, not the prefix.

Not thread-safe: one thread drives `submit` and `step` (serving's model thread).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from musicops.models.decode import DecodeEngine
from musicops.models.sampling import GenerationParams, SamplingParams, filtered_logits


@dataclass
class ClipRequest:
    """One clip to decode; `tag` is the caller's handle, handed back with the result."""

    prompt: str
    params: GenerationParams
    seed: int
    tag: Any = None
    on_frames: Callable[[ClipRequest, Any], None] | None = None  # new complete frames after each step
    prefix: Any = None  # codes (codebooks, frames) to continue from (a decoder prefix), or None

    @property
    def prefix_frames(self) -> int:
        return 0 if self.prefix is None else int(self.prefix.shape[1])


@dataclass
class FinishedClip:
    """A request's codes once its last step ran, and what it shared the decoder with."""

    request: ClipRequest
    codes: Any  # LongTensor (num_codebooks, frames)
    steps: int  # decoder steps this clip took
    joined_at: int  # scheduler step at which it joined
    finished_at: int  # scheduler step after its last one
    seconds: float  # wall time from its prefill to its last step
    mean_batch: float  # mean clips in flight over its steps (for per-clip cost shares)


@dataclass
class StepResult:
    """What one `step` did: clips finished, requests whose admission failed, rows that decoded."""

    finished: list[FinishedClip] = field(default_factory=list)
    failed: list[tuple[ClipRequest, BaseException]] = field(default_factory=list)
    rows: int = 0  # clips that decoded in this step


@dataclass
class _Slot:
    """KV buffers of one request: per layer (keys, values), shape (2, heads, capacity, head_dim)."""

    kv: list[tuple[Any, Any]]
    capacity: int


@dataclass
class _Active:
    request: ClipRequest
    slot: _Slot
    steps: int
    length: int  # transformers' max_length: start token + steps
    guided: bool
    cross_kv: list[tuple[Any, Any]]
    cross_mask: Any
    pattern: Any  # (books, length)
    free: Any
    tokens: Any  # (books, steps + 1)
    generator: Any
    joined_at: int
    started: float
    position: int = 0
    batch_sum: int = 0
    prefix_frames: int = 0
    data_columns: Any = None  # (books, frames) column of each frame's token per codebook (on_frames only)
    last_columns: list[int] = field(default_factory=list)  # data_columns of the last codebook, as ints
    frames_sent: int = 0  # frames handed to on_frames (prefix frames count as sent)

    @property
    def rows(self) -> int:
        return 2 if self.guided else 1


class ContinuousBatch:
    """A running batch that requests join at any step and leave when their clip is done."""

    def __init__(self, engine: DecodeEngine, max_rows: int = 16, slot_steps: int | None = None) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        self.engine = engine
        self.max_rows = max_rows
        self.slot_steps = slot_steps
        self.waiting: deque[ClipRequest] = deque()
        self.active: list[_Active] = []
        self.steps_run = 0  # decode steps since creation (the scheduler's clock)
        self.row_steps = 0  # sum over steps of clips in flight
        self.peak_rows = 0  # most clips ever in flight in one step
        self._free: list[_Slot] = []
        self._slots = 0
        self._version = 0  # bumped whenever the set of clips in flight changes
        self._layout = -1
        self._groups: list[tuple[SamplingParams, Any, Any, list[_Active]]] = []

    # ---------------------------------------------------------------- queue
    def steps_for(self, params: GenerationParams) -> int:
        return self.engine.tokens_for(params.duration_s)

    def submit(self, request: ClipRequest) -> None:
        """Queue a request; it joins the running batch at the next step with a free place.
        Raises ValueError at once for a clip too short for the delay pattern or too long for a slot."""
        steps = self.steps_for(request.params)
        books = self.engine.num_codebooks
        depth = self.engine.channel_codebooks  # the delay pattern's depth (books per audio channel)
        if steps + 1 < 2 * depth - 1:
            raise ValueError(f"a clip needs at least {depth - 1} frames for the delay pattern")
        if request.prefix is not None:
            shape = tuple(request.prefix.shape)
            if len(shape) != 2 or shape[0] != books or shape[1] < 1:
                raise ValueError(f"a prefix must be codes ({books}, frames >= 1), got shape {shape}")
        needed = steps + request.prefix_frames
        if self.slot_steps is not None and needed > self.slot_steps:
            extra = f" + {request.prefix_frames} prefix frames" if request.prefix_frames else ""
            raise ValueError(f"{request.params.duration_s:g} s{extra} needs {needed} decode steps; a KV slot holds "
                             f"{self.slot_steps}")
        self.waiting.append(request)

    @property
    def in_flight(self) -> int:
        return len(self.active)

    @property
    def free_places(self) -> int:
        return self.max_rows - len(self.active)

    @property
    def idle(self) -> bool:
        return not self.active and not self.waiting

    def kv_bytes(self) -> int:
        """Bytes held by KV slots now (allocated slots, in use or free)."""
        total = 0
        for slot in [a.slot for a in self.active] + self._free:
            total += sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in slot.kv)
        return total

    # ------------------------------------------------------------- admission
    def _slot(self, steps: int) -> _Slot:
        import torch

        want = self.slot_steps if self.slot_steps is not None else steps
        for index, slot in enumerate(self._free):
            if slot.capacity >= steps:
                return self._free.pop(index)
        if self._free:  # on-demand sizing: grow a free slot rather than hold one more
            self._free.pop()
            self._slots -= 1
        layers = self.engine.decoder.model.decoder.layers
        attn = layers[0].self_attn
        shape = (2, attn.num_heads, want, attn.head_dim)
        kv = [(torch.empty(shape, dtype=self.engine.dtype, device=self.engine.device),
               torch.empty(shape, dtype=self.engine.dtype, device=self.engine.device)) for _ in layers]
        self._slots += 1
        return _Slot(kv, want)

    def _admit(self, request: ClipRequest) -> _Active:
        """Prefill of one request exactly as its solo `decode_codes` does it."""
        import torch

        engine = self.engine
        started = time.perf_counter()
        prefix = request.prefix_frames
        steps = self.steps_for(request.params) + prefix
        length = steps + 1
        guided = request.params.guidance_scale > 1
        hidden, mask = engine.encode([request.prompt], guided)
        cross_kv = engine._cross_attention(hidden, mask)
        pattern = engine._pattern([length]) if request.prefix is None else self._prefix_pattern(request.prefix, length)
        tokens = torch.full((engine.num_codebooks, steps + 1), engine.start_token, dtype=torch.long,
                            device=engine.device)
        generator = torch.Generator(device=engine.device).manual_seed(int(request.seed))
        item = _Active(request, self._slot(steps), steps, length, guided, cross_kv, mask.bool()[:, None, None, :],
                       pattern, pattern == -1, tokens, generator, self.steps_run, started, prefix_frames=prefix,
                       frames_sent=prefix)
        if request.on_frames is not None:
            data = pattern[:, :length] != engine.pad_token
            data[:, 0] = False  # the start column
            columns = torch.stack([torch.nonzero(row, as_tuple=False)[:, 0] for row in data])
            item.data_columns = columns
            item.last_columns = [int(c) for c in columns[-1]]
        return item

    def _prefix_pattern(self, prefix: Any, length: int) -> Any:
        """The delay pattern over start token + prefix codes (`build_delay_pattern_mask`, as transformers'
        `generate` lays it over an audio prompt): the prefix's columns are fixed, -1 where tokens go."""
        import torch

        engine = self.engine
        codes = torch.as_tensor(prefix, dtype=torch.long, device=engine.device)
        start = torch.full((engine.num_codebooks, 1), engine.start_token, dtype=torch.long, device=engine.device)
        _, pattern = engine.model.decoder.build_delay_pattern_mask(torch.cat([start, codes], dim=1),
                                                                   pad_token_id=engine.start_token,
                                                                   max_length=length)
        return pattern

    # ------------------------------------------------------------------ step
    def step(self) -> StepResult:
        """Admit waiting requests into free places, run one decoder step for every clip in flight,
        and return the clips that finished (their slots are free again)."""
        import torch

        result = StepResult()
        with torch.inference_mode():
            while self.waiting and len(self.active) < self.max_rows:
                request = self.waiting.popleft()
                try:
                    self.active.append(self._admit(request))
                    self._version += 1
                except Exception as exc:  # a request that cannot be prefilled fails alone
                    result.failed.append((request, exc))
            if not self.active:
                return result
            rows = len(self.active)
            self.peak_rows = max(self.peak_rows, rows)
            scores = self._forward()
            self._choose(scores)
            self.steps_run += 1
            self.row_steps += rows
            result.rows = rows
            still = []
            for item in self.active:
                item.position += 1
                item.batch_sum += rows
                if item.data_columns is not None:
                    self._send_frames(item)
                if item.position < item.steps:
                    still.append(item)
                    continue
                result.finished.append(self._finish(item))
                self._free.append(item.slot)
                self._version += 1
            self.active = still
        return result

    def _send_frames(self, item: _Active) -> None:
        """Hand the frames completed by this step (every codebook's token present) to `on_frames`."""
        import bisect

        import torch

        complete = bisect.bisect_right(item.last_columns, item.position)  # column `position` was just written
        if complete <= item.frames_sent:
            return
        columns = item.data_columns[:, item.frames_sent:complete]
        merged = torch.where(item.free, item.tokens, item.pattern)
        codes = torch.gather(merged, 1, columns)
        item.frames_sent = complete
        callback = item.request.on_frames
        assert callback is not None
        callback(item.request, codes)

    def _finish(self, item: _Active) -> FinishedClip:
        import torch

        engine = self.engine
        length = item.length
        out = torch.where(item.free[:, :length], item.tokens[:, :length], item.pattern[:, :length])
        codes = out[out != engine.pad_token].reshape(engine.num_codebooks, -1)
        if item.prefix_frames:
            codes = codes[:, item.prefix_frames:]
        return FinishedClip(item.request, codes, item.steps, item.joined_at, self.steps_run,
                            time.perf_counter() - item.started, item.batch_sum / max(1, item.steps))

    def _forward(self) -> Any:
        """One decoder forward over every clip in flight: `DecodeEngine._step`, with self- and
        cross-attention run per request over its own slot prefix and its own encoder states."""
        import torch
        from torch.nn.functional import scaled_dot_product_attention as sdpa

        engine = self.engine
        books = engine.num_codebooks
        decoder = engine.decoder.model.decoder
        active = self.active
        parts = []
        spans = []
        start = 0
        for item in active:
            p = item.position
            inputs = torch.where(item.free[:, p], item.tokens[:, p], item.pattern[:, p])
            parts.append(inputs.repeat(2) if item.guided else inputs)
            spans.append((start, start + item.rows, p))
            start += item.rows
        rows = start
        longest = max(item.steps for item in active)
        table = engine._positions(longest)
        index = torch.tensor([p for (a, b, p) in spans for _ in range(b - a)], dtype=torch.long,
                             device=engine.device)
        codes = torch.cat(parts).view(rows, books, 1)
        embeds = sum(decoder.embed_tokens[book](codes[:, book]) for book in range(books))
        hidden = embeds + table.index_select(0, index)[:, None, :]
        for layer_index, layer in enumerate(decoder.layers):
            attn = layer.self_attn
            shape = (rows, 1, -1, attn.head_dim)
            residual = hidden
            normed = layer.self_attn_layer_norm(hidden)
            query = attn.q_proj(normed).view(shape).transpose(1, 2)
            new_keys = attn.k_proj(normed).view(shape).transpose(1, 2)
            new_values = attn.v_proj(normed).view(shape).transpose(1, 2)
            outs = []
            for item, (a, b, p) in zip(active, spans, strict=True):
                keys, values = item.slot.kv[layer_index]
                n = b - a
                keys[:n, :, p:p + 1] = new_keys[a:b]
                values[:n, :, p:p + 1] = new_values[a:b]
                outs.append(sdpa(query[a:b], keys[:n, :, :p + 1], values[:n, :, :p + 1], attn_mask=None,
                                 dropout_p=0.0, scale=attn.scaling, is_causal=False))
            out = torch.cat(outs).transpose(1, 2).contiguous().reshape(rows, 1, -1).contiguous()
            hidden = residual + attn.out_proj(out)

            cross = layer.encoder_attn
            residual = hidden
            normed = layer.encoder_attn_layer_norm(hidden)
            query = cross.q_proj(normed).view(shape).transpose(1, 2)
            outs = []
            for item, (a, b, _) in zip(active, spans, strict=True):
                cross_k, cross_v = item.cross_kv[layer_index]
                outs.append(sdpa(query[a:b], cross_k, cross_v, attn_mask=item.cross_mask, dropout_p=0.0,
                                 scale=cross.scaling, is_causal=False))
            out = torch.cat(outs).transpose(1, 2).contiguous().reshape(rows, 1, -1).contiguous()
            hidden = residual + cross.out_proj(out)

            residual = hidden
            normed = layer.final_layer_norm(hidden)
            hidden = residual + layer.fc2(layer.activation_fn(layer.fc1(normed)))
        hidden = decoder.layer_norm(hidden)
        logits = torch.stack([head(hidden) for head in engine.decoder.lm_heads], dim=1)
        return logits.reshape(rows * books, -1).to(dtype=torch.float32)

    def _sampling_groups(self) -> list[tuple[SamplingParams, Any, Any, list[_Active]]]:
        """Clips in flight grouped by sampling params, with their cond and uncond logit rows
        (rebuilt only when the set of clips in flight changes)."""
        import torch

        if self._version == self._layout:
            return self._groups
        books = self.engine.num_codebooks
        grouped: dict[SamplingParams, list[_Active]] = {}
        bases = {}
        row = 0
        for item in self.active:
            grouped.setdefault(item.request.params.sampling(), []).append(item)
            bases[id(item)] = row
            row += item.rows
        groups = []
        for params, items in grouped.items():
            cond = [bases[id(i)] * books + b for i in items for b in range(books)]
            uncond = [(bases[id(i)] + 1) * books + b for i in items for b in range(books)] \
                if params.guidance_scale > 1 else []
            groups.append((params, torch.tensor(cond, dtype=torch.long, device=self.engine.device),
                           torch.tensor(uncond, dtype=torch.long, device=self.engine.device), items))
        self._layout, self._groups = self._version, groups
        return groups

    def _choose(self, scores: Any) -> None:
        """Next tokens: `DecodeEngine._choose`'s math per sampling group, each clip drawing from its
        own generator, written into each clip's tokens at its own position."""
        import torch

        books = self.engine.num_codebooks
        for params, cond_rows, uncond_rows, items in self._sampling_groups():
            cond = scores.index_select(0, cond_rows)
            if params.guidance_scale > 1:
                uncond = scores.index_select(0, uncond_rows)
                cond = uncond + (cond - uncond) * params.guidance_scale
            if not params.do_sample:
                picks = torch.argmax(cond, dim=-1)
            else:
                probs = filtered_logits(cond, params).softmax(-1)
                picks = torch.empty(probs.shape[0], dtype=torch.long, device=probs.device)
                for slot, item in enumerate(items):
                    part = slice(slot * books, (slot + 1) * books)
                    picks[part] = torch.multinomial(probs[part], 1, generator=item.generator)[:, 0]
            for slot, item in enumerate(items):
                item.tokens[:, item.position + 1] = picks[slot * books:(slot + 1) * books]

    # ----------------------------------------------------------------- helpers
    def run(self, requests: Iterable[ClipRequest]) -> Iterator[FinishedClip]:
        """Decode `requests` (all queued now) and yield each clip as it finishes; admission
        failures raise. For batch jobs: the same scheduling serving uses, without a server."""
        for request in requests:
            self.submit(request)
        while not self.idle:
            result = self.step()
            if result.failed:
                raise result.failed[0][1]
            yield from result.finished

    def audio(self, clip: FinishedClip) -> np.ndarray:
        """EnCodec for one finished clip (one clip at a time, as `DecodeEngine.generate` does)."""
        return self.engine.decode_audio([clip.codes], [clip.request.params.duration_s])[0]

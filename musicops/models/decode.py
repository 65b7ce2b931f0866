"""MusicGen decode engine: the generation loop of `MusicgenForConditionalGeneration.generate`, made explicit.

Why not `model.generate`: it re-runs the text projection every step, grows a dynamic KV cache by
concatenation (quadratic copying), samples a batch from one global RNG, and has no precision knob.
This engine keeps the arithmetic of transformers 5.x step for step (so fp32 greedy decoding emits
exactly its tokens, and sampled clips exactly those of the old `_PerItemSampler` path) and changes
only what costs time:

- the text encoder (+ `enc_to_dec_proj`) runs once per request; the cross-attention keys/values are
  computed once and kept for the whole decode;
- the decoder's self-attention keys/values go into buffers pre-allocated for the request's rows
  and steps and written in place (attention reads the filled prefix, the same values and shapes the
  dynamic cache would give, hence the bit-identical fp32 results);
- the delay pattern is applied per row (each item has its own length) and classifier-free guidance
  doubles the rows (conditional rows, then unconditional rows with zeroed, fully masked
  conditioning, as transformers does) in one batched decoder forward per step;
- sampling (temperature, top-k, top-p) runs per item with the item's own `torch.Generator`, so a
  clip depends only on its own prompt, seed and params, never on its batch mates; no host sync;
- precision: `fp32` (reference), `bf16` (decoder weights and activations), `int8` (dynamic
  quantisation of the decoder's Linear layers); the result names it for provenance;
- EnCodec decodes one clip at a time (batched decoding differs in the last float bit with batch size).
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from musicops import progress
from musicops.models.sampling import GenerationParams, SamplingParams, filtered_logits

PRECISIONS = ("fp32", "bf16", "int8")
DEFAULT_PRECISION = "fp32"


@dataclass
class DecodeResult:
    """Codes (and audio) of one request, the precision that made them, and where the time went."""

    codes: list[Any]  # one LongTensor (num_codebooks, frames) per item
    precision: str
    steps: int  # decoder forwards run (the longest item's tokens)
    rows: int  # decoder rows per step (items x codebooks, doubled under guidance)
    clips: list[np.ndarray] = field(default_factory=list)  # float32 (samples, channels), when decoded
    timings: dict[str, float] = field(default_factory=dict)  # prefill_s, decode_s, codec_s


@dataclass
class _Group:
    """Items sharing sampling params: their math runs on python scalars, exactly as the old sampler's."""

    params: SamplingParams
    items: list[int]
    rows: Any  # LongTensor of the items' conditional logit rows
    generators: list[Any]


def tokens_for(duration_s: float, frame_rate: float, num_codebooks: int) -> int:
    """Decoder steps for a duration: frames plus K-1, because the delay pattern eats K-1 frames
    (K = codebooks per audio channel: stereo's interleaved 2 x K codebooks are delayed as K)."""
    import math

    frames = max(1, math.ceil(duration_s * frame_rate))
    return frames + num_codebooks - 1


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    return precision


def prepare_decoder(decoder: Any, precision: str) -> Any:
    """The `MusicgenForCausalLM` to run: the model's own in fp32, a converted copy otherwise
    (the caller's model is never modified, so fp32 callers keep bit-identical output)."""
    import torch

    check_precision(precision)
    if precision == "fp32":
        return decoder
    clone = copy.deepcopy(decoder)
    if precision == "bf16":
        return clone.to(torch.bfloat16)
    with warnings.catch_warnings():  # torch.ao is deprecated in favour of torchao, which is not installed
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(clone, {torch.nn.Linear}, dtype=torch.qint8)


def weight_bytes(decoder: Any) -> int:
    """Bytes of decoder weights one step reads: the bandwidth floor's numerator.

    Counts every Linear (int8 packed weights for dynamically quantised ones) and norm weight, but not
    the token embeddings (a step gathers K rows) nor the cross-attention key/value projections
    (run once at prefill)."""
    import torch

    total = 0
    for name, module in decoder.named_modules():
        if name.endswith(("encoder_attn.k_proj", "encoder_attn.v_proj")) or isinstance(module, torch.nn.Embedding):
            continue
        weight = getattr(module, "weight", None)
        if callable(weight) and not isinstance(weight, torch.Tensor):  # torch.ao dynamic quantised Linear
            tensors = [weight(), module.bias()]
        else:
            tensors = list(module.parameters(recurse=False))
        total += sum(t.numel() * t.element_size() for t in tensors if t is not None)
    return int(total)


class DecodeEngine:
    """Prefill once, then one batched decoder forward per step over a pre-allocated KV cache."""

    def __init__(self, model: Any, processor: Any, precision: str = DEFAULT_PRECISION):
        import torch

        self.model = model
        self.processor = processor
        self.precision = check_precision(precision)
        self.decoder = prepare_decoder(model.decoder, precision)
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.device = next(model.parameters()).device
        config = model.decoder.config
        self.num_codebooks = int(config.num_codebooks)
        self.audio_channels = int(config.audio_channels)
        # codebooks per audio channel: the delay pattern's depth (stereo interleaves 2 x K codebooks,
        # left and right delayed alike, as `build_delay_pattern_mask` does)
        self.channel_codebooks = self.num_codebooks // self.audio_channels
        gen = model.generation_config
        start = gen.decoder_start_token_id if gen.decoder_start_token_id is not None else gen.bos_token_id
        self.start_token = int(start)
        self.pad_token = int(gen.pad_token_id)
        self.sample_rate = int(model.config.audio_encoder.sampling_rate)
        self.frame_rate = float(model.config.audio_encoder.frame_rate)
        self._cache: dict[str, Any] = {}

    @classmethod
    def for_model(cls, musicgen: Any, precision: str = DEFAULT_PRECISION) -> DecodeEngine:
        """An engine over a `TransformersMusicGen` (or anything with `.model` and `.processor`)."""
        return cls(musicgen.model, musicgen.processor, precision)

    def tokens_for(self, duration_s: float) -> int:
        return tokens_for(duration_s, self.frame_rate, self.channel_codebooks)

    def weight_bytes(self) -> int:
        return weight_bytes(self.decoder)

    # ------------------------------------------------------------------ prefill
    def encode(self, prompts: Sequence[str], guided: bool) -> tuple[Any, Any]:
        """Text encoder + projection once per request: (encoder hidden states, attention mask),
        with the null conditioning (zeros, fully masked) appended when guided, exactly as
        `_prepare_text_encoder_kwargs_for_generation` and `forward` build it."""
        import torch

        inputs = self.processor(text=list(prompts), padding=True, return_tensors="pt").to(self.device)
        mask = inputs["attention_mask"]
        hidden = self.model.text_encoder(input_ids=inputs["input_ids"], attention_mask=mask,
                                         return_dict=True).last_hidden_state
        if guided:
            hidden = torch.concatenate([hidden, torch.zeros_like(hidden)], dim=0)
            mask = torch.concatenate([mask, torch.zeros_like(mask)], dim=0)
        config = self.model.config
        if (config.text_encoder.hidden_size != config.decoder.hidden_size
                and config.decoder.cross_attention_hidden_size is None):
            hidden = self.model.enc_to_dec_proj(hidden)
        hidden = hidden * mask[..., None]
        return hidden.to(self.dtype), mask

    def _cross_attention(self, hidden: Any, mask: Any) -> list[tuple[Any, Any]]:
        """Cross-attention keys/values of every layer, computed once (contiguous, as the cache stores them)."""
        rows, length = hidden.shape[:2]
        cross = []
        for layer in self.decoder.model.decoder.layers:
            attn = layer.encoder_attn
            shape = (rows, length, -1, attn.head_dim)
            keys = attn.k_proj(hidden).view(shape).transpose(1, 2).contiguous()
            values = attn.v_proj(hidden).view(shape).transpose(1, 2).contiguous()
            cross.append((keys, values))
        return cross

    def _self_cache(self, rows: int, steps: int) -> list[tuple[Any, Any]]:
        """Self-attention K/V buffers for `rows` x `steps`, reused while a request has the same shape."""
        import torch

        layers = self.decoder.model.decoder.layers
        attn = layers[0].self_attn
        shape = (rows, attn.num_heads, steps, attn.head_dim)
        cached = self._cache.get("self")
        if cached is not None and tuple(cached[0][0].shape) == shape:
            return cached
        buffers = [(torch.empty(shape, dtype=self.dtype, device=self.device),
                    torch.empty(shape, dtype=self.dtype, device=self.device)) for _ in layers]
        self._cache["self"] = buffers
        return buffers

    def release_cache(self) -> None:
        """Drop the KV buffers (they are kept between same-shaped requests)."""
        self._cache.clear()

    def _pattern(self, lengths: list[int]) -> Any:
        """Per-row delay pattern (`build_delay_pattern_mask` of each item at its own max_length),
        padded with the pad id beyond an item's length: -1 where a generated token goes in."""
        import torch

        decoder = self.model.decoder
        width = max(lengths)
        patterns = []
        for length in lengths:
            start = torch.full((self.num_codebooks, 1), self.start_token, dtype=torch.long, device=self.device)
            _, pattern = decoder.build_delay_pattern_mask(start, pad_token_id=self.start_token, max_length=length)
            if length < width:
                pattern = torch.nn.functional.pad(pattern, (0, width - length), value=self.start_token)
            patterns.append(pattern)
        return torch.cat(patterns, dim=0)

    # ------------------------------------------------------------------- decode
    def _step(self, inputs: Any, position: int, self_kv: list[tuple[Any, Any]],
              cross_kv: list[tuple[Any, Any]], cross_mask: Any, positions: Any) -> Any:
        """One decoder forward for all rows at `position`: MusicgenDecoder + lm heads, op for op."""
        import torch
        from torch.nn.functional import scaled_dot_product_attention as sdpa

        decoder = self.decoder.model.decoder
        rows = inputs.shape[0] // self.num_codebooks  # decoder batch rows (items, doubled under guidance)
        codes = inputs.view(rows, self.num_codebooks, 1)
        embeds = sum(decoder.embed_tokens[book](codes[:, book]) for book in range(self.num_codebooks))
        hidden = embeds + positions[position:position + 1]
        for layer, (keys, values), (cross_k, cross_v) in zip(decoder.layers, self_kv, cross_kv, strict=True):
            attn = layer.self_attn
            shape = (rows, 1, -1, attn.head_dim)
            residual = hidden
            normed = layer.self_attn_layer_norm(hidden)
            query = attn.q_proj(normed).view(shape).transpose(1, 2)
            keys[:, :, position:position + 1] = attn.k_proj(normed).view(shape).transpose(1, 2)
            values[:, :, position:position + 1] = attn.v_proj(normed).view(shape).transpose(1, 2)
            out = sdpa(query, keys[:, :, :position + 1], values[:, :, :position + 1], attn_mask=None,
                       dropout_p=0.0, scale=attn.scaling, is_causal=False)
            out = out.transpose(1, 2).contiguous().reshape(rows, 1, -1).contiguous()
            hidden = residual + attn.out_proj(out)

            cross = layer.encoder_attn
            residual = hidden
            normed = layer.encoder_attn_layer_norm(hidden)
            query = cross.q_proj(normed).view(shape).transpose(1, 2)
            out = sdpa(query, cross_k, cross_v, attn_mask=cross_mask, dropout_p=0.0, scale=cross.scaling,
                       is_causal=False)
            out = out.transpose(1, 2).contiguous().reshape(rows, 1, -1).contiguous()
            hidden = residual + cross.out_proj(out)

            residual = hidden
            normed = layer.final_layer_norm(hidden)
            hidden = residual + layer.fc2(layer.activation_fn(layer.fc1(normed)))
        hidden = decoder.layer_norm(hidden)
        logits = torch.stack([head(hidden) for head in self.decoder.lm_heads], dim=1)
        return logits.reshape(rows * self.num_codebooks, -1).to(dtype=torch.float32)

    def _choose(self, scores: Any, groups: list[_Group], conditional_rows: int, guided: bool) -> Any:
        """Next token per conditional row: guidance, then greedy or per-item sampling (the math of
        the old `_PerItemSampler`, applied to each group with its params as python scalars)."""
        import torch

        chosen = torch.empty(conditional_rows, dtype=torch.long, device=scores.device)
        for group in groups:
            params = group.params
            cond = scores.index_select(0, group.rows)
            if guided and params.guidance_scale > 1:
                uncond = scores.index_select(0, group.rows + conditional_rows)
                cond = uncond + (cond - uncond) * params.guidance_scale
            if not params.do_sample:
                chosen.index_copy_(0, group.rows, torch.argmax(cond, dim=-1))
                continue
            probs = filtered_logits(cond, params).softmax(-1)
            picks = torch.empty(probs.shape[0], dtype=torch.long, device=probs.device)
            for slot, generator in enumerate(group.generators):
                part = slice(slot * self.num_codebooks, (slot + 1) * self.num_codebooks)
                picks[part] = torch.multinomial(probs[part], 1, generator=generator)[:, 0]
            chosen.index_copy_(0, group.rows, picks)
        return chosen

    def _groups(self, params: list[GenerationParams], seeds: list[int]) -> list[_Group]:
        import torch

        groups: dict[SamplingParams, _Group] = {}
        for item, (item_params, seed) in enumerate(zip(params, seeds, strict=True)):
            key = item_params.sampling()
            group = groups.setdefault(key, _Group(key, [], None, []))
            group.items.append(item)
            group.generators.append(torch.Generator(device=self.device).manual_seed(int(seed)))
        books = self.num_codebooks
        for group in groups.values():
            rows = [item * books + book for item in group.items for book in range(books)]
            group.rows = torch.tensor(rows, dtype=torch.long, device=self.device)
        return list(groups.values())

    def decode_codes(self, prompts: Sequence[str], params: GenerationParams | Sequence[GenerationParams],
                     seeds: int | Sequence[int]) -> DecodeResult:
        """Audio codes for each prompt (no EnCodec): prefill, then the step loop.

        Items may differ in params (duration included): each keeps its own delay pattern and
        sampling, and its codes equal those it would get alone.
        """
        import torch

        items = len(prompts)
        plist = list(params) if isinstance(params, Sequence) else [params] * items
        slist = list(seeds) if isinstance(seeds, Sequence) else [seeds] * items
        if len(plist) != items or len(slist) != items:
            raise ValueError(f"got {len(plist)} params and {len(slist)} seeds for {items} prompts")
        books = self.num_codebooks
        if items == 0:
            return DecodeResult([], self.precision, 0, 0)
        steps_per_item = [self.tokens_for(p.duration_s) for p in plist]
        lengths = [steps + 1 for steps in steps_per_item]  # transformers' max_length: start token + new tokens
        depth = self.channel_codebooks
        if min(lengths) < 2 * depth - 1:
            raise ValueError(f"a clip needs at least {depth - 1} frames for the delay pattern")
        steps = max(steps_per_item)
        guided = any(p.guidance_scale > 1 for p in plist)
        with torch.inference_mode():
            started = time.perf_counter()
            hidden, mask = self.encode(prompts, guided)
            cross_kv = self._cross_attention(hidden, mask)
            cross_mask = mask.bool()[:, None, None, :]
            prefill_s = time.perf_counter() - started

            started = time.perf_counter()
            rows = items * books * (2 if guided else 1)
            self_kv = self._self_cache(rows // books, steps)
            positions = self._positions(steps)
            pattern = self._pattern(lengths)
            free = pattern == -1
            tokens = torch.full((items * books, steps + 1), self.start_token, dtype=torch.long, device=self.device)
            groups = self._groups(plist, slist)
            for position in range(steps):
                inputs = torch.where(free[:, position], tokens[:, position], pattern[:, position])
                if guided:
                    inputs = inputs.repeat(2)
                scores = self._step(inputs, position, self_kv, cross_kv, cross_mask, positions)
                tokens[:, position + 1] = self._choose(scores, groups, items * books, guided)
                progress.update("decode steps", position + 1, steps)
            codes = []
            for item, length in enumerate(lengths):
                part = slice(item * books, (item + 1) * books)
                out = torch.where(free[part, :length], tokens[part, :length], pattern[part, :length])
                codes.append(out[out != self.pad_token].reshape(books, -1))
            decode_s = time.perf_counter() - started
        return DecodeResult(codes, self.precision, steps, rows,
                            timings={"prefill_s": prefill_s, "decode_s": decode_s})

    def _positions(self, steps: int) -> Any:
        """Sinusoidal position table covering `steps` (extended as transformers' forward would)."""
        embed = self.decoder.model.decoder.embed_positions
        if steps > embed.weights.size(0):
            embed.make_weights(steps, embed.embedding_dim)
        return embed.weights

    # -------------------------------------------------------------------- audio
    def decode_audio(self, codes: list[Any], durations: Sequence[float]) -> list[np.ndarray]:
        """EnCodec, one clip at a time, trimmed or zero-padded to the requested duration's samples."""
        import torch

        codec = self.model.audio_encoder
        clips = []
        with torch.inference_mode():
            for item_codes, duration in zip(codes, durations, strict=True):
                frames = item_codes[None, None]  # (frames=1, batch=1, codebooks, steps)
                if self.audio_channels == 1:
                    audio = codec.decode(frames, [None]).audio_values
                else:
                    left = codec.decode(frames[:, :, ::2], [None]).audio_values
                    right = codec.decode(frames[:, :, 1::2], [None]).audio_values
                    audio = torch.cat([left, right], dim=1)
                clip = audio.detach().float().cpu().numpy()[0].T
                target = int(round(duration * self.sample_rate))
                clip = clip[:target]
                if clip.shape[0] < target:  # decoders may come up a few samples short
                    clip = np.pad(clip, ((0, target - clip.shape[0]), (0, 0)))
                clips.append(np.ascontiguousarray(clip, dtype=np.float32))
        return clips

    def generate(self, prompts: Sequence[str], params: GenerationParams | Sequence[GenerationParams],
                 seeds: int | Sequence[int]) -> DecodeResult:
        """Codes and float32 clips (samples, channels) for each prompt; `precision` says how."""
        result = self.decode_codes(prompts, params, seeds)
        plist = list(params) if isinstance(params, Sequence) else [params] * len(prompts)
        started = time.perf_counter()
        result.clips = self.decode_audio(result.codes, [p.duration_s for p in plist])
        result.timings["codec_s"] = time.perf_counter() - started
        return result

"""The decode engine: exact fp32 parity with transformers `generate`, batch independence, precisions."""

from __future__ import annotations

import numpy as np
import pytest

from musicops.models.base import GenerationParams
from musicops.models.decode import DecodeEngine
from musicops.models.musicgen import TransformersMusicGen

# mixed lengths, so the text encoder pads and the cross-attention masks differ per row
PROMPTS = ["calm piano", "a much longer prompt about energetic drums and bass at 128 BPM", "dreamy pad"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/models/conftest.py


@pytest.fixture(scope="module")
def tiny() -> TransformersMusicGen:
    return TransformersMusicGen.from_preset("musicgen-tiny")


@pytest.fixture(scope="module")
def engine(tiny: TransformersMusicGen) -> DecodeEngine:
    return DecodeEngine.for_model(tiny)


def transformers_codes(tiny: TransformersMusicGen, prompts: list[str], params: GenerationParams):
    """The audio codes transformers' own greedy `generate` hands to EnCodec (caught on the way in)."""
    import torch

    from musicops.models.musicgen import _quiet_transformers

    seen = []
    codec = tiny.model.audio_encoder

    def spy(codes, *args, **kwargs):
        seen.append(codes.clone())
        return type(codec).decode(codec, codes, *args, **kwargs)

    codec.decode = spy
    try:
        inputs = tiny.processor(text=prompts, padding=True, return_tensors="pt")
        with torch.inference_mode(), _quiet_transformers():
            tiny.model.generate(**inputs, max_new_tokens=tiny.tokens_for(params.duration_s), do_sample=False,
                                guidance_scale=params.guidance_scale if params.guidance_scale > 1 else None)
    finally:
        del codec.decode
    return seen[0][0]  # (batch, codebooks, frames)


@pytest.mark.parametrize("guidance", [3.0, 1.0])
def test_fp32_greedy_codes_equal_transformers_generate(tiny, engine, guidance: float) -> None:
    import torch

    params = GenerationParams(duration_s=0.6, do_sample=False, guidance_scale=guidance)
    expected = transformers_codes(tiny, PROMPTS, params)
    result = engine.decode_codes(PROMPTS, params, seeds=0)
    assert result.precision == "fp32"
    assert torch.equal(torch.stack(result.codes), expected)


@pytest.mark.parametrize("params", [
    GenerationParams(duration_s=0.6, do_sample=False, guidance_scale=3.0),
    GenerationParams(duration_s=0.6, do_sample=False, guidance_scale=1.0),
    GenerationParams(duration_s=0.6, temperature=0.9, top_k=50, top_p=0.95),
], ids=["greedy-guided", "greedy-unguided", "sampled"])
def test_fp32_audio_equals_the_transformers_path(tiny, engine, params: GenerationParams) -> None:
    """The same float32 clips as `generate_reference`: transformers `generate` with the per-item sampler
    and one-by-one EnCodec (the backend before the engine), so assets made before stay reproducible."""
    seeds = [11, 12, 13]
    expected = tiny.generate_reference(PROMPTS, params, seeds)
    clips = engine.generate(PROMPTS, params, seeds).clips
    assert all(np.array_equal(a, b) for a, b in zip(clips, expected, strict=True))
    assert all(clip.shape == (int(round(0.6 * tiny.sample_rate)), 1) for clip in clips)


def test_sampled_clip_does_not_depend_on_its_batch(engine) -> None:
    params = GenerationParams(duration_s=0.5)
    batch = engine.generate(PROMPTS, params, [21, 22, 23]).clips
    alone = engine.generate(PROMPTS[1:2], params, [22]).clips[0]
    assert np.array_equal(alone, batch[1])
    assert not np.array_equal(batch[0], batch[2])


def test_items_with_their_own_params_match_their_solo_runs(engine) -> None:
    """Per-row delay patterns and per-item sampling: mixed durations and params share one step loop."""
    import torch

    params = [GenerationParams(duration_s=0.5), GenerationParams(duration_s=0.3, do_sample=False),
              GenerationParams(duration_s=0.4, temperature=0.7, top_k=0, top_p=0.9)]
    mixed = engine.decode_codes(PROMPTS, params, [1, 2, 3])
    for prompt, item_params, seed, codes in zip(PROMPTS, params, [1, 2, 3], mixed.codes, strict=True):
        assert torch.equal(engine.decode_codes([prompt], item_params, seed).codes[0], codes)
    assert [c.shape[-1] for c in mixed.codes] == [int(round(p.duration_s * 50)) for p in params]


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_lower_precisions_run_and_report_agreement(tiny, engine, precision: str, record_property) -> None:
    import torch

    params = GenerationParams(duration_s=0.5, do_sample=False)
    reference = torch.stack(engine.decode_codes(PROMPTS, params, 0).codes)
    lower = DecodeEngine.for_model(tiny, precision)
    result = lower.generate(PROMPTS, params, 0)
    assert result.precision == precision
    codes = torch.stack(result.codes)
    assert codes.shape == reference.shape and int(codes.max()) < 2048
    assert all(np.isfinite(clip).all() for clip in result.clips)
    agreement = float((codes == reference).float().mean())
    record_property(f"token_agreement_{precision}", agreement)
    print(f"{precision} greedy token agreement vs fp32: {agreement:.3f}")
    assert lower.weight_bytes() < engine.weight_bytes()
    # the caller's model stays fp32: its own engine still gives the reference
    assert torch.equal(torch.stack(engine.decode_codes(PROMPTS, params, 0).codes), reference)


def test_bad_arguments_are_named(tiny, engine) -> None:
    with pytest.raises(ValueError, match="precision"):
        DecodeEngine.for_model(tiny, "fp8")
    with pytest.raises(ValueError, match="seeds"):
        engine.decode_codes(PROMPTS, GenerationParams(duration_s=0.5), [1])
    assert engine.decode_codes([], GenerationParams(duration_s=0.5), 0).codes == []


# ------------------------------------------------------------------ continuous batching
MIXED = [GenerationParams(duration_s=0.5), GenerationParams(duration_s=1.2, do_sample=False, guidance_scale=3.0),
         GenerationParams(duration_s=0.7, temperature=0.7, top_k=0, top_p=0.9),
         GenerationParams(duration_s=0.6, guidance_scale=1.0),
         GenerationParams(duration_s=0.9, do_sample=False, guidance_scale=1.0)]
MIXED_PROMPTS = [*PROMPTS, "x", "lofi beat with vinyl crackle"]


def test_continuous_batch_clips_equal_solo_generate(tiny) -> None:
    """Clips that join a running batch at different steps (and wait for a free place) are
    bit-identical to `generate` of each alone; never more clips in flight than max_rows."""
    from musicops.models.continuous import ClipRequest

    requests = [ClipRequest(p, q, 100 + i, tag=i) for i, (p, q) in enumerate(zip(MIXED_PROMPTS, MIXED, strict=True))]
    solo = [tiny.generate([r.prompt], r.params, r.seed)[0] for r in requests]
    batch = tiny.continuous(max_rows=3)
    joins = {0: [0, 1], 5: [2], 9: [3, 4]}  # scheduler step -> requests submitted then
    done: dict[int, tuple[np.ndarray, int]] = {}
    while joins or not batch.idle:
        for index in joins.pop(batch.steps_run, []):
            batch.submit(requests[index])
        result = batch.step()
        assert result.rows <= 3 and not result.failed
        for clip in result.finished:
            done[clip.request.tag] = (batch.audio(clip), clip.joined_at)
    assert batch.peak_rows == 3
    assert sorted({joined for _, joined in done.values()}) == [0, 5, 28, 43]  # 3 and 4 waited for places
    for index, expected in enumerate(solo):
        assert np.array_equal(done[index][0], expected), f"clip {index} differs from its solo run"


def test_continuous_short_clip_leaves_before_a_long_one(tiny) -> None:
    from musicops.models.continuous import ClipRequest

    batch = tiny.continuous(max_rows=4)
    batch.submit(ClipRequest("long", GenerationParams(duration_s=2.0), 1, tag="long"))
    for _ in range(10):
        batch.step()
    batch.submit(ClipRequest("short", GenerationParams(duration_s=0.5), 2, tag="short"))
    order = [clip.request.tag for clip in batch.run([])]
    assert order == ["short", "long"]


def test_continuous_slots_bound_memory_and_refuse_longer_clips(tiny) -> None:
    from musicops.models.continuous import ClipRequest

    steps = tiny.tokens_for(1.0)
    batch = tiny.continuous(max_rows=2, slot_steps=steps)
    with pytest.raises(ValueError, match="KV slot"):
        batch.submit(ClipRequest("too long", GenerationParams(duration_s=1.5), 0))
    requests = [ClipRequest(f"clip {i}", GenerationParams(duration_s=0.5 + 0.1 * (i % 3)), i, tag=i) for i in range(6)]
    codes = {clip.request.tag: clip.codes for clip in batch.run(requests)}
    assert batch.peak_rows == 2 and len(codes) == 6
    one_slot = batch.kv_bytes() // 2
    assert batch.kv_bytes() == 2 * one_slot  # two slots, reused by all six clips
    engine = tiny.engine()
    for request in requests:
        assert torch_equal(codes[request.tag], engine.decode_codes([request.prompt], request.params, request.seed).codes[0])


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_continuous_frames_arrive_incrementally_and_equal_the_clip(tiny) -> None:
    """on_frames: the frames completed by each step arrive in order, each once, well before the clip
    ends; their concatenation is the finished clip's codes, which stay bit-identical to a solo run."""
    import torch

    from musicops.models.continuous import ClipRequest

    params = GenerationParams(duration_s=0.5)
    got: list[tuple[int, int]] = []  # (scheduler step, frames)
    parts = []
    batch = tiny.continuous(max_rows=2)

    def on_frames(request, codes) -> None:
        got.append((batch.steps_run, codes.shape[1]))
        parts.append(codes.clone())

    batch.submit(ClipRequest("streamed", params, 5, tag="s", on_frames=on_frames))
    batch.submit(ClipRequest("plain", params, 6, tag="p"))
    clips = {clip.request.tag: clip for clip in batch.run([])}
    steps = tiny.tokens_for(0.5)
    books = tiny.num_codebooks
    assert got[0] == (books, 1)  # the first frame is complete after K steps (the delay pattern)
    assert all(n == 1 for _, n in got) and len(got) == steps - books + 1
    assert torch.equal(torch.cat(parts, dim=1), clips["s"].codes)
    engine = tiny.engine()
    assert torch.equal(clips["s"].codes, engine.decode_codes(["streamed"], params, 5).codes[0])
    assert torch.equal(clips["p"].codes, engine.decode_codes(["plain"], params, 6).codes[0])


def test_continuous_prefix_continues_like_transformers_generate_with_an_audio_prompt(tiny) -> None:
    """A decoder prefix (continuation codes) is laid under the delay pattern and decoded through, as
    transformers' `generate` does with decoder prompt codes: greedy new frames are identical."""
    import torch

    from musicops.models.continuous import ClipRequest
    from musicops.models.musicgen import _quiet_transformers

    params = GenerationParams(duration_s=0.3, do_sample=False, guidance_scale=1.0)
    books = tiny.num_codebooks
    prefix = torch.randint(0, 2048, (books, 7), generator=torch.Generator().manual_seed(3))
    batch = tiny.continuous(max_rows=2, slot_steps=tiny.tokens_for(0.3) + 7)
    parts = []
    batch.submit(ClipRequest("continue me", params, 0, on_frames=lambda r, c: parts.append(c.clone()),
                             prefix=prefix))
    batch.submit(ClipRequest("no prefix", params, 1))  # alongside a clip without one
    clips = {clip.request.prompt: clip for clip in batch.run([])}
    new = clips["continue me"].codes
    steps = tiny.tokens_for(0.3)
    assert new.shape == (books, steps - books + 1)
    assert torch.equal(torch.cat(parts, dim=1), new)

    inputs = tiny.processor(text=["continue me"], padding=True, return_tensors="pt")
    start = torch.full((books, 1), int(tiny.model.generation_config.decoder_start_token_id), dtype=torch.long)
    caught = []
    original = tiny.model.audio_encoder.decode

    def spy(codes, *args, **kwargs):
        caught.append(codes.clone())
        return original(codes, *args, **kwargs)

    with _quiet_transformers(), torch.inference_mode():
        tiny.model.audio_encoder.decode = spy
        try:
            tiny.model.generate(**inputs, decoder_input_ids=torch.cat([start, prefix], dim=1), max_new_tokens=steps,
                                do_sample=False, guidance_scale=None)
        finally:
            tiny.model.audio_encoder.decode = original
    reference = caught[0][0, 0]  # (books, prefix + new frames)
    assert torch.equal(reference[:, :7], prefix)
    assert torch.equal(reference[:, 7:], new)
    assert torch.equal(clips["no prefix"].codes, tiny.engine().decode_codes(["no prefix"], params, 1).codes[0])
    with pytest.raises(ValueError, match="KV slot"):
        batch.submit(ClipRequest("too long", params, 0, prefix=torch.zeros((books, 8), dtype=torch.long)))
    with pytest.raises(ValueError, match="prefix must be codes"):
        batch.submit(ClipRequest("bad", params, 0, prefix=torch.zeros((books + 1, 2), dtype=torch.long)))


# ------------------------------------------------------------------ stereo (musicgen-stereo-tiny)
@pytest.fixture(scope="module")
def stereo() -> TransformersMusicGen:
    return TransformersMusicGen.from_preset("musicgen-stereo-tiny")


@pytest.mark.parametrize("guidance", [3.0, 1.0])
def test_stereo_fp32_greedy_codes_equal_transformers_generate(stereo, guidance: float) -> None:
    """2 x 4 interleaved codebooks (left/right delayed alike): the engine's codes are transformers' own."""
    import torch

    from musicops.models.musicgen import _quiet_transformers

    params = GenerationParams(duration_s=0.6, do_sample=False, guidance_scale=guidance)
    seen = []  # transformers decodes left (codebooks 0, 2, ...) then right (1, 3, ...)
    codec = stereo.model.audio_encoder

    def spy(codes, *args, **kwargs):
        seen.append(codes.clone())
        return type(codec).decode(codec, codes, *args, **kwargs)

    codec.decode = spy
    try:
        inputs = stereo.processor(text=PROMPTS, padding=True, return_tensors="pt")
        with torch.inference_mode(), _quiet_transformers():
            stereo.model.generate(**inputs, max_new_tokens=stereo.tokens_for(params.duration_s), do_sample=False,
                                  guidance_scale=guidance if guidance > 1 else None)
    finally:
        del codec.decode
    left, right = seen[0][0], seen[1][0]
    expected = torch.stack([left, right], dim=2).flatten(1, 2)  # interleave back to (batch, 8, frames)
    result = DecodeEngine.for_model(stereo).decode_codes(PROMPTS, params, seeds=0)
    assert expected.shape[1] == 8
    assert torch.equal(torch.stack(result.codes), expected)


def test_stereo_continuous_batch_clips_equal_solo_generate(stereo) -> None:
    from musicops.models.continuous import ClipRequest

    requests = [ClipRequest(p, q, 100 + i, tag=i) for i, (p, q) in enumerate(zip(MIXED_PROMPTS, MIXED, strict=True))]
    solo = [stereo.generate([r.prompt], r.params, r.seed)[0] for r in requests]
    batch = stereo.continuous(max_rows=3)
    done = {clip.request.tag: batch.audio(clip) for clip in batch.run(requests)}
    for index, expected in enumerate(solo):
        assert expected.shape[1] == 2
        assert np.array_equal(done[index], expected), f"clip {index} differs from its solo run"

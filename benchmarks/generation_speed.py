"""Generation speed against the hardware's limit: the decode engine per precision vs transformers `generate`.

Models: the `musicgen-tiny` preset and a random-init model with MusicGen-small's exact shapes (T5-base
text encoder, 24-layer x 1024 decoder with 16 heads, 4 x 2048 codebooks, EnCodec 32 kHz), built
offline: no weights are downloaded, so its audio is noise, but its cost per step is the real one.
Everything is measured in this run (baselines included) and printed as one JSON object with `--json`.

Default run is short (2 s clips); `--full` uses 8 s clips as in issue #16's acceptance. Guidance is on
(scale 3) everywhere, which doubles the decoder rows. Never part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from typing import Any

GUIDANCE = 3.0


def build_small_shapes(seed: int = 0) -> Any:
    """A random-init `TransformersMusicGen` with facebook/musicgen-small's shapes (config built in code)."""
    import torch
    from transformers import (
        EncodecConfig,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        T5Config,
    )

    from musicops.models.base import ModelInfo
    from musicops.models.musicgen import TransformersMusicGen, _quiet_transformers
    from musicops.models.tiny import build_tiny_musicgen, configure_generation

    with _quiet_transformers():  # MusicGen's pad ids lie outside the vocabulary by design
        text = T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_decoder_layers=12,
                        num_heads=12, feed_forward_proj="relu", decoder_start_token_id=0)  # type: ignore[call-arg]
        audio = EncodecConfig(sampling_rate=32_000, audio_channels=1, hidden_size=128, num_filters=64,
                              num_residual_layers=1, upsampling_ratios=[8, 5, 4, 4], num_lstm_layers=2,
                              codebook_size=2048, target_bandwidths=[2.2], normalize=False,
                              norm_type="weight_norm", chunk_length_s=None, overlap=None)
        decoder = MusicgenDecoderConfig(vocab_size=2048, hidden_size=1024, num_hidden_layers=24, ffn_dim=4096,
                                        num_attention_heads=16, num_codebooks=4, max_position_embeddings=2048,
                                        pad_token_id=2048, bos_token_id=2048,
                                        decoder_start_token_id=2048)  # type: ignore[call-arg]
        config = MusicgenConfig(text_encoder=text, audio_encoder=audio, decoder=decoder)
        torch.manual_seed(seed)
        model = MusicgenForConditionalGeneration(config)
        _, processor = build_tiny_musicgen(seed)  # its T5 tokenizer's ids fit T5-base's vocabulary
    configure_generation(model)
    model.eval()
    return TransformersMusicGen(model, processor, ModelInfo(name="musicgen-small-shapes-random-init",
                                                            source="benchmark:random-init"))


def bandwidth_gbps(threads: int, megabytes: int = 512, repeats: int = 5) -> float:
    """Memory bandwidth from a large tensor copy (bytes read + written per second), best of `repeats`."""
    import torch

    src = torch.ones(megabytes * 2**20 // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - started)
    return 2 * src.numel() * 4 / best / 1e9


def prompts_for(count: int) -> list[str]:
    return [f"upbeat electronic loop number {i} with drums and bass at 120 BPM" for i in range(count)]


def transformers_rtf(musicgen: Any, clips: int, seconds: float) -> float:
    """Plain transformers `generate` (sampling, guidance 3, its own cache and batched EnCodec)."""
    import torch

    from musicops.models.musicgen import _quiet_transformers

    inputs = musicgen.processor(text=prompts_for(clips), padding=True, return_tensors="pt")
    started = time.perf_counter()
    with torch.inference_mode(), _quiet_transformers():
        musicgen.model.generate(**inputs, max_new_tokens=musicgen.tokens_for(seconds), do_sample=True,
                                guidance_scale=GUIDANCE, top_k=250)
    return clips * seconds / (time.perf_counter() - started)


def greedy_parity(musicgen: Any) -> bool:
    """fp32 greedy codes of the engine == transformers `generate`'s, on a short mixed-length batch."""
    import torch

    from musicops.models.base import GenerationParams
    from musicops.models.decode import DecodeEngine
    from musicops.models.musicgen import _quiet_transformers

    prompts = ["calm piano", "a much longer prompt about energetic drums and bass at 128 BPM"]
    params = GenerationParams(duration_s=0.2, do_sample=False, guidance_scale=GUIDANCE)
    seen: list[Any] = []
    codec = musicgen.model.audio_encoder

    def spy(codes: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(codes.clone())
        return type(codec).decode(codec, codes, *args, **kwargs)

    codec.decode = spy
    try:
        inputs = musicgen.processor(text=prompts, padding=True, return_tensors="pt")
        with torch.inference_mode(), _quiet_transformers():
            musicgen.model.generate(**inputs, max_new_tokens=musicgen.tokens_for(params.duration_s),
                                    do_sample=False, guidance_scale=GUIDANCE)
    finally:
        del codec.decode
    ours = DecodeEngine.for_model(musicgen).decode_codes(prompts, params, 0).codes
    return bool(torch.equal(seen[0][0], torch.stack(ours)))


def stream_ttfa(musicgen: Any, seconds: float, precision: str) -> float | None:
    """Seconds from submitting one streamed clip to its first audio bytes, through the server's own
    chain (continuous batch -> frames as they complete -> StreamingCodecDecoder -> StreamLeveler)."""
    from musicops.models.base import GenerationParams
    from musicops.models.continuous import ClipRequest
    from musicops.serving.streaming import AudioPipe

    batch = musicgen.continuous(max_rows=1, precision=precision)
    pipe = AudioPipe(batch.engine, total_samples=round(seconds * batch.engine.sample_rate))
    first: dict[str, float] = {}
    started = time.perf_counter()

    def on_frames(request: Any, codes: Any) -> None:
        if "t" not in first and pipe.push(codes):
            first["t"] = time.perf_counter() - started

    batch.submit(ClipRequest(prompts_for(1)[0], GenerationParams(duration_s=seconds, guidance_scale=GUIDANCE), 0,
                             on_frames=on_frames))
    while "t" not in first:
        if batch.step().finished:  # the whole clip decoded before a chunk was due (a very short clip)
            break
    return first.get("t")


def measure_model(musicgen: Any, args: argparse.Namespace, bandwidth: float) -> dict[str, Any]:
    import torch

    from musicops.models.base import GenerationParams
    from musicops.models.decode import DecodeEngine

    seconds = args.seconds
    greedy = GenerationParams(duration_s=seconds, do_sample=False, guidance_scale=GUIDANCE)
    sampled = GenerationParams(duration_s=seconds, guidance_scale=GUIDANCE)
    out: dict[str, Any] = {"clip_seconds": seconds, "steps": musicgen.tokens_for(seconds),
                           "parity_fp32_greedy_tokens": greedy_parity(musicgen)}
    step_ms: dict[str, dict[str, float]] = {}
    floor: dict[str, float] = {}
    agreement: dict[str, float] = {}
    rtf_16: dict[str, float] = {}
    weights: dict[str, int] = {}
    reference = None
    for precision in args.precisions:
        engine = DecodeEngine.for_model(musicgen, precision)
        weights[precision] = engine.weight_bytes()
        engine.generate(prompts_for(1), GenerationParams(duration_s=0.2, guidance_scale=GUIDANCE), 0)  # warm-up
        started = time.perf_counter()
        one = engine.generate(prompts_for(1), greedy, 0)
        wall_1 = time.perf_counter() - started
        step_ms[precision] = {"batch_1": 1000 * one.timings["decode_s"] / one.steps}
        floor[precision] = (weights[precision] / (bandwidth * 1e9)) / (one.timings["decode_s"] / one.steps)
        codes = torch.stack(one.codes)
        if precision == "fp32":
            reference = codes
            out["musicops_rtf"] = seconds / wall_1
        if reference is not None:
            agreement[precision] = float((codes == reference).float().mean())
        if args.batch > 1:
            started = time.perf_counter()
            many = engine.generate(prompts_for(args.batch), sampled, list(range(args.batch)))
            wall_n = time.perf_counter() - started
            step_ms[precision][f"batch_{args.batch}"] = 1000 * many.timings["decode_s"] / many.steps
            rtf_16[precision] = args.batch * seconds / wall_n
        del engine
    out.update({
        "weight_bytes_per_step": weights,
        "ms_per_step": step_ms,
        "steps_per_s_batch_1": {p: 1000 / v["batch_1"] for p, v in step_ms.items()},
        "floor_fraction_batch1": floor,
        "token_agreement_vs_fp32_greedy_batch1": agreement,
        f"aggregate_rtf_{args.batch}_per_precision": rtf_16,
    })
    if rtf_16:
        best = max(rtf_16, key=lambda p: rtf_16[p])
        out["aggregate_rtf_16"] = {"rtf": rtf_16[best], "precision": best, "clips": args.batch}
    out["transformers_generate_rtf"] = transformers_rtf(musicgen, 1, seconds)
    if args.baseline_16 and args.batch > 1:
        out["transformers_generate_rtf_16"] = transformers_rtf(musicgen, args.batch, seconds)
        if rtf_16:
            out["aggregate_over_transformers_16"] = out["aggregate_rtf_16"]["rtf"] / out["transformers_generate_rtf_16"]
    else:
        out["transformers_generate_rtf_16"] = None
    # time to first audio when streaming one clip, per precision (`ttfa_s`: fp32)
    ttfa = {p: stream_ttfa(musicgen, seconds, p) for p in args.precisions}
    out["ttfa_s"] = ttfa.get("fp32")
    out["ttfa_s_per_precision"] = ttfa
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (set explicitly)")
    parser.add_argument("--seconds", type=float, default=2.0, help="clip length for every measurement")
    parser.add_argument("--full", action="store_true", help="8 s clips (issue #16's acceptance setting)")
    parser.add_argument("--batch", type=int, default=16, help="clips in flight for the aggregate figures")
    parser.add_argument("--models", default="tiny,small", help="comma list of tiny, small")
    parser.add_argument("--precisions", default="fp32,bf16,int8", help="comma list of fp32, bf16, int8")
    parser.add_argument("--no-baseline-16", dest="baseline_16", action="store_false",
                        help="skip transformers generate on the full batch (the slowest measurement)")
    args = parser.parse_args()
    if args.full:
        args.seconds = 8.0
    args.precisions = [p for p in args.precisions.split(",") if p]
    if "fp32" in args.precisions:  # the reference for token agreement runs first
        args.precisions.remove("fp32")
        args.precisions.insert(0, "fp32")

    import torch

    torch.set_num_threads(args.threads)
    from musicops.models.musicgen import TransformersMusicGen

    result: dict[str, Any] = {
        "threads": args.threads, "device": "cpu", "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "guidance_scale": GUIDANCE,
        "bandwidth_gbps": bandwidth_gbps(args.threads), "models": {},
    }
    for name in [m for m in args.models.split(",") if m]:
        if name == "tiny":
            musicgen = TransformersMusicGen.from_preset("musicgen-tiny")
            note = "musicgen-tiny preset (random init, toy shapes)"
        elif name == "small":
            musicgen = build_small_shapes()
            note = "random init with MusicGen-small's exact shapes, config built offline (no trained weights)"
        else:
            parser.error(f"unknown model {name!r}")
        entry = {"model": note}
        entry.update(measure_model(musicgen, args, result["bandwidth_gbps"]))
        result["models"][name] = entry
        if not args.json:
            print(f"{name}: done", file=sys.stderr)
        del musicgen
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()

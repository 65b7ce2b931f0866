"""Batch generation throughput: batch size 1 vs 8 (ratio), and post-processing as a share of generation.

Uses the musicgen-tiny preset on whatever device is present. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=16, help="clips per measurement")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per clip")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="musicgen-tiny")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from musicops.audio.postprocess import PostProcessSettings, postprocess
    from musicops.models.base import GenerationParams
    from musicops.models.loading import load_model

    model = load_model(args.model)
    params = GenerationParams(duration_s=args.duration)
    prompts = [f"upbeat electronic loop number {i} at 120 BPM" for i in range(args.clips)]
    model.generate(prompts[:2], params, seed=[0, 1])  # warm-up

    def throughput(batch_size: int) -> tuple[float, list]:
        clips, started = [], time.perf_counter()
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start:start + batch_size]
            clips += model.generate(chunk, params, seed=list(range(start, start + len(chunk))))
        return len(prompts) / (time.perf_counter() - started), clips

    results = {"batch_1": [], "batch_8": [], "postprocess_share": []}
    for _ in range(args.repeats):
        tput1, _ = throughput(1)
        started = time.perf_counter()
        tput8, clips = throughput(8)
        generation_s = time.perf_counter() - started
        started = time.perf_counter()
        for clip in clips:
            postprocess(clip, model.sample_rate, PostProcessSettings())
        post_s = time.perf_counter() - started
        results["batch_1"].append(tput1)
        results["batch_8"].append(tput8)
        results["postprocess_share"].append(post_s / generation_s)
    summary = {
        "device": str(model.device), "threads": args.threads, "clips": args.clips, "duration_s": args.duration,
        "clips_per_s_batch_1": statistics.median(results["batch_1"]),
        "clips_per_s_batch_8": statistics.median(results["batch_8"]),
        "batch_8_over_batch_1": statistics.median(b / a for a, b in zip(results["batch_1"], results["batch_8"],
                                                                          strict=True)),
        "postprocess_share_of_generation": statistics.median(results["postprocess_share"]),
        "goal_postprocess_share": 0.05,
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

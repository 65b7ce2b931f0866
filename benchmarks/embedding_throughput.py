"""Embedding throughput: `Embedder.embed_audio` (windowing, resampling, batching, normalising) vs the
raw model forward on the same pre-computed windows (goal: within 1.1x). One run, ratios reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--embedder", default="clap-tiny")
    parser.add_argument("--path", default=None, help="local model directory for --embedder clap")
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from musicops.evaluation.embedders import get_embedder

    embedder = get_embedder(args.embedder, args.path)
    rng = np.random.default_rng(0)
    rate = embedder.sample_rate  # no resampling, so both paths see the same windows
    clips = [rng.standard_normal(int(args.seconds * rate)).astype(np.float32) * 0.1 for _ in range(args.clips)]
    windows = np.concatenate([embedder.windows(c, rate)[0] for c in clips])
    embedder.embed_audio(clips[:2], rate)  # warm-up

    def library() -> float:
        start = time.perf_counter()
        embedder.embed_audio(clips, rate, batch_size=16)
        return time.perf_counter() - start

    def raw() -> float:  # the model's own feature extraction + forward, nothing else
        start = time.perf_counter()
        for i in range(0, len(windows), 16):
            embedder._embed_batch(windows[i:i + 16])
        return time.perf_counter() - start

    lib_times, raw_times = [], []
    for _ in range(args.repeats):
        lib_times.append(library())
        raw_times.append(raw())
    lib, base = statistics.median(lib_times), statistics.median(raw_times)
    print(json.dumps({"embedder": args.embedder, "clips": args.clips, "windows": int(len(windows)),
                      "clips_per_s_library": args.clips / lib, "clips_per_s_raw_forward": args.clips / base,
                      "library_over_raw_time": lib / base, "goal": 1.1}, indent=2))


if __name__ == "__main__":
    main()

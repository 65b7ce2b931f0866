"""Watermark robustness and imperceptibility: detection on marked vs false positives on clean audio.

Two sets, each delivered the platform's way (post-processed to -14 LUFS / -1 dBTP, then marked by
`mark_for_delivery`, i.e. embedded and levelled back onto the targets):
- generated: clips of the tiny preset through `run_batch` (random weights: noise-like audio, not music);
- real: public-domain scores rendered through FluidSynth (`musicops.datasets.scores`), several styles.

Each clip's marked and clean versions go through every attack; the detector runs on the result.
Attacks: none, MP3 64/128 kbps CBR and Ogg Vorbis (libsndfile through soundfile; the measured bitrate
is reported), resample to 44.1 kHz (detected at 44.1 kHz), gain -6 dB, white noise at 20 dB SNR, mixed
6 dB under other (clean) real music, crop to the middle 30 %. Imperceptibility: SNR of the delivered
marked clip against the delivered clean clip, and the loudness change the raw embedding made before
re-levelling.

    .venv/bin/python benchmarks/watermark_robustness.py --json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

RATE = 32_000
MP3_LEVEL = {64: (320 - 64) / 288, 128: (320 - 128) / 288}  # libsndfile: CBR kbps = 320 - level * 288


def _codec(x: np.ndarray, fmt: str, subtype: str, **kwargs: object) -> tuple[np.ndarray, float]:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, x, RATE, format=fmt, subtype=subtype, **kwargs)
    kbps = len(buf.getvalue()) * 8 / (x.shape[0] / RATE) / 1000
    buf.seek(0)
    y, rate = sf.read(buf, dtype="float32", always_2d=True)
    assert rate == RATE
    return y, kbps


def attacks(other: np.ndarray, rng: np.random.Generator) -> dict[str, object]:
    """name -> function(x) -> (samples, rate, measured kbps or None)."""
    from musicops.audio.convert import resample

    def fit(o: np.ndarray, n: int, ch: int) -> np.ndarray:
        o = np.tile(o, (-(-n // o.shape[0]), 1))[:n]
        return o[:, :ch] if o.shape[1] >= ch else np.repeat(o[:, :1], ch, axis=1)

    def noise(x: np.ndarray) -> tuple[np.ndarray, int, None]:
        power = float(np.mean(x.astype(np.float64) ** 2))
        return (x + rng.standard_normal(x.shape) * np.sqrt(power / 100.0)).astype(np.float32), RATE, None

    def crop(x: np.ndarray) -> tuple[np.ndarray, int, None]:
        n = int(0.3 * x.shape[0])
        start = (x.shape[0] - n) // 2
        return x[start:start + n], RATE, None

    return {
        "none": lambda x: (x, RATE, None),
        "mp3 64 kbps": lambda x: (*_mp3(x, 64),),
        "mp3 128 kbps": lambda x: (*_mp3(x, 128),),
        "vorbis (q default)": lambda x: (lambda y: (y[0], RATE, y[1]))(_codec(x, "OGG", "VORBIS")),
        "resample 44.1 kHz": lambda x: (resample(x, RATE, 44_100).astype(np.float32), 44_100, None),
        "gain -6 dB": lambda x: (x * 10 ** (-6 / 20), RATE, None),
        "noise 20 dB SNR": noise,
        "mixed 6 dB under music": lambda x: (0.5 * x + fit(other, x.shape[0], x.shape[1]), RATE, None),
        "crop 30 %": crop,
    }


def _mp3(x: np.ndarray, kbps: int) -> tuple[np.ndarray, int, float]:
    y, measured = _codec(x, "MP3", "MPEG_LAYER_III", compression_level=MP3_LEVEL[kbps], bitrate_mode="CONSTANT")
    n = x.shape[0]  # the decoder adds encoder delay/padding; the clip keeps its length
    return (y[:n] if y.shape[0] >= n else np.pad(y, ((0, n - y.shape[0]), (0, 0)))), RATE, measured


def generated_clips(n: int, duration: float) -> list[np.ndarray]:
    """Tiny-preset clips, delivered unmarked (post-processed) by the real batch path."""
    from musicops.audio.io import read_audio
    from musicops.config import get_settings
    from musicops.generation.batch import run_batch
    from musicops.generation.delivery import deliver
    from musicops.generation.planning import BatchOptions

    with tempfile.TemporaryDirectory(prefix="musicops-wm-") as scratch:
        os.environ["MUSICOPS_HOME"] = str(Path(scratch) / "home")
        prompts = Path(scratch) / "prompts.jsonl"
        prompts.write_text("\n".join(json.dumps({"prompt": f"robustness probe {i}", "duration_s": duration,
                                                 "seed": 7 + i}) for i in range(n)) + "\n")
        settings = get_settings()
        result = run_batch(prompts, "musicgen-tiny", BatchOptions(log_to_mlflow=False, batch_size=8), settings)
        return [read_audio(p).samples for p in deliver(result, Path(scratch) / "out", settings, "wav")]


def real_clips(n: int, duration: float, seed: int) -> tuple[list[np.ndarray], list[str]]:
    """Rendered public-domain scores, post-processed like a delivery (unmarked)."""
    from musicops.audio.postprocess import postprocess
    from musicops.datasets import scores

    rng = np.random.default_rng(seed)
    styles = list(scores.STYLES.values())
    out, names = [], []
    attempts = 0
    while len(out) < n and attempts < 4 * n:
        style = styles[attempts % len(styles)]
        attempts += 1
        paths = scores.corpus_paths(style)
        path = paths[int(rng.integers(len(paths)))]
        try:
            score = scores.parse_score(path)
            ensemble, programs = style.ensembles[int(rng.integers(len(style.ensembles)))]
            audio = scores.render(score, programs, float(rng.integers(*style.qpm)), max_s=duration)
        except Exception:  # noqa: BLE001 - an unparseable corpus file: take another
            continue
        if audio.shape[0] < 0.9 * duration * RATE:
            continue
        out.append(postprocess(audio, RATE).samples)
        names.append(f"{path} ({ensemble})")
    return out, names


def evaluate(name: str, clips: list[np.ndarray], others: list[np.ndarray], method: str,
             seed: int) -> dict[str, object]:
    from musicops.audio.measure import integrated_loudness
    from musicops.audio.postprocess import PostProcessSettings
    from musicops.audio.watermark import get_watermarker, mark_for_delivery

    watermarker = get_watermarker(method)
    settings = PostProcessSettings()
    rows: dict[str, dict[str, list[float]]] = {}
    snr, raw_delta, final_delta, embed_s = [], [], [], []
    for i, clean in enumerate(clips):
        t0 = time.perf_counter()
        raw = watermarker.embed(clean, RATE)
        embed_s.append(time.perf_counter() - t0)
        marked = mark_for_delivery(clean, RATE, method, settings).samples
        lufs = integrated_loudness(clean, RATE)
        raw_delta.append(integrated_loudness(raw, RATE) - lufs)
        final_delta.append(integrated_loudness(marked, RATE) - lufs)
        snr.append(10 * np.log10(np.sum(clean.astype(np.float64) ** 2) / np.sum((marked - clean).astype(np.float64) ** 2)))
        rng = np.random.default_rng(seed + i)
        for attack, fn in attacks(others[(i + 1) % len(others)], rng).items():
            row = rows.setdefault(attack, {"marked": [], "clean": [], "kbps": []})
            for kind, audio in (("marked", marked), ("clean", clean)):
                attacked, rate, kbps = fn(audio)  # type: ignore[operator]
                row[kind].append(watermarker.detect(attacked, rate).confidence)
                if kbps is not None and kind == "marked":
                    row["kbps"].append(kbps)
    threshold = 0.5
    table = []
    for attack, row in rows.items():
        marked_c, clean_c = np.array(row["marked"]), np.array(row["clean"])
        table.append({"attack": attack, "detection_rate": float(np.mean(marked_c >= threshold)),
                      "false_positive_rate": float(np.mean(clean_c >= threshold)),
                      "mean_confidence_marked": round(float(marked_c.mean()), 3),
                      "mean_confidence_clean": round(float(clean_c.mean()), 3),
                      "measured_kbps": round(float(np.mean(row["kbps"])), 1) if row["kbps"] else None})
    return {"set": name, "clips": len(clips), "method": method, "threshold": threshold, "attacks": table,
            "snr_db_mean": round(float(np.mean(snr)), 2), "snr_db_min": round(float(np.min(snr)), 2),
            "loudness_delta_raw_lu_mean": round(float(np.mean(raw_delta)), 3),
            "loudness_delta_raw_lu_max_abs": round(float(np.max(np.abs(raw_delta))), 3),
            "loudness_delta_delivered_lu_max_abs": round(float(np.max(np.abs(final_delta))), 3),
            "embed_seconds_per_clip": round(float(np.mean(embed_s)), 3)}


def markdown(results: list[dict[str, object]]) -> str:
    lines = ["| attack | " + " | ".join(f"{r['set']}: detected / false pos." for r in results) + " |",
             "|---|" + "---|" * len(results)]
    for i, row in enumerate(results[0]["attacks"]):  # type: ignore[index]
        cells = []
        for r in results:
            a = r["attacks"][i]  # type: ignore[index]
            kbps = f" ({a['measured_kbps']} kbps)" if a["measured_kbps"] else ""
            cells.append(f"{a['detection_rate']:.0%} / {a['false_positive_rate']:.0%}{kbps}")
        lines.append(f"| {row['attack']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generated", type=int, default=12, help="tiny-preset clips")
    parser.add_argument("--real", type=int, default=12, help="rendered real-music clips")
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--method", default="perth")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the results as JSON (else a markdown table)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MUSICOPS_TORCH_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    real, names = real_clips(args.real, args.duration, args.seed)
    generated = generated_clips(args.generated, args.duration)
    results = [evaluate("generated (tiny, noise-like)", generated, real, args.method, args.seed),
               evaluate("real music (FluidSynth)", real, real, args.method, args.seed)]
    report = {"results": results, "real_clips": names, "duration_s": args.duration,
              "seconds": round(time.perf_counter() - start, 1)}
    print(json.dumps(report, indent=2) if args.json else markdown(results))


if __name__ == "__main__":
    main()

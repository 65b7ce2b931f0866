"""The copyright gate on real music: TPR per transform, FPR with its bound, right work, offsets, timings.

Renders the real-music set (public-domain scores through FluidSynth; `musicops.evaluation.catalog.realset`)
into a scratch folder, builds a catalog from its `catalog/` folder, calibrates with the defaults
(leave-one-work-out negatives from the catalog only; `--with-negatives` also gives calibration the
fit-split negatives), then runs the gate on every query and scores it against `truth.json`.
Figures are reported for the held-out `eval` split (works never seen by calibration's negatives)
and for all queries. Speed: `catalog add` seconds per minute of audio, warm search of a 10 s query
(median ms), and search time against a synthetic 10,000-work alignment database (`--scale`).

    .venv/bin/python benchmarks/copyright_gate.py --set /tmp/realset0 --seed 0
    .venv/bin/python benchmarks/copyright_gate.py --set /tmp/realset1 --seed 1   # an independent set
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", default=None, help="folder for the rendered set (reused when it exists)")
    parser.add_argument("--seed", type=int, default=0, help="which works, instruments and excerpts")
    parser.add_argument("--small", action="store_true", help="the 8-work slice make test uses")
    parser.add_argument("--embedder", default="none", help="catalog embedder ('none' or e.g. clap-tiny)")
    parser.add_argument("--with-negatives", action="store_true", help="calibrate with the fit split's negatives too")
    parser.add_argument("--scale", type=int, default=10_000, help="works in the synthetic speed-at-scale test (0: skip)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    from musicops.audio.io import read_audio
    from musicops.evaluation.catalog import alignment as al
    from musicops.evaluation.catalog import realset
    from musicops.evaluation.catalog.calibrate import calibrate, clopper_pearson_upper
    from musicops.evaluation.catalog.gate import check_asset
    from musicops.evaluation.catalog.store import add_works

    root = Path(args.set or tempfile.mkdtemp(prefix="musicops-realset-"))
    spec = realset.SetSpec.small(args.seed) if args.small else realset.SetSpec(seed=args.seed)
    started = time.perf_counter()
    data = realset.build(root, spec, progress=lambda m: print(m, flush=True) if os.environ.get("VERBOSE") else None)
    render_s = time.perf_counter() - started

    home = Path(tempfile.mkdtemp(prefix="musicops-gate-home-"))
    os.environ["MUSICOPS_HOME"] = str(home)
    from musicops.config import get_settings

    settings = get_settings()
    audio_min = sum(c["duration_s"] for c in data.catalog) / 60.0
    started = time.perf_counter()
    catalog = add_works(data.catalog_dir, "bench", settings, None if args.embedder == "none" else args.embedder)
    add_s = time.perf_counter() - started

    negatives_dir = None
    if args.with_negatives:
        negatives_dir = home / "fit-negatives"
        negatives_dir.mkdir()
        for q in data.queries:
            if q.kind == "negative" and q.split == "fit":
                os.symlink(data.queries_dir / q.file, negatives_dir / q.file)
    started = time.perf_counter()
    report = calibrate(catalog, settings, negatives_dir=negatives_dir)
    calibrate_s = time.perf_counter() - started

    results = []
    latencies = []
    for q in data.queries:
        audio = read_audio(data.queries_dir / q.file)
        t0 = time.perf_counter()
        verdict = check_asset(catalog, audio.samples, audio.sample_rate)
        latencies.append(time.perf_counter() - t0)
        best = verdict.top[0] if verdict.top else None
        work = Path(best.path).name if best is not None else None
        offset = best.offset_s if best is not None else None
        results.append((q, verdict.blocked, work, offset))

    figures = {split: _figures(results, split, clopper_pearson_upper) for split in ("eval", "all")}
    scale = _at_scale(al, args.scale) if args.scale else None
    print(json.dumps({
        "set": str(root), "seed": args.seed, "small": args.small, "embedder": args.embedder,
        "catalog_works": len(data.catalog), "catalog_audio_min": round(audio_min, 2),
        "queries": len(data.queries), "with_negatives": args.with_negatives,
        "calibration": {"threshold": report.threshold, "channels": report.channels,
                        "stated": report.stated_fpr(), "fpr_upper_bound": report.fpr_upper_bound,
                        "held_out_tpr": report.tpr, "channel_report": [c.__dict__ for c in report.channel_report],
                        "warnings": report.warnings},
        "figures": figures,
        "timings": {"render_s": round(render_s, 1), "catalog_add_s": round(add_s, 2),
                    "catalog_add_s_per_20_min": round(add_s / max(audio_min, 1e-9) * 20.0, 2),
                    "calibrate_s": round(calibrate_s, 1),
                    "search_ms_median": round(1000 * float(np.median(latencies)), 1),
                    "search_ms_p95": round(1000 * float(np.quantile(latencies, 0.95)), 1),
                    "alignment_at_scale": scale},
    }, indent=1))


def _figures(results: list, split: str, bound) -> dict:
    chosen = [r for r in results if split == "all" or r[0].split == split]
    copies = [r for r in chosen if r[0].kind == "copy"]
    negatives = [r for r in chosen if r[0].kind == "negative"]
    fp = sum(1 for r in negatives if r[1])
    blocked = [r for r in copies if r[1]]
    per_transform = {}
    for name in sorted({r[0].transform for r in copies}):
        rows = [r for r in copies if r[0].transform == name]
        per_transform[name] = {"n": len(rows), "tpr": round(float(np.mean([r[1] for r in rows])), 4)}
    same = [r for r in negatives if r[0].same_instruments]
    return {
        "copies": len(copies), "tpr": round(float(np.mean([r[1] for r in copies])), 4) if copies else None,
        "tpr_per_transform": per_transform,
        "negatives": len(negatives), "false_positives": fp, "fpr": round(fp / max(1, len(negatives)), 4),
        "fpr_upper_bound_95": round(bound(fp, len(negatives)), 4),
        "fpr_same_style_same_instruments": round(float(np.mean([r[1] for r in same])), 4) if same else None,
        "right_work_rate": round(float(np.mean([r[2] == r[0].work for r in blocked])), 4) if blocked else None,
        "offset_within_1s": round(float(np.mean([abs(r[3] - r[0].offset_s) <= 1.0 for r in blocked
                                                 if r[3] is not None])), 4) if blocked else None,
        "missed": [f"{r[0].file} {r[0].transform} {r[0].style}" for r in copies if not r[1]],
        "false_positive_files": [f"{r[0].file} {r[0].style} {r[0].source}" for r in negatives if r[1]],
    }


def _at_scale(al, works: int) -> dict:
    """Alignment search time against `works` synthetic works of 3 minutes (random unit frames)."""
    rng = np.random.default_rng(0)
    frames_per_work = int(180 / al.FRAME_S)
    bands = al.HIGH_MIDI - al.LOW_MIDI
    items = []
    for w in range(works):
        x = rng.standard_normal((frames_per_work, bands)).astype(np.float32)
        items.append((w, x / np.linalg.norm(x, axis=1, keepdims=True)))
    db = al.AlignmentDB().extend(items)
    del items
    query = db.frames[db.starts[0]:db.starts[0] + int(10 / al.FRAME_S)].copy()
    t0 = time.perf_counter()
    matches = al.match(query, db)
    elapsed = time.perf_counter() - t0
    return {"works": works, "frames": int(db.frames.shape[0]), "memory_mb": round(db.frames.nbytes / 2**20, 1),
            "search_s_10s_query": round(elapsed, 2), "found_work": matches[0].work_id if matches else None}


if __name__ == "__main__":
    main()

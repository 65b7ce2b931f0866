"""From generated samples to delivered assets: post-process, run the quality checks, encode every
format with provenance tags, store the files content-addressed with one provenance row, and copy
the assets that passed into an output folder.

Its own module because the batch run, the kfp post-process and store steps and the serving finisher
all finish clips the same way, so an asset is the same bytes whichever path produced it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from musicops import __version__, code_version
from musicops.audio.checks import CheckResult, run_checks, thresholds_for
from musicops.audio.encode import encode
from musicops.audio.postprocess import postprocess
from musicops.config import Settings, get_settings
from musicops.generation.planning import BatchOptions, BatchPlan, item_params
from musicops.generation.results import BatchResult
from musicops.store.cache import asset_id_for


@dataclass
class ProcessedClip:
    samples: np.ndarray
    sample_rate: int
    loudness_before: float
    loudness_after: float
    true_peak_after: float
    checks: list[CheckResult]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


def process_clip(samples: np.ndarray, sample_rate: int, expected_duration_s: float,
                 options: BatchOptions) -> ProcessedClip:
    """Post-process (then watermark, when the options ask for one), then run the quality checks on
    exactly what will be delivered.

    Non-finite model output cannot be post-processed or encoded: it is checked as it came out (so the
    `finite` check fails and names it), stored with the bad samples zeroed, and never delivered.
    """
    if not np.isfinite(samples).all():
        checks = run_checks(samples, sample_rate, expected_duration_s,
                            thresholds_for(options.postprocess, options.loudness_tolerance_lu))
        zeroed = np.nan_to_num(np.asarray(samples, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        zeroed = zeroed[:, None] if zeroed.ndim == 1 else zeroed
        return ProcessedClip(zeroed, sample_rate, -math.inf, -math.inf, -math.inf, checks)
    processed = postprocess(samples, sample_rate, options.postprocess)
    delivered, loudness_after, true_peak_after = processed.samples, processed.loudness_after, processed.true_peak_after
    if options.watermark != "none":  # after post-processing, levelled back onto its targets (see watermark.py)
        from musicops.audio.watermark import mark_for_delivery

        marked = mark_for_delivery(processed.samples, processed.sample_rate, options.watermark, options.postprocess)
        delivered, loudness_after, true_peak_after = marked.samples, marked.loudness, marked.true_peak
    checks = run_checks(delivered, processed.sample_rate, expected_duration_s,
                        thresholds_for(options.postprocess, options.loudness_tolerance_lu))
    return ProcessedClip(delivered, processed.sample_rate, processed.loudness_before,
                         loudness_after, true_peak_after, checks)


def store_clip(plan: BatchPlan, index: int, clip: ProcessedClip, generation_seconds: float,
               store: Any, db: Any) -> tuple[Any, bool, bool]:
    """Encode every format with provenance tags, write files atomically, then one provenance row.

    Returns (record, created, identical): when the cache key was already stored (a --no-cache
    rerun, or a concurrent writer), `identical` says whether the new audio matched it bit for bit.
    The files' title tag is the normalised prompt (the model's input), so the files too depend only
    on the cache key; the request's own spelling is kept in the provenance row.
    """
    from musicops.store.provenance import AssetRecord

    item, key = plan.items[index], plan.keys[index]
    asset_id = asset_id_for(key)
    params = item_params(item, plan.options)
    tags = {"title": item.normalized_prompt, "software": f"musicops {__version__}", "asset_id": asset_id,
            "seed": str(item.seed), "model": plan.model.pinned_uri, "params": json.dumps(params, sort_keys=True)}
    files = {}
    for fmt in plan.options.formats:
        stored = store.put(encode(clip.samples, clip.sample_rate, fmt, tags), fmt)
        files[fmt] = {"sha256": stored.sha256, "size": stored.size}
    record = AssetRecord(
        asset_id=asset_id, cache_key=key, sha256=files[plan.options.formats[0]]["sha256"], files=files,
        prompt=item.prompt, normalized_prompt=item.normalized_prompt, seed=item.seed, params=params,
        model_name=plan.model.name, model_version=plan.model.version, model_run_id=plan.model.run_id,
        model_uri=plan.model.pinned_uri, user=plan.options.user, code_version=code_version(),
        postprocess=plan.options.postprocess.to_dict(), loudness_before=_finite(clip.loudness_before),
        loudness_after=_finite(clip.loudness_after), true_peak_after=_finite(clip.true_peak_after),
        checks=[c.to_dict() for c in clip.checks], passed=clip.passed, batch_id=plan.batch_id,
        line_no=item.line_no, variation=item.variation, tags=list(item.tags),
        duration_s=clip.samples.shape[0] / clip.sample_rate, sample_rate=clip.sample_rate,
        generation_seconds=generation_seconds, tenant=plan.options.tenant,
    )
    stored, created = db.add_asset(record)
    return stored, created, stored.sha256 == record.sha256


def deliver(result: BatchResult, out_dir: str | Path, settings: Settings | None = None,
            fmt: str | None = None) -> list[Path]:
    """Copy every asset that passed its checks into `out_dir`; failing assets are never delivered."""
    import shutil

    from musicops.store.assets import open_asset_store
    from musicops.store.files import atomic_path

    settings = settings or get_settings()
    store = open_asset_store(settings)
    fmt = fmt or result.plan.options.formats[0]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for outcome in result.delivered:
        source = store.path_for(outcome.record.files[fmt]["sha256"], fmt)
        target = out / f"{outcome.item.line_no:04d}-v{outcome.item.variation}-{outcome.record.asset_id}.{fmt}"
        if not target.exists():
            with atomic_path(target) as tmp:
                shutil.copyfile(source, tmp)
        written.append(target)
    return written


def _finite(value: float) -> float | None:
    return value if value is not None and math.isfinite(value) else None

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


def training_data(model: Any) -> dict[str, Any]:
    """The data the model version was fine-tuned on, from its registry tags (dataset name, version,
    content hash, base model); None where musicops did not train it (a preset, an imported checkpoint)."""
    tags = getattr(model, "tags", None) or {}
    ref = tags.get("musicops.dataset")
    name, _, version = ref.partition("@") if ref else (None, "", "")
    return {"dataset": name, "dataset_version": version.removeprefix("v") or None,
            "dataset_hash": tags.get("musicops.dataset_hash"), "base_model": tags.get("musicops.base_model"),
            "model": model.pinned_uri}


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
        lineage={"training_data": training_data(plan.model), **(json.loads(item.lineage) if item.lineage else {})},
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
        sha = outcome.record.files[fmt]["sha256"]
        target = out / f"{outcome.item.line_no:04d}-v{outcome.item.variation}-{outcome.record.asset_id}.{fmt}"
        if not target.exists():
            with store.local_file(sha, fmt) as source, atomic_path(target) as tmp:  # S3: a temporary copy
                shutil.copyfile(source, tmp)
        written.append(target)
    return written


def _finite(value: float) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def stem_cache_key(parent: Any, stem: str, separator: dict[str, Any], formats: list[str]) -> str:
    """A stem's cache key: its parent's prompt and seed, the model slot naming the parent's cache key (the
    stem is the separator applied to that asset), and params naming the stem and the separator."""
    from musicops.store.cache import cache_key

    return cache_key(parent.normalized_prompt, stem_params(parent, stem, separator, formats),
                     f"stem-of:{parent.cache_key}", parent.seed, parent.tenant)


def stem_params(parent: Any, stem: str, separator: dict[str, Any], formats: list[str]) -> dict[str, Any]:
    """The provenance link: params["stem_of"] = parent asset id, params["stem"] = its name."""
    return {"stem_of": parent.asset_id, "stem": stem, "separator": separator, "formats": list(formats)}


def find_stems(db: Any, parent: Any, separator: dict[str, Any], formats: list[str]) -> dict[str, Any]:
    """The parent's stems already stored for this separator: {stem name: AssetRecord} (keyed lookup)."""
    from musicops.audio.stems import STEM_NAMES

    keys = {name: stem_cache_key(parent, name, separator, formats) for name in STEM_NAMES}
    found = db.find_by_cache_keys(sorted(keys.values()))
    return {name: found[key] for name, key in keys.items() if key in found}


def store_stems(plan: BatchPlan, parent: Any, separator: Any, store: Any, db: Any) -> list[Any]:
    """Separate a delivered asset into its four stems and store each as an asset linked to it.

    The mix is the parent's stored lossless file (what was delivered). Stems skip loudness
    normalisation (they must sum to the mix) but keep the true-peak ceiling: one common gain
    (`musicops.audio.stems.stem_gain`, recorded in the stem's postprocess as `stem_gain`) when any stem
    would exceed it. A stem's checks: finite, clipping, dc_offset, true_peak, duration, and sum_to_mix
    (the four stems, read back from their encoded files, against the mix, within SUM_TO_MIX_MAX_ABS).
    Already stored stems (same parent, separator and formats) are returned, not recomputed.
    """
    import io
    import time

    import soundfile as sf

    from musicops.audio.checks import CheckThresholds
    from musicops.audio.measure import integrated_loudness, true_peak_dbtp
    from musicops.audio.stems import SUM_TO_MIX_MAX_ABS, stem_gain, sum_to_mix_error
    from musicops.store.provenance import AssetRecord

    formats = list(plan.options.formats)
    provenance = separator.provenance()
    existing = find_stems(db, parent, provenance, formats)
    if len(existing) == len(separator.sources):
        return list(existing.values())
    lossless = next((f for f in ("wav", "flac") if f in parent.files), None)
    fmt = lossless or next(iter(parent.files))
    mix, rate = sf.read(io.BytesIO(store.read(parent.files[fmt]["sha256"], fmt)), dtype="float32", always_2d=True)
    t0 = time.perf_counter()
    stems = separator.separate(mix, rate)
    seconds = time.perf_counter() - t0
    gain = stem_gain(stems, rate, plan.options.postprocess.true_peak_dbtp)
    if gain != 1.0:
        stems = {name: (s * np.float32(gain)).astype(np.float32) for name, s in stems.items()}
    ids = {name: stem_cache_key(parent, name, provenance, formats) for name in stems}
    params = {name: stem_params(parent, name, provenance, formats) for name in stems}
    encoded = {}
    for name, samples in stems.items():
        tags = {"title": parent.normalized_prompt, "software": f"musicops {__version__}",
                "asset_id": asset_id_for(ids[name]), "seed": str(parent.seed), "model": parent.model_uri,
                "params": json.dumps(params[name], sort_keys=True)}
        encoded[name] = {f: encode(samples, rate, f, tags) for f in formats}
    if lossless and lossless in formats:  # the bound is checked on what is stored, read back
        readback = {name: sf.read(io.BytesIO(e[lossless]), dtype="float64", always_2d=True)[0]
                    for name, e in encoded.items()}
    else:
        readback = {name: s.astype(np.float64) for name, s in stems.items()}
    max_abs, snr = sum_to_mix_error(readback, mix, gain)
    sum_check = CheckResult("sum_to_mix", max_abs <= SUM_TO_MIX_MAX_ABS or not lossless, max_abs,
                            f"<= {SUM_TO_MIX_MAX_ABS:g}", f"max |sum(stems)/{gain:.6g} - mix| = {max_abs:.3g}, "
                            f"SNR {snr:.1f} dB ({fmt} mix, {lossless or 'lossy'} stems)")
    ceiling = plan.options.postprocess.true_peak_dbtp
    thresholds = CheckThresholds(loudness_range_lufs=None, true_peak_ceiling_dbtp=ceiling)
    records = []
    for name, samples in stems.items():
        key = ids[name]
        asset_id = asset_id_for(key)
        files = {}
        for f in formats:
            stored = store.put(encoded[name][f], f)
            files[f] = {"sha256": stored.sha256, "size": stored.size}
        checks = [c for c in run_checks(samples, rate, parent.duration_s, thresholds)
                  if c.name not in ("silence", "loudness", "spectral_flatness")] + [sum_check]
        record = AssetRecord(
            asset_id=asset_id, cache_key=key, sha256=files[formats[0]]["sha256"], files=files,
            prompt=parent.prompt, normalized_prompt=parent.normalized_prompt, seed=parent.seed, params=params[name],
            model_name=parent.model_name, model_version=parent.model_version, model_run_id=parent.model_run_id,
            model_uri=parent.model_uri, user=plan.options.user, code_version=code_version(),
            postprocess={"stem_of": parent.asset_id, "loudness_normalisation": None, "true_peak_dbtp": ceiling,
                         "stem_gain": gain, "sum_to_mix_max_abs": max_abs, "sum_to_mix_snr_db": _finite(snr)},
            loudness_before=None, loudness_after=_finite(integrated_loudness(samples, rate)),
            true_peak_after=_finite(true_peak_dbtp(samples, rate)),
            checks=[c.to_dict() for c in checks], passed=all(c.passed for c in checks), batch_id=plan.batch_id,
            line_no=parent.line_no, variation=parent.variation, tags=[*(parent.tags or []), f"stem:{name}"],
            duration_s=samples.shape[0] / rate, sample_rate=rate, generation_seconds=seconds / len(stems),
            tenant=parent.tenant,
        )
        stored_record, _created = db.add_asset(record)
        records.append(stored_record)
    return records

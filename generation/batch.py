"""Batch generation over a prompts file: plan against the cache, generate in batches, post-process,
check, store with provenance. The kfp pipeline, the CLI and serving all use these functions.

Crash safety: each asset is committed on its own (files written atomically into the
content-addressed store, then one provenance row in one transaction), so a run killed at any point
keeps every completed asset and a rerun produces each missing one exactly once.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from musicops import __version__, code_version
from musicops.audio.checks import CheckResult, run_checks, thresholds_for
from musicops.audio.encode import encode
from musicops.audio.postprocess import PostProcessSettings, postprocess
from musicops.config import Settings, current_user, get_settings
from musicops.generation.prompts import WorkItem, expand, read_prompts
from musicops.hashing import file_sha256
from musicops.models.base import MusicModel
from musicops.models.loading import ResolvedModel, load_model, resolve_model
from musicops.models.sampling import SamplingParams
from musicops.store.cache import asset_id_for, cache_key

Progress = Callable[[str, int, int], None]  # (phase, done, total)


# Generation settings shared by every item of a batch (durations come from the prompts file); the
# one validated sampling type of musicops.models.sampling, under the name the pipeline always used.
SamplingOptions = SamplingParams


@dataclass(frozen=True)
class BatchOptions:
    batch_size: int = 8
    use_cache: bool = True
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    postprocess: PostProcessSettings = field(default_factory=PostProcessSettings)
    formats: tuple[str, ...] = ("wav", "flac")
    loudness_tolerance_lu: float = 0.5
    user: str = field(default_factory=current_user)
    price_per_hour: float | None = None  # accelerator price; None = settings default
    log_to_mlflow: bool = True
    tenant: str | None = None  # the API tenant whose cache and assets these are; None = batch/CLI

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= 256:
            raise ValueError(f"batch_size must be in [1, 256], got {self.batch_size}")
        if not self.formats or any(f not in ("wav", "flac", "ogg") for f in self.formats):
            raise ValueError(f"formats must be a non-empty subset of wav, flac, ogg; got {self.formats}")

    def for_tenant(self, tenant: str | None) -> BatchOptions:
        """The same options planned for an API tenant's own cache and assets (None: batch/CLI)."""
        return replace(self, tenant=tenant)


@dataclass
class BatchPlan:
    """What a batch will do, decided before any model is loaded."""

    batch_id: str
    prompts_file: str
    prompts_sha256: str
    model: ResolvedModel
    model_id: str
    items: list[WorkItem]
    keys: list[str]
    cached: dict[str, Any]  # cache key -> AssetRecord already stored
    options: BatchOptions

    @property
    def pending(self) -> list[int]:
        return [i for i, key in enumerate(self.keys) if key not in self.cached]


@dataclass
class ClipOutcome:
    item: WorkItem
    record: Any  # AssetRecord
    cache_hit: bool
    created: bool  # False when another writer had stored the same cache key first
    latency_s: float = 0.0
    identical: bool = True  # regenerated audio matched the stored asset bit for bit


@dataclass
class BatchResult:
    plan: BatchPlan
    outcomes: list[ClipOutcome]
    metrics: dict[str, float]
    mlflow_run_id: str | None = None

    @property
    def failed(self) -> list[ClipOutcome]:
        return [o for o in self.outcomes if not o.record.passed]

    @property
    def delivered(self) -> list[ClipOutcome]:
        return [o for o in self.outcomes if o.record.passed]


# ----------------------------------------------------------------------------------------- planning


def plan_batch(prompts_file: str | Path, model_ref: str, options: BatchOptions | None = None,
               settings: Settings | None = None, items: list[WorkItem] | None = None) -> BatchPlan:
    """Validate the prompts, pin the model version and consult the cache; loads no model weights."""
    from musicops.store.provenance import ProvenanceDB

    options = options or BatchOptions()
    settings = (settings or get_settings()).ensure()
    if items is None:
        items = expand(read_prompts(prompts_file))
        prompts_sha = file_sha256(prompts_file)
    else:
        prompts_sha = ""
    resolved = resolve_model(model_ref, settings)  # unknown name/version/alias fails here, before generation
    model_id = model_identity(resolved)
    keys = plan_keys(items, options, model_id)
    cached: dict[str, Any] = {}
    if options.use_cache:
        db = ProvenanceDB.from_settings(settings)
        try:
            found = db.find_by_cache_keys(sorted(set(keys)))
        finally:
            db.close()
        store = _store(settings)
        cached = {k: r for k, r in found.items() if all(store.exists(f["sha256"], fmt) for fmt, f in r.files.items())}
    return BatchPlan(f"b-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}", str(prompts_file), prompts_sha,
                     resolved, model_id, items, keys, cached, options)


def plan_keys(items: list[WorkItem], options: BatchOptions, model_id: str) -> list[str]:
    """Each item's cache key: normalised prompt (what the model is fed), params, model, seed, and the
    tenant when the API plans for one (see `musicops.store.cache`). Tags are not part of it."""
    return [cache_key(item.normalized_prompt, item_params(item, options), model_id, item.seed, options.tenant)
            for item in items]


def item_params(item: WorkItem, options: BatchOptions) -> dict[str, Any]:
    """Everything besides prompt, seed and model that shapes the asset: part of the cache key."""
    return {"generation": options.sampling.params(item.duration_s).to_dict(),
            "postprocess": options.postprocess.to_dict(), "formats": list(options.formats)}


def model_identity(resolved: ResolvedModel) -> str:
    """A stable identity for the cache key: the registry version, preset name or directory content."""
    if resolved.kind == "registry":
        return f"models:/{resolved.name}/{resolved.version}"
    if resolved.kind == "preset":
        return f"preset:{resolved.name}@{__version__}"
    from musicops.hashing import directory_sha256

    # The pre-existing framing (no separator): a local model's identity is in its assets' cache keys.
    return f"dir:{directory_sha256(resolved.reference, name_separator=b'')[:24]}"


# ---------------------------------------------------------------------------------------- the steps


def generate_items(model: MusicModel, items: list[WorkItem], options: BatchOptions,
                   on_batch: Callable[[list[int], list[np.ndarray], float], None]) -> None:
    """Generate in batches of items with equal duration; call `on_batch(indices, clips, seconds)`.

    The model is fed the normalised prompt, the one the cache key hashes: two spellings that share a
    key get the same audio, so a cache hit is exactly what a fresh generation would have produced.
    """
    for indices in batches_of(items, options.batch_size):
        params = options.sampling.params(items[indices[0]].duration_s)
        started = time.perf_counter()
        clips = model.generate([items[i].normalized_prompt for i in indices], params,
                               seed=[items[i].seed for i in indices])
        on_batch(indices, clips, time.perf_counter() - started)


def batches_of(items: list[WorkItem], batch_size: int) -> Iterator[list[int]]:
    by_duration: dict[float, list[int]] = {}
    for index, item in enumerate(items):
        by_duration.setdefault(item.duration_s, []).append(index)
    for indices in by_duration.values():
        for start in range(0, len(indices), batch_size):
            yield indices[start:start + batch_size]


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
    """Post-process, then run the quality checks on exactly what will be delivered.

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
    checks = run_checks(processed.samples, processed.sample_rate, expected_duration_s,
                        thresholds_for(options.postprocess, options.loudness_tolerance_lu))
    return ProcessedClip(processed.samples, processed.sample_rate, processed.loudness_before,
                         processed.loudness_after, processed.true_peak_after, checks)


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


# ------------------------------------------------------------------------------------------ the run


def run_batch(prompts_file: str | Path, model_ref: str, options: BatchOptions | None = None,
              settings: Settings | None = None, progress: Progress | None = None,
              items: list[WorkItem] | None = None) -> BatchResult:
    """The whole batch in this process: plan -> (load model only if needed) -> generate -> store."""
    from musicops.store.provenance import ProvenanceDB

    options = options or BatchOptions()
    settings = (settings or get_settings()).ensure()
    plan = plan_batch(prompts_file, model_ref, options, settings, items=items)
    store = _store(settings)
    store.sweep_partials()
    db = ProvenanceDB.from_settings(settings)
    started = time.perf_counter()
    outcomes: dict[int, ClipOutcome] = {}
    try:
        open_batch(plan, db)
        for index, key in enumerate(plan.keys):
            if key in plan.cached:
                outcomes[index] = ClipOutcome(plan.items[index], plan.cached[key], cache_hit=True, created=False)
        pending = [plan.items[i] for i in plan.pending]
        total = len(plan.items)
        if progress:
            progress("generate", len(outcomes), total)
        generation_seconds = 0.0
        if pending:
            model = load_model(plan.model, settings)

            def on_batch(local: list[int], clips: list[np.ndarray], seconds: float) -> None:
                nonlocal generation_seconds
                generation_seconds += seconds
                for position, clip in zip(local, clips, strict=True):
                    index = plan.pending[position]
                    t0 = time.perf_counter()
                    processed = process_clip(clip, model.sample_rate, plan.items[index].duration_s, options)
                    record, created, identical = store_clip(plan, index, processed, seconds / len(clips), store, db)
                    latency = seconds + (time.perf_counter() - t0)
                    outcomes[index] = ClipOutcome(plan.items[index], record, False, created, latency, identical)
                if progress:
                    progress("generate", len(outcomes), total)

            generate_items(model, pending, options, on_batch)
        wall = time.perf_counter() - started
        ordered = [outcomes[i] for i in range(len(plan.items))]
        metrics = batch_metrics(ordered, wall, generation_seconds, _price(options, settings))
        db.finish_batch(plan.batch_id, "finished", {k: v for k, v in metrics.items() if k.startswith("n_")})
    except BaseException:
        db.finish_batch(plan.batch_id, "failed", {"n_done": len(outcomes)})
        raise
    finally:
        db.close()
    run_id = log_batch_to_mlflow(plan, ordered, metrics, settings) if options.log_to_mlflow else None
    return BatchResult(plan, ordered, metrics, run_id)


def batch_metrics(outcomes: list[ClipOutcome], wall_s: float, generation_s: float,
                  price_per_hour: float) -> dict[str, float]:
    generated = [o for o in outcomes if not o.cache_hit]
    audio_s = sum(o.record.duration_s for o in generated)
    latencies = [o.latency_s for o in generated]
    minutes = audio_s / 60.0
    metrics = {
        "n_items": float(len(outcomes)), "n_generated": float(len(generated)),
        "n_cache_hits": float(len(outcomes) - len(generated)),
        "n_failed_checks": float(sum(1 for o in outcomes if not o.record.passed)),
        "n_not_reproduced": float(sum(1 for o in outcomes if not o.identical)),
        "cache_hit_ratio": (len(outcomes) - len(generated)) / len(outcomes) if outcomes else 0.0,
        "wall_seconds": wall_s, "generation_seconds": generation_s, "generated_audio_seconds": audio_s,
        "tracks_per_minute": len(generated) / (wall_s / 60.0) if generated and wall_s > 0 else 0.0,
        "real_time_factor": generation_s / audio_s if audio_s else 0.0,
        "cost_per_generated_minute": (price_per_hour * wall_s / 3600.0) / minutes if minutes else 0.0,
    }
    if latencies:
        p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
        metrics.update(latency_p50_s=float(p50), latency_p95_s=float(p95), latency_p99_s=float(p99))
    return metrics


def log_batch_to_mlflow(plan: BatchPlan, outcomes: list[ClipOutcome], metrics: dict[str, float],
                        settings: Settings) -> str:
    import tempfile

    import mlflow

    from musicops.registry import configure_mlflow, ensure_experiment

    configure_mlflow(settings)
    experiment = ensure_experiment(settings, f"{settings.experiment}-batch")
    tags = {"musicops.batch_id": plan.batch_id, "musicops.model_uri": plan.model.pinned_uri,
            "musicops.prompts_sha256": plan.prompts_sha256, "musicops.code_version": code_version()}
    with mlflow.start_run(experiment_id=experiment, run_name=plan.batch_id, tags=tags) as run:
        mlflow.log_params({"model": plan.model.pinned_uri, "prompts_file": plan.prompts_file,
                           **{k: str(v) for k, v in _options_dict(plan.options).items()}})
        mlflow.log_metrics(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "assets.json"
            path.write_text(json.dumps([{"asset_id": o.record.asset_id, "line": o.item.line_no,
                                         "variation": o.item.variation, "sha256": o.record.sha256,
                                         "passed": o.record.passed, "cache_hit": o.cache_hit}
                                        for o in outcomes], indent=1))
            mlflow.log_artifact(str(path))
        return run.info.run_id


def _store(settings: Settings) -> Any:
    from musicops.store.assets import open_asset_store

    return open_asset_store(settings)


def _price(options: BatchOptions, settings: Settings) -> float:
    return options.price_per_hour if options.price_per_hour is not None else settings.price_per_accelerator_hour


def _options_dict(options: BatchOptions) -> dict[str, Any]:
    data = asdict(options)
    data.pop("user", None)
    return data


def _finite(value: float) -> float | None:
    return value if value is not None and math.isfinite(value) else None


# ---------------------------------------------------------------------------------------- delivery


def deliver(result: BatchResult, out_dir: str | Path, settings: Settings | None = None,
            fmt: str | None = None) -> list[Path]:
    """Copy every asset that passed its checks into `out_dir`; failing assets are never delivered."""
    import shutil

    from musicops.store.files import atomic_path

    settings = settings or get_settings()
    store = _store(settings)
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


def cli_items(prompts: list[str], duration_s: float, seed: int) -> list[WorkItem]:
    """Work items for prompts typed on the command line (seed, seed+1, ...), checked like a file's."""
    from musicops.generation.prompts import LineError, PromptsFileError, validate_record
    from musicops.store.cache import normalize_prompt

    items, errors = [], []
    for number, prompt in enumerate(prompts, start=1):
        try:
            line = validate_record(number, {"prompt": prompt, "duration_s": duration_s})
        except ValueError as exc:
            errors.append(LineError(number, str(exc)))
            continue
        items.append(WorkItem(number, 0, line.prompt, normalize_prompt(line.prompt), line.duration_s, seed + number - 1))
    if errors:
        raise PromptsFileError("--prompt", errors)
    return items


# ------------------------------------------------------------------ plans across kfp step boundaries


def plan_to_json(plan: BatchPlan) -> dict[str, Any]:
    """Everything a later pipeline step needs to continue the plan (cache hits by key only)."""
    return {
        "batch_id": plan.batch_id, "prompts_file": plan.prompts_file, "prompts_sha256": plan.prompts_sha256,
        "model": asdict(plan.model), "model_id": plan.model_id, "items": [asdict(i) for i in plan.items],
        "keys": plan.keys, "cached": sorted(plan.cached), "options": _options_dict(plan.options),
        "user": plan.options.user,
    }


def plan_from_json(data: dict[str, Any]) -> BatchPlan:
    raw = dict(data["options"])
    options = BatchOptions(
        batch_size=raw["batch_size"], use_cache=raw["use_cache"], sampling=SamplingOptions(**raw["sampling"]),
        postprocess=PostProcessSettings(**raw["postprocess"]), formats=tuple(raw["formats"]),
        loudness_tolerance_lu=raw["loudness_tolerance_lu"], user=data["user"],
        price_per_hour=raw["price_per_hour"], log_to_mlflow=raw["log_to_mlflow"], tenant=raw.get("tenant"),
    )
    items = [WorkItem(**{**i, "tags": tuple(i["tags"])}) for i in data["items"]]
    cached = {key: None for key in data["cached"]}
    return BatchPlan(data["batch_id"], data["prompts_file"], data["prompts_sha256"], ResolvedModel(**data["model"]),
                     data["model_id"], items, data["keys"], cached, options)


def shard_pending(plan: BatchPlan, shard_size: int) -> list[list[int]]:
    """Pending item indices split into shards (always at least one, possibly empty, shard)."""
    pending = plan.pending
    shards = [pending[i:i + shard_size] for i in range(0, len(pending), max(1, shard_size))]
    return shards or [[]]


def summarize_plan(plan: BatchPlan, settings: Settings | None = None) -> BatchResult:
    """Build the result of a plan whose items were stored by other processes (the kfp steps)."""
    from datetime import UTC, datetime

    from musicops.store.provenance import ProvenanceDB

    settings = settings or get_settings()
    db = ProvenanceDB.from_settings(settings)
    try:
        records = db.find_by_cache_keys(sorted(set(plan.keys)))
        missing = [i for i, key in enumerate(plan.keys) if key not in records]
        if missing:
            db.finish_batch(plan.batch_id, "failed", {"n_missing": len(missing)})
            raise RuntimeError(f"batch {plan.batch_id}: {len(missing)} item(s) were not stored "
                               f"(first: line {plan.items[missing[0]].line_no})")
        outcomes = [ClipOutcome(item, records[key], key in plan.cached, False, records[key].generation_seconds or 0.0)
                    for item, key in zip(plan.items, plan.keys, strict=True)]
        batch = db.get_batch(plan.batch_id)
        started = batch.get("started_at") if isinstance(batch, dict) else getattr(batch, "started_at", None)
        wall = (datetime.now(UTC) - _aware(started)).total_seconds() if started else 0.0
        generation = sum(o.record.generation_seconds or 0.0 for o in outcomes if not o.cache_hit)
        metrics = batch_metrics(outcomes, wall, generation, _price(plan.options, settings))
        db.finish_batch(plan.batch_id, "finished", {k: v for k, v in metrics.items() if k.startswith("n_")})
    finally:
        db.close()
    run_id = log_batch_to_mlflow(plan, outcomes, metrics, settings) if plan.options.log_to_mlflow else None
    return BatchResult(plan, outcomes, metrics, run_id)


def open_batch(plan: BatchPlan, db: Any) -> None:
    """Record the batch before any asset is written, so every asset row points at a batch row."""
    db.start_batch(plan.batch_id, prompts_file=plan.prompts_file, prompts_sha256=plan.prompts_sha256,
                   model_uri=plan.model.pinned_uri, model_version=plan.model.version,
                   params={"options": _options_dict(plan.options)}, user=plan.options.user,
                   code_version=code_version())


def _aware(moment: Any) -> Any:
    from datetime import UTC

    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

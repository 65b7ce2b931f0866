"""Batch generation over a prompts file, end to end: plan against the cache, generate in batches,
post-process, check, store with provenance, then the batch's metrics and MLflow run. The CLI, the
kfp summary step, regression evaluation and serving use it; each step lives in its own module
(planning, runner, delivery, metrics, tracking; shards for the kfp plan JSON).

Crash safety: each asset is committed on its own (files written atomically into the
content-addressed store, then one provenance row in one transaction), so a run killed at any point
keeps every completed asset and a rerun produces each missing one exactly once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from musicops import code_version
from musicops import progress as report
from musicops.config import Settings, get_settings
from musicops.generation.delivery import process_clip, store_clip, store_stems
from musicops.generation.metrics import batch_metrics, price_per_hour
from musicops.generation.planning import BatchOptions, BatchPlan, options_dict, plan_batch
from musicops.generation.prompts import WorkItem
from musicops.generation.results import BatchResult, ClipOutcome
from musicops.generation.runner import generate_items
from musicops.generation.tracking import log_batch_to_mlflow
from musicops.models.loading import load_model


def run_batch(prompts_file: str | Path, model_ref: str, options: BatchOptions | None = None,
              settings: Settings | None = None, items: list[WorkItem] | None = None) -> BatchResult:
    """The whole batch in this process: plan -> (load model only if needed) -> generate -> store.
    Progress (loading, assets, stems; decode steps below) goes to `musicops.progress`'s reporter."""
    from musicops.store.assets import open_asset_store
    from musicops.store.provenance import ProvenanceDB

    options = options or BatchOptions()
    settings = (settings or get_settings()).ensure()
    plan = plan_batch(prompts_file, model_ref, options, settings, items=items)
    store = open_asset_store(settings)
    store.sweep_partials()
    separator = None
    if options.stems != "none":  # before any generation: unavailable weights fail the batch up front
        from musicops.audio.stems import load_separator

        separator = load_separator(options.stems)
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
        report.update("assets", len(outcomes), total)
        generation_seconds = load_seconds = 0.0
        if pending:
            t_load = time.perf_counter()
            report.stage(f"loading {plan.model.pinned_uri} ({len(pending)} clip(s) to generate, "
                         f"{len(plan.cached)} from the cache)")
            model = load_model(plan.model, settings, precision=options.precision)
            load_seconds = time.perf_counter() - t_load

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
                report.update("assets", len(outcomes), total)

            generate_items(model, pending, options, on_batch)
        wall = time.perf_counter() - started  # generation only: stems are counted apart (n_stems)
        ordered = [outcomes[i] for i in range(len(plan.items))]
        n_stems = _separate(plan, ordered, separator, store, db) if separator is not None else None
        metrics = batch_metrics(ordered, wall, generation_seconds, price_per_hour(options, settings), load_seconds)
        if n_stems is not None:
            metrics["n_stems"] = float(n_stems)
        db.finish_batch(plan.batch_id, "finished", {k: v for k, v in metrics.items() if k.startswith("n_")})
    except BaseException:
        db.finish_batch(plan.batch_id, "failed", {"n_done": len(outcomes)})
        raise
    finally:
        db.close()
    run_id = log_batch_to_mlflow(plan, ordered, metrics, settings) if options.log_to_mlflow else None
    return BatchResult(plan, ordered, metrics, run_id)


def summarize_plan(plan: BatchPlan, settings: Settings | None = None,
                   measured_seconds: dict[int, float] | None = None) -> BatchResult:
    """Build the result of a plan whose items were stored by other processes (the kfp steps).

    `measured_seconds` (item index -> model seconds of this run, from the store steps) is what the
    timings come from: an item regenerated with `--no-cache` keeps its first row, whose
    `generation_seconds` belongs to that first run. Without it, the rows' figures are used."""
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
        measured = measured_seconds or {}
        outcomes = [ClipOutcome(item, records[key], key in plan.cached, False,
                                measured.get(index, records[key].generation_seconds or 0.0))
                    for index, (item, key) in enumerate(zip(plan.items, plan.keys, strict=True))]
        batch = db.get_batch(plan.batch_id)
        started = batch.get("started_at") if isinstance(batch, dict) else getattr(batch, "started_at", None)
        wall = (datetime.now(UTC) - _aware(started)).total_seconds() if started else 0.0
        generation = (sum(measured.values()) if measured_seconds is not None
                      else sum(o.record.generation_seconds or 0.0 for o in outcomes if not o.cache_hit))
        metrics = batch_metrics(outcomes, wall, generation, price_per_hour(plan.options, settings))
        db.finish_batch(plan.batch_id, "finished", {k: v for k, v in metrics.items() if k.startswith("n_")})
    finally:
        db.close()
    run_id = log_batch_to_mlflow(plan, outcomes, metrics, settings) if plan.options.log_to_mlflow else None
    return BatchResult(plan, outcomes, metrics, run_id)


def _separate(plan: BatchPlan, ordered: list[ClipOutcome], separator: Any, store: Any, db: Any) -> int:
    """`stems`: every delivered clip (generated now or from the cache) separated into stem assets linked
    to it (delivery.store_stems); stems already stored for a clip are kept. Returns the stems stored."""
    delivered = [o for o in ordered if o.record.passed]
    n = 0
    for done, outcome in enumerate(delivered, 1):
        n += len(store_stems(plan, outcome.record, separator, store, db))
        report.update("stems", done, len(delivered))
    return n


def open_batch(plan: BatchPlan, db: Any) -> None:
    """Record the batch before any asset is written, so every asset row points at a batch row."""
    db.start_batch(plan.batch_id, prompts_file=plan.prompts_file, prompts_sha256=plan.prompts_sha256,
                   model_uri=plan.model.pinned_uri, model_version=plan.model.version,
                   params={"options": options_dict(plan.options)}, user=plan.options.user,
                   code_version=code_version())


def _aware(moment: Any) -> Any:
    from datetime import UTC

    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

"""A batch plan as the JSON the kfp components exchange, and its pending items split into shards.

Its own module because this JSON is the contract between separately running pipeline steps: what
one step writes, the next must read back into the same `BatchPlan`.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from musicops.audio.postprocess import PostProcessSettings
from musicops.generation.planning import BatchOptions, BatchPlan, SamplingOptions, options_dict
from musicops.generation.prompts import WorkItem
from musicops.models.loading import ResolvedModel


def plan_to_json(plan: BatchPlan) -> dict[str, Any]:
    """Everything a later pipeline step needs to continue the plan (cache hits by key only)."""
    return {
        "batch_id": plan.batch_id, "prompts_file": plan.prompts_file, "prompts_sha256": plan.prompts_sha256,
        "model": asdict(plan.model), "model_id": plan.model_id, "items": [asdict(i) for i in plan.items],
        "keys": plan.keys, "cached": sorted(plan.cached), "options": options_dict(plan.options),
        "user": plan.options.user,
    }


def plan_from_json(data: dict[str, Any]) -> BatchPlan:
    raw = dict(data["options"])
    options = BatchOptions(
        batch_size=raw["batch_size"], use_cache=raw["use_cache"], sampling=SamplingOptions(**raw["sampling"]),
        postprocess=PostProcessSettings(**raw["postprocess"]), formats=tuple(raw["formats"]),
        loudness_tolerance_lu=raw["loudness_tolerance_lu"], user=data["user"],
        price_per_hour=raw["price_per_hour"], log_to_mlflow=raw["log_to_mlflow"], tenant=raw.get("tenant"),
        precision=raw.get("precision", "fp32"),
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

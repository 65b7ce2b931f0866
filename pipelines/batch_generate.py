"""The batch generation pipeline: plan -> ParallelFor(shards: generate -> post-process -> store) -> summary."""

# No `from __future__ import annotations` here: kfp reads the pipeline's real annotation objects.
from typing import Any

from kfp import dsl

from musicops.components.batch_generate import (
    generate_shard,
    plan_batch_step,
    postprocess_shard,
    store_shard,
    summarize_batch,
)
from musicops.pipelines.profile import LOCAL, Profile


def build(profile: Profile = LOCAL) -> Any:
    """The pipeline with `profile`'s cluster settings. Only post-processing is cacheable (a pure function
    of its input artifacts); planning opens a batch row, generation is per-run, storing writes assets."""

    @dsl.pipeline(name="musicops-batch-generate",
                  description="Generate every prompt x variation of a prompts file into the asset store.")
    def batch_generate_pipeline(
        prompts_file: str,
        model_ref: str = "musicgen-tiny",
        batch_size: int = 8,
        shard_size: int = 16,
        no_cache: bool = False,
        musicops_home: str = "",
        mlflow_tracking_uri: str = "",
        precision: str = "fp32",
    ) -> str:
        plan = profile.step(plan_batch_step(prompts_file=prompts_file, model_ref=model_ref, batch_size=batch_size,
                                            shard_size=shard_size, no_cache=no_cache, musicops_home=musicops_home,
                                            mlflow_tracking_uri=mlflow_tracking_uri, precision=precision),
                            cache=False)
        # Iterate the step's single `Output`: kfp.local resolves ParallelFor items only from that name.
        with dsl.ParallelFor(plan.outputs["Output"], parallelism=2) as shard:
            raw = profile.step(generate_shard(plan=plan.outputs["plan"], shard=shard, musicops_home=musicops_home,
                                              mlflow_tracking_uri=mlflow_tracking_uri),
                               cache=False, model=True)
            processed = profile.step(postprocess_shard(plan=plan.outputs["plan"], raw=raw.outputs["raw"]),
                                     cache=True)
            stored = profile.step(store_shard(plan=plan.outputs["plan"], processed=processed.outputs["processed"],
                                              musicops_home=musicops_home, mlflow_tracking_uri=mlflow_tracking_uri),
                                  cache=False)
        summary = profile.step(summarize_batch(plan=plan.outputs["plan"], stored=dsl.Collected(stored.output),
                                               musicops_home=musicops_home, mlflow_tracking_uri=mlflow_tracking_uri),
                               cache=False)
        return summary.outputs["Output"]

    return batch_generate_pipeline


batch_generate_pipeline = build()

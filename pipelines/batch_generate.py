"""The batch generation pipeline: plan -> ParallelFor(shards: generate -> post-process -> store) -> summary."""

from kfp import dsl

from musicops.components.batch_generate import (
    generate_shard,
    plan_batch_step,
    postprocess_shard,
    store_shard,
    summarize_batch,
)


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
    plan = plan_batch_step(prompts_file=prompts_file, model_ref=model_ref, batch_size=batch_size,
                           shard_size=shard_size, no_cache=no_cache, musicops_home=musicops_home,
                           mlflow_tracking_uri=mlflow_tracking_uri, precision=precision)
    plan.set_caching_options(False)
    # Iterate the step's single `Output`: kfp.local resolves ParallelFor items only from that name.
    with dsl.ParallelFor(plan.outputs["Output"], parallelism=2) as shard:
        raw = generate_shard(plan=plan.outputs["plan"], shard=shard, musicops_home=musicops_home,
                             mlflow_tracking_uri=mlflow_tracking_uri)
        raw.set_caching_options(False)
        processed = postprocess_shard(plan=plan.outputs["plan"], raw=raw.outputs["raw"])
        processed.set_caching_options(False)
        stored = store_shard(plan=plan.outputs["plan"], processed=processed.outputs["processed"],
                             musicops_home=musicops_home, mlflow_tracking_uri=mlflow_tracking_uri)
        stored.set_caching_options(False)
    summary = summarize_batch(plan=plan.outputs["plan"], stored=dsl.Collected(stored.output),
                              musicops_home=musicops_home, mlflow_tracking_uri=mlflow_tracking_uri)
    summary.set_caching_options(False)
    return summary.outputs["Output"]

"""kfp components for batch generation: plan -> (per shard) generate -> post-process -> store -> summary.

Each calls the same library functions as `musicops generate batch` (musicops.generation.batch).
Audio travels between steps inside the artifacts: `raw` and `processed` are directories holding
`audio.npz` and `meta.json`, so kfp uploads and downloads them whole (a file beside the artifact path
would stay on the pod that wrote it).
"""

# No `from __future__ import annotations` here: kfp reads the real annotation objects.
from kfp import dsl
from kfp.dsl import Artifact, Input, Metrics, Output

from musicops.components.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def plan_batch_step(prompts_file: str, model_ref: str, batch_size: int, shard_size: int, no_cache: bool,
                    musicops_home: str, mlflow_tracking_uri: str,
                    plan: Output[Artifact], precision: str = "fp32") -> list:
    """Validate prompts, pin the model version (fails before any generation), consult the cache.

    Returns the shard numbers (the single `Output`, which kfp.local's ParallelFor can iterate).
    """
    import json

    from musicops.components.runtime import component_settings
    from musicops.generation.batch import open_batch
    from musicops.generation.planning import BatchOptions, plan_batch
    from musicops.generation.shards import plan_to_json, shard_pending
    from musicops.store.provenance import ProvenanceDB

    settings = component_settings(musicops_home, mlflow_tracking_uri)
    options = BatchOptions(batch_size=batch_size, use_cache=not no_cache, precision=precision)
    batch_plan = plan_batch(prompts_file, model_ref, options, settings)
    db = ProvenanceDB.from_settings(settings)
    try:
        open_batch(batch_plan, db)
    finally:
        db.close()
    data = plan_to_json(batch_plan)
    data["shards"] = shard_pending(batch_plan, shard_size)
    with open(plan.path, "w") as handle:
        json.dump(data, handle)
    plan.metadata.update({"batch_id": batch_plan.batch_id, "model_uri": batch_plan.model.pinned_uri,
                          "n_items": len(batch_plan.items), "n_pending": len(batch_plan.pending)})
    return list(range(len(data["shards"])))


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def generate_shard(plan: Input[Artifact], shard: int, musicops_home: str, mlflow_tracking_uri: str,
                   raw: Output[Artifact]):
    """Generate the shard's pending items in batches; the model is loaded only if there are any."""
    import json
    import os

    import numpy as np

    from musicops.components.runtime import component_settings
    from musicops.generation.runner import generate_items
    from musicops.generation.shards import plan_from_json
    from musicops.models.loading import load_model

    settings = component_settings(musicops_home, mlflow_tracking_uri)
    with open(plan.path) as handle:
        data = json.load(handle)
    batch_plan, indices = plan_from_json(data), data["shards"][shard]
    arrays, seconds, rate = {}, {}, 0
    if indices:
        model = load_model(batch_plan.model, settings, precision=batch_plan.options.precision)
        rate = model.sample_rate

        def keep(local, clips, elapsed):
            for position, clip in zip(local, clips, strict=True):
                arrays[f"item_{indices[position]}"] = clip
                seconds[str(indices[position])] = elapsed / len(clips)

        generate_items(model, [batch_plan.items[i] for i in indices], batch_plan.options, keep)
    os.makedirs(raw.path, exist_ok=True)
    np.savez(os.path.join(raw.path, "audio.npz"), **arrays)
    with open(os.path.join(raw.path, "meta.json"), "w") as handle:
        json.dump({"sample_rate": rate, "seconds": seconds, "indices": indices}, handle)
    raw.metadata["n_items"] = len(indices)


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def postprocess_shard(plan: Input[Artifact], raw: Input[Artifact], processed: Output[Artifact]):
    """DC removal, loudness, true-peak limiter, fades; then the quality checks on the result."""
    import json
    import os

    import numpy as np

    from musicops.generation.delivery import process_clip
    from musicops.generation.shards import plan_from_json

    with open(plan.path) as handle:
        batch_plan = plan_from_json(json.load(handle))
    with open(os.path.join(raw.path, "meta.json")) as handle:
        meta = json.load(handle)
    audio = np.load(os.path.join(raw.path, "audio.npz"))
    arrays, info = {}, {}
    for index in meta["indices"]:
        clip = process_clip(audio[f"item_{index}"], meta["sample_rate"], batch_plan.items[index].duration_s,
                            batch_plan.options)
        arrays[f"item_{index}"] = clip.samples
        info[str(index)] = {"sample_rate": clip.sample_rate, "loudness_before": clip.loudness_before,
                            "loudness_after": clip.loudness_after, "true_peak_after": clip.true_peak_after,
                            "checks": [c.to_dict() for c in clip.checks], "seconds": meta["seconds"][str(index)]}
    # numpy's savez also takes `allow_pickle: bool`; mypy checks the unpacked arrays against it too
    os.makedirs(processed.path, exist_ok=True)
    np.savez(os.path.join(processed.path, "audio.npz"), **arrays)  # type: ignore[arg-type]
    with open(os.path.join(processed.path, "meta.json"), "w") as handle:
        json.dump({"indices": meta["indices"], "info": info}, handle)
    processed.metadata["n_failed_checks"] = sum(not c["passed"] for i in info.values() for c in i["checks"])


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def store_shard(plan: Input[Artifact], processed: Input[Artifact], musicops_home: str,
                mlflow_tracking_uri: str) -> str:
    """Encode WAV/FLAC with provenance tags, write to the asset store, one provenance row each.

    Returns JSON {item index: model seconds measured in this run}: a regenerated asset that already
    had a row keeps its first run's figure there, so the summary must not read timings back from it."""
    import json
    import os

    import numpy as np

    from musicops.audio.checks import CheckResult
    from musicops.components.runtime import component_settings
    from musicops.generation.delivery import ProcessedClip, store_clip
    from musicops.generation.shards import plan_from_json
    from musicops.store.assets import open_asset_store
    from musicops.store.provenance import ProvenanceDB

    settings = component_settings(musicops_home, mlflow_tracking_uri)
    with open(plan.path) as handle:
        batch_plan = plan_from_json(json.load(handle))
    with open(os.path.join(processed.path, "meta.json")) as handle:
        meta = json.load(handle)
    audio = np.load(os.path.join(processed.path, "audio.npz"))
    store, db = open_asset_store(settings), ProvenanceDB.from_settings(settings)
    try:
        for index in meta["indices"]:
            info = meta["info"][str(index)]
            clip = ProcessedClip(audio[f"item_{index}"], info["sample_rate"], info["loudness_before"],
                                 info["loudness_after"], info["true_peak_after"],
                                 [CheckResult(**c) for c in info["checks"]])
            store_clip(batch_plan, index, clip, info["seconds"], store, db)
    finally:
        db.close()
    return json.dumps({str(index): float(meta["info"][str(index)]["seconds"]) for index in meta["indices"]})


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def summarize_batch(plan: Input[Artifact], stored: list, musicops_home: str, mlflow_tracking_uri: str,
                    metrics: Output[Metrics]) -> str:
    """Collect every item's record (stored now or cached before), log the run to MLflow and kfp."""
    import json

    from musicops.components.runtime import component_settings
    from musicops.generation.batch import summarize_plan
    from musicops.generation.shards import plan_from_json

    settings = component_settings(musicops_home, mlflow_tracking_uri)
    with open(plan.path) as handle:
        batch_plan = plan_from_json(json.load(handle))
    measured = {int(index): seconds for shard in stored for index, seconds in json.loads(shard).items()}
    summary = summarize_plan(batch_plan, settings, measured)
    for name, value in summary.metrics.items():
        metrics.log_metric(name, float(value))
    return batch_plan.batch_id

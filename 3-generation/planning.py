"""Planning a batch before any model is loaded: the options, each item's cache key, the pinned model
identity and which items the cache already holds.

Its own module because the batch runner, the kfp plan step and the serving engine all plan the same
way, and a cache key computed differently in any of them would silently split the cache.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from musicops import __version__
from musicops.audio.postprocess import PostProcessSettings
from musicops.config import Settings, current_user, get_settings
from musicops.generation.prompts import WorkItem, expand, read_prompts
from musicops.hashing import directory_sha256, file_sha256
from musicops.models.loading import ResolvedModel, resolve_model
from musicops.models.sampling import SamplingParams
from musicops.store.cache import cache_key

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
    # The decoder's precision (musicops.models.decode: fp32, bf16, int8). Not fp32 changes the audio,
    # so it goes into each item's params (cache key and provenance); fp32 params and keys are as before.
    precision: str = "fp32"
    # The watermark embedded at delivery (musicops.audio.watermark): "none" or "perth". Not "none"
    # changes the audio, so it goes into each item's params (cache key and provenance); "none" params
    # and keys are as before. Off by default everywhere (see docs/watermark.md for why).
    watermark: str = "none"
    # Source separation of each delivered clip (musicops.audio.stems): "none", "htdemucs" (published
    # weights via the HF hub) or "htdemucs-random" (same architecture, random init, offline). Stems are
    # assets of their own linked to the clip (delivery.store_stems); the clip itself is unchanged, so
    # this never enters item params or cache keys.
    stems: str = "none"

    def __post_init__(self) -> None:
        from musicops.models.decode import check_precision

        check_precision(self.precision)
        if self.watermark not in ("none", "perth"):
            raise ValueError(f"watermark must be one of none, perth; got {self.watermark!r}")
        if self.stems not in ("none", "htdemucs", "htdemucs-random"):
            raise ValueError(f"stems must be one of none, htdemucs, htdemucs-random; got {self.stems!r}")
        if not 1 <= self.batch_size <= 256:
            raise ValueError(f"batch_size must be in [1, 256], got {self.batch_size}")
        if not self.formats or any(f not in ("wav", "flac", "ogg") for f in self.formats):
            raise ValueError(f"formats must be a non-empty subset of wav, flac, ogg; got {self.formats}")

    def for_tenant(self, tenant: str | None) -> BatchOptions:
        """The same options planned for an API tenant's own cache and assets (None: batch/CLI)."""
        return replace(self, tenant=tenant)


def options_dict(options: BatchOptions) -> dict[str, Any]:
    """The options as recorded (batch row, MLflow params, kfp plan), without the user, kept on its own."""
    data = asdict(options)
    data.pop("user", None)
    return data


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


def plan_batch(prompts_file: str | Path, model_ref: str, options: BatchOptions | None = None,
               settings: Settings | None = None, items: list[WorkItem] | None = None) -> BatchPlan:
    """Validate the prompts, pin the model version and consult the cache; loads no model weights."""
    from musicops.store.assets import open_asset_store
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
        store = open_asset_store(settings)
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
    params: dict[str, Any] = {"generation": options.sampling.params(item.duration_s).to_dict(),
                              "postprocess": options.postprocess.to_dict(), "formats": list(options.formats)}
    if options.precision != "fp32":  # fp32 (the reference) stays implicit: existing keys are unchanged
        params["precision"] = options.precision
    if options.watermark != "none":  # unwatermarked stays implicit: existing keys are unchanged
        from musicops.audio.watermark import watermark_params

        params["watermark"] = watermark_params(options.watermark)
    if item.melody_sha256:  # MusicGen-melody's reference audio: the content, never the path, is the key
        params["melody_sha256"] = item.melody_sha256
    return params


def model_identity(resolved: ResolvedModel) -> str:
    """A stable identity for the cache key: the registry version, hub commit, preset name or directory
    content."""
    if resolved.kind == "registry":
        return f"models:/{resolved.name}/{resolved.version}"
    if resolved.kind == "hub":  # a hub commit is immutable: repo id + commit sha pin the weights
        return f"hub:{resolved.name}@{resolved.version}"
    if resolved.kind == "preset":
        return f"preset:{resolved.name}@{__version__}"
    # The pre-existing framing (no separator): a local model's identity is in its assets' cache keys.
    return f"dir:{directory_sha256(resolved.reference, name_separator=b'')[:24]}"

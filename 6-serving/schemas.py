"""Request and response models. Request limits come from the server config, which may only tighten
the prompts-file limits of `musicops.generation.prompts`, so the OpenAPI spec states the real bounds."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from musicops.generation.prompts import MAX_SEED, MIN_DURATION_S
from musicops.models import sampling as sp
from musicops.serving.config import ServeConfig


class Sampling(BaseModel):
    """Sampling options (defaults = the batch pipeline's); requests that agree on these and on the
    duration can share one model call."""

    model_config = ConfigDict(extra="forbid")

    do_sample: bool = True
    guidance_scale: float = Field(sp.DEFAULT_GUIDANCE_SCALE, ge=sp.MIN_GUIDANCE_SCALE, le=sp.MAX_GUIDANCE_SCALE,
                                  description="Classifier-free guidance; 1 or less turns it off.")
    temperature: float = Field(sp.DEFAULT_TEMPERATURE, ge=sp.MIN_TEMPERATURE, le=sp.MAX_TEMPERATURE,
                               description=f"Below {sp.MIN_TEMPERATURE:g} the scaled logits overflow "
                                           "(NaN probabilities).")
    top_k: int = Field(sp.DEFAULT_TOP_K, ge=sp.MIN_TOP_K, le=sp.MAX_TOP_K, description="0 turns top-k off.")
    top_p: float = Field(sp.DEFAULT_TOP_P, ge=sp.MIN_TOP_P, le=sp.MAX_TOP_P, description="0 turns nucleus sampling off.")

    def params(self) -> sp.SamplingParams:
        """The core's validated sampling type (the bounds above are its bounds)."""
        return sp.SamplingParams(**self.model_dump())


class ErrorBody(BaseModel):
    code: str
    message: str
    request_id: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class ModelOut(BaseModel):
    name: str
    version: str | None = None
    uri: str


class AssetOut(BaseModel):
    asset_id: str
    sha256: str
    seed: int
    variation: int
    duration_s: float
    sample_rate: int
    passed: bool = Field(description="Quality checks passed; a failing asset is stored and flagged, never delivered.")
    failed_checks: list[str]
    cache_hit: bool
    loudness_lufs: float | None = None
    true_peak_dbtp: float | None = None
    audio_url: str | None = Field(None, description="Signed, expiring URL of the WAV file (None when not delivered).")
    urls: dict[str, str] = Field(default_factory=dict, description="Signed URL per stored format.")
    expires_at: int | None = Field(None, description="Unix time the signed URLs stop working.")
    tags: list[str] = Field(default_factory=list, description="This request's tags (not part of the cache key).")


class GenerateResponse(BaseModel):
    request_id: str | None = None
    model: ModelOut
    assets: list[AssetOut]


class Progress(BaseModel):
    done: int
    total: int
    fraction: float


class JobOut(BaseModel):
    job_id: str
    state: Literal["queued", "running", "succeeded", "failed"]
    progress: Progress
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    estimated_completion: str | None = Field(None, description="ISO time; rough, from queue depth and recent speed.")
    result: GenerateResponse | None = None
    error: str | None = None
    webhook_state: str
    webhook_error: str | None = Field(None, description="Why the webhook delivery failed (e.g. a redirect, which is never followed).")
    status_url: str


class ServiceModels(BaseModel):
    reference: str
    alias: str | None = None
    ready: bool
    model: dict[str, Any] | None = None
    loading_version: str | None = None
    poll_interval_s: float | None = None
    last_poll: float | None = None
    swaps: int
    last_error: str | None = None


class AuditOut(BaseModel):
    asset: dict[str, Any]
    gates: list[dict[str, Any]]
    urls: dict[str, str]
    expires_at: int | None = None


class Health(BaseModel):
    status: str
    model: str | None = None


MAX_BATCH_LINES = 100  # lines in one POST /v1/jobs/batch (each may have variations)


def request_models(config: ServeConfig) -> tuple[type[BaseModel], type[BaseModel], type[BaseModel], type[BaseModel]]:
    """(GenerateRequest, StreamRequest, JobRequest, BatchJobRequest) with this server's limits in their
    schemas."""

    class LineRequest(BaseModel):
        """One line of work: the fields of a prompts-file line."""

        model_config = ConfigDict(extra="forbid", json_schema_extra={
            "examples": [{"prompt": "calm piano with soft strings", "duration_s": 4.0, "seed": 7},
                         {"template": "game-level-loop", "vars": {"mood": "tense", "bpm": 140},
                          "preset": "loop-short"}]})

        prompt: str | None = Field(None, min_length=1, max_length=config.max_prompt_chars, pattern=r"\S",
                                   description="Text prompt (no control characters; at least one visible "
                                               "character). Or `template` + `vars`.")
        duration_s: float | None = Field(None, ge=MIN_DURATION_S, le=config.max_duration_s,
                                         description=f"Seconds of audio (at least {MIN_DURATION_S:g}: the loudness "
                                                     "check needs BS.1770's 0.4 s gating blocks). Required unless "
                                                     "a preset gives it.")
        seed: int | None = Field(None, ge=0, le=MAX_SEED, description="Default: derived from the prompt.")
        n_variations: int | None = Field(None, ge=1, le=config.max_variations,
                                         description="Seeds seed, seed+1, ... (default 1, or the preset's).")
        tags: list[str] = Field(default_factory=list, max_length=32)
        template: str | None = Field(None, max_length=64, description="A prompt template shipped with musicops "
                                     "(GET /v1/library lists them); the prompt is rendered from `vars`.")
        vars: dict[str, str | int] | None = Field(None, description="The template's parameter values.")
        preset: str | None = Field(None, max_length=64, description="A named preset of duration, variations "
                                   "and tags (this request's own fields win).")
        max_clips: ClassVar[int] = config.max_variations  # a preset's n_variations is held to it too

        @field_validator("tags")
        @classmethod
        def _tags(cls, value: list[str]) -> list[str]:
            if any(not 0 < len(t) <= 64 for t in value):
                raise ValueError("tags must be 1-64 characters each")
            return value

        @model_validator(mode="after")
        def _prompts_file_rules(self) -> Any:
            """The prompts-file validator is the authority (control characters, limits, templates,
            presets); then this server's limits apply to what a template or preset produced."""
            from musicops.serving.engine import request_items

            items = request_items(self.model_dump())
            longest = max(item.duration_s for item in items)
            if longest > config.max_duration_s:
                raise ValueError(f"duration_s {longest:g} exceeds this server's limit of {config.max_duration_s:g} s")
            variations = max(item.variation for item in items) + 1
            if variations > self.max_clips:
                raise ValueError(f"{variations} variations exceed the limit of {self.max_clips} for this endpoint")
            if len(self.prompt or "") > config.max_prompt_chars or len(items[0].prompt) > config.max_prompt_chars:
                raise ValueError(f"prompt exceeds {config.max_prompt_chars} characters")
            return self

    class GenerateRequest(LineRequest):
        sampling: Sampling = Field(default_factory=Sampling)

    class StreamRequest(GenerateRequest):
        n_variations: int | None = Field(None, ge=1, le=1, description="Streaming returns one clip.")
        max_clips: ClassVar[int] = 1

    class JobRequest(GenerateRequest):
        webhook_url: str | None = Field(None, max_length=2048,
                                        description="POSTed the job on completion; host must be allow-listed.")

    class BatchJobRequest(BaseModel):
        """Many lines as one durable job (bulk generation): each line like a prompts-file line."""

        model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"items": [
            {"prompt": "calm piano", "duration_s": 4.0}, {"template": "mood-piece", "vars": {"mood": "hopeful"},
                                                          "duration_s": 4.0}]}]})

        items: list[LineRequest] = Field(min_length=1, max_length=MAX_BATCH_LINES,
                                         description=f"1-{MAX_BATCH_LINES} lines (prompt or template, duration, "
                                                     "seed, variations, tags, preset).")
        sampling: Sampling = Field(default_factory=Sampling, description="Sampling for every line.")
        webhook_url: str | None = Field(None, max_length=2048,
                                        description="POSTed the job on completion; host must be allow-listed.")

    return GenerateRequest, StreamRequest, JobRequest, BatchJobRequest

"""Sampling parameters and their limits: the one home for what a generation request may ask for.

The API schema (`musicops.serving.schemas.Sampling`), the batch pipeline, prompts files and the
model backends all take their bounds from here, so a value one of them accepts the others accept too,
and the OpenAPI spec states the limits the models enforce.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

# Shortest clip anything accepts (API, CLI, prompts files): the loudness check gates in BS.1770's
# 0.4 s blocks, so a shorter clip has no loudness to measure and would always fail its checks.
MIN_DURATION_S = 0.5
# Longest clip anything accepts; a server's --max-duration may only lower it.
MAX_DURATION_S = 60.0

# Below this the scaled logits overflow the softmax into NaN probabilities.
MIN_TEMPERATURE = 0.05
# Above this the distribution is flat enough to be noise; transformers accepts any positive value.
MAX_TEMPERATURE = 10.0
# Classifier-free guidance: 0-1 disables it (MusicGen only guides above 1), above 20 the audio saturates.
MIN_GUIDANCE_SCALE = 0.0
MAX_GUIDANCE_SCALE = 20.0
# 0 disables top-k; MusicGen's codebooks have 2048 entries, so more is the same as 2048.
MIN_TOP_K = 0
MAX_TOP_K = 2048
# 0 disables nucleus sampling.
MIN_TOP_P = 0.0
MAX_TOP_P = 1.0

DEFAULT_GUIDANCE_SCALE = 3.0
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_K = 250
DEFAULT_TOP_P = 0.0


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {type(value).__name__}")
    if not low <= value <= high:  # NaN fails too
        raise ValueError(f"{name} must be in [{low:g}, {high:g}], got {value:g}")


@dataclass(frozen=True)
class SamplingParams:
    """How tokens are drawn, shared by every clip of a request or batch (durations vary per clip).

    Validated on construction, so an invalid value never reaches a model or a cache key.
    """

    do_sample: bool = True
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE
    temperature: float = DEFAULT_TEMPERATURE
    top_k: int = DEFAULT_TOP_K
    top_p: float = DEFAULT_TOP_P

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the field and its bounds for the first value out of range."""
        if not isinstance(self.do_sample, bool):
            raise ValueError(f"do_sample must be true or false, got {self.do_sample!r}")
        _check_range("guidance_scale", self.guidance_scale, MIN_GUIDANCE_SCALE, MAX_GUIDANCE_SCALE)
        _check_range("temperature", self.temperature, MIN_TEMPERATURE, MAX_TEMPERATURE)
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int):
            raise ValueError(f"top_k must be an integer, got {type(self.top_k).__name__}")
        _check_range("top_k", self.top_k, MIN_TOP_K, MAX_TOP_K)
        _check_range("top_p", self.top_p, MIN_TOP_P, MAX_TOP_P)

    def sampling(self) -> SamplingParams:
        """Just the sampling fields (drops a GenerationParams' duration)."""
        return SamplingParams(**{f.name: getattr(self, f.name) for f in fields(SamplingParams)})

    def params(self, duration_s: float) -> GenerationParams:
        """These sampling settings for one clip of `duration_s` seconds."""
        return GenerationParams(duration_s=duration_s, **asdict(self.sampling()))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GenerationParams(SamplingParams):
    """Everything besides prompt and seed that changes the generated audio (recorded in provenance)."""

    duration_s: float = 2.0

    def validate(self) -> None:
        # the model itself accepts any positive duration up to the global limit; MIN_DURATION_S is a
        # quality-check floor enforced where requests come in (API, prompts files)
        if (isinstance(self.duration_s, bool) or not isinstance(self.duration_s, (int, float))
                or not 0 < self.duration_s <= MAX_DURATION_S):
            raise ValueError(f"duration_s must be in (0, {MAX_DURATION_S:g}] seconds, got {self.duration_s!r}")
        super().validate()

    def to_dict(self) -> dict[str, Any]:
        return {"duration_s": self.duration_s, **asdict(self.sampling())}


def filtered_logits(scores: Any, params: SamplingParams) -> Any:
    """Temperature, then top-k, then top-p over (rows, vocab) guided scores: the one definition every
    sampler uses (the decode engine, continuous batching and the transformers reference path), so a
    clip samples the same distribution whichever path made it. Removed entries are -inf."""
    import torch

    logits = scores / params.temperature
    if params.top_k:
        kth = torch.topk(logits, min(params.top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p:
        ordered, index = torch.sort(logits, descending=True, dim=-1)
        cumulative = ordered.softmax(-1).cumsum(-1)
        drop = cumulative - ordered.softmax(-1) > params.top_p
        logits = logits.masked_fill(drop.scatter(-1, index, drop), float("-inf"))
    return logits

"""The small interface every music model backend implements (transformers MusicGen first).

Pipelines, serving and evaluation talk only to `MusicModel`, so another backend (for example an
audiocraft one) can be added without touching them.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from musicops.models.sampling import MAX_DURATION_S, MIN_TEMPERATURE, GenerationParams, SamplingParams

# re-exported: the sampling types and limits live in musicops.models.sampling
__all__ = ["MAX_DURATION_S", "MIN_TEMPERATURE", "GenerationParams", "ModelInfo", "MusicModel", "SamplingParams"]


@dataclass
class ModelInfo:
    """Where a loaded model came from: recorded with everything it generates."""

    name: str
    version: str | None = None
    run_id: str | None = None
    source: str = ""
    backend: str = ""
    tags: dict[str, str] = field(default_factory=dict)


class MusicModel(abc.ABC):
    """A text-to-music model: prompts + seed + params in, float32 mono/stereo audio out."""

    backend: str = "abstract"
    info: ModelInfo

    @property
    @abc.abstractmethod
    def sample_rate(self) -> int: ...

    @abc.abstractmethod
    def generate(self, prompts: list[str], params: GenerationParams, seed: int | list[int]) -> list[np.ndarray]:
        """Return one float32 array of shape (samples, channels) per prompt, deterministic for a seed
        (one seed for all prompts, or one per prompt)."""

    @abc.abstractmethod
    def save(self, directory: str | Path) -> Path:
        """Write weights + config + tokenizer so `load` (and MLflow) can bring the model back."""

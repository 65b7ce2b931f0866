"""The small interface every music model backend implements (transformers MusicGen first).

Pipelines, serving and evaluation talk only to `MusicModel`, so another backend (for example an
audiocraft one) can be added without touching them.
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MAX_DURATION_S = 300.0
MIN_TEMPERATURE = 0.05


@dataclass(frozen=True)
class GenerationParams:
    """Everything besides prompt and seed that changes the generated audio (recorded in provenance)."""

    duration_s: float = 2.0
    do_sample: bool = True
    guidance_scale: float = 3.0
    temperature: float = 1.0
    top_k: int = 250
    top_p: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.duration_s <= MAX_DURATION_S:
            raise ValueError(f"duration_s must be in (0, {MAX_DURATION_S}], got {self.duration_s}")
        if not MIN_TEMPERATURE <= self.temperature <= 100:
            # tiny positive temperatures overflow the softmax into NaN probabilities
            raise ValueError(f"temperature must be in [{MIN_TEMPERATURE}, 100], got {self.temperature}")
        if self.guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {self.guidance_scale}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    def generate(self, prompts: list[str], params: GenerationParams, seed: int) -> list[np.ndarray]:
        """Return one float32 array of shape (samples, channels) per prompt, deterministic for a seed."""

    @abc.abstractmethod
    def save(self, directory: str | Path) -> Path:
        """Write weights + config + tokenizer so `load` (and MLflow) can bring the model back."""

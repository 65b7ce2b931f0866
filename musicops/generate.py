"""Generate clips from any model reference into WAV files (the batch pipeline builds on this)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from musicops.config import Settings
from musicops.models.base import GenerationParams, ModelInfo


@dataclass(frozen=True)
class GeneratedClip:
    prompt: str
    seed: int
    path: Path
    duration_s: float
    sample_rate: int
    sha256: str


def generate_to_files(model_ref: str, prompts: list[str], params: GenerationParams, seed: int,
                      out_dir: str | Path, settings: Settings | None = None) -> tuple[ModelInfo, list[GeneratedClip]]:
    """Generate one clip per prompt (seed, seed+1, ...) and write them as 16-bit WAV files."""
    from musicops.audio.io import write_audio
    from musicops.models.loading import load_model

    prompts = [p.strip() for p in prompts]
    if not prompts or any(not p for p in prompts):
        raise ValueError("every prompt must be non-empty text")
    model = load_model(model_ref, settings)
    out = Path(out_dir)
    clips = []
    for index, prompt in enumerate(prompts):
        clip_seed = seed + index
        audio = model.generate([prompt], params, seed=clip_seed)[0]
        path = write_audio(out / f"{index:03d}-{_slug(prompt)}-s{clip_seed}.wav", audio, model.sample_rate)
        clips.append(GeneratedClip(prompt, clip_seed, path, audio.shape[0] / model.sample_rate,
                                   model.sample_rate, hashlib.sha256(path.read_bytes()).hexdigest()))
    return model.info, clips


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "clip"

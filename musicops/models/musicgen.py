"""MusicGen on Hugging Face transformers: the default backend.

Loads real weights from a local directory (for example a local copy of facebook/musicgen-small,
or a directory downloaded from an MLflow model version) or builds the `musicgen-tiny` preset.
Never touches the Hugging Face hub: loads use `local_files_only=True`.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from musicops.models.base import GenerationParams, ModelInfo, MusicModel

CONFIG_FILE = "config.json"


class ModelLoadError(ValueError):
    """A model directory that cannot be loaded; the message names the directory and the problem."""


class TransformersMusicGen(MusicModel):
    """`MusicgenForConditionalGeneration` + `MusicgenProcessor` behind the `MusicModel` interface."""

    backend = "transformers-musicgen"

    def __init__(self, model: Any, processor: Any, info: ModelInfo):
        self.model = model
        self.processor = processor
        self.info = info
        self.info.backend = self.backend

    # ----------------------------------------------------------------- loading
    @classmethod
    def from_preset(cls, name: str = "musicgen-tiny", seed: int = 0) -> TransformersMusicGen:
        from musicops.models.tiny import TINY_PRESET, build_tiny_musicgen

        if name != TINY_PRESET:
            raise ModelLoadError(f"unknown preset {name!r}; the built-in preset is {TINY_PRESET!r}")
        with _quiet_transformers():
            model, processor = build_tiny_musicgen(seed)
        return cls(model, processor, ModelInfo(name=TINY_PRESET, source=f"preset:{TINY_PRESET}"))

    @classmethod
    def from_dir(cls, directory: str | Path, info: ModelInfo | None = None,
                 device: str | None = None) -> TransformersMusicGen:
        """Load weights + processor saved by `save_pretrained` (ours or a local hub snapshot)."""
        from transformers import MusicgenForConditionalGeneration, MusicgenProcessor

        directory = Path(directory)
        config_path = directory / CONFIG_FILE
        if not config_path.is_file():
            raise ModelLoadError(f"{directory}: no {CONFIG_FILE}; not a MusicGen model directory")
        try:
            model_type = json.loads(config_path.read_text()).get("model_type")
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"{config_path}: unreadable config ({exc})") from exc
        if model_type != "musicgen":
            raise ModelLoadError(f"{config_path}: model_type is {model_type!r}, expected 'musicgen'")
        try:
            with _quiet_transformers():
                model = MusicgenForConditionalGeneration.from_pretrained(directory, local_files_only=True)
                processor = MusicgenProcessor.from_pretrained(directory, local_files_only=True)
        except Exception as exc:  # safetensors, tokenizers and torch each raise their own types
            raise ModelLoadError(f"{directory}: cannot load MusicGen weights ({type(exc).__name__}: {exc})") from exc
        from musicops.models.tiny import configure_generation

        configure_generation(model)
        model.eval()
        if device:
            model.to(device)
        return cls(model, processor, info or ModelInfo(name=directory.name, source=str(directory)))

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory)
        self.processor.save_pretrained(directory)
        return directory

    # -------------------------------------------------------------- properties
    @property
    def sample_rate(self) -> int:
        return int(self.model.config.audio_encoder.sampling_rate)

    @property
    def frame_rate(self) -> float:
        return float(self.model.config.audio_encoder.frame_rate)

    @property
    def num_codebooks(self) -> int:
        return int(self.model.decoder.num_codebooks)

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    # --------------------------------------------------------------- generate
    def tokens_for(self, duration_s: float) -> int:
        """Decoder steps for a duration: frames plus K-1, because the delay pattern eats K-1 frames."""
        frames = max(1, math.ceil(duration_s * self.frame_rate))
        return frames + self.num_codebooks - 1

    def generate(self, prompts: list[str], params: GenerationParams, seed: int) -> list[np.ndarray]:
        import torch

        if not prompts:
            return []
        inputs = self.processor(text=list(prompts), padding=True, return_tensors="pt").to(self.device)
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.tokens_for(params.duration_s),
            "do_sample": params.do_sample,
            "guidance_scale": params.guidance_scale if params.guidance_scale > 0 else None,
        }
        if params.do_sample:
            kwargs.update(temperature=params.temperature, top_k=params.top_k or None,
                          top_p=params.top_p or None)
        target = int(round(params.duration_s * self.sample_rate))
        with torch.random.fork_rng(devices=[] if self.device.type == "cpu" else [self.device]):
            torch.manual_seed(seed)
            with torch.inference_mode(), _quiet_transformers():
                audio = self.model.generate(**inputs, **kwargs)
        audio = audio.detach().float().cpu().numpy()  # (batch, channels, samples)
        clips = []
        for clip in audio:
            clip = clip.T[:target]
            if clip.shape[0] < target:  # decoders may come up a few samples short
                clip = np.pad(clip, ((0, target - clip.shape[0]), (0, 0)))
            clips.append(np.ascontiguousarray(clip, dtype=np.float32))
        return clips


@contextlib.contextmanager
def _quiet_transformers():
    """MusicGen's configs carry pad ids outside the vocab by design: silence that known warning
    (and the per-file progress bars of tiny local loads)."""
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)
        if bars:
            hf_logging.enable_progress_bar()

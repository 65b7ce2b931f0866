"""MusicGen on Hugging Face transformers: the default backend.

Loads real weights from a local directory (for example a local copy of facebook/musicgen-small,
or a directory downloaded from an MLflow model version) or builds the `musicgen-tiny` preset.
Never touches the Hugging Face hub: loads use `local_files_only=True`.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from musicops.errors import MusicopsError
from musicops.models.base import GenerationParams, ModelInfo, MusicModel
from musicops.models.sampling import filtered_logits

if TYPE_CHECKING:
    from musicops.models.continuous import ContinuousBatch
    from musicops.models.decode import DecodeEngine

CONFIG_FILE = "config.json"


class ModelLoadError(MusicopsError, ValueError):
    """A model directory that cannot be loaded; the message names the directory and the problem."""


class TransformersMusicGen(MusicModel):
    """`MusicgenForConditionalGeneration` + `MusicgenProcessor` behind the `MusicModel` interface."""

    backend = "transformers-musicgen"

    def __init__(self, model: Any, processor: Any, info: ModelInfo, precision: str = "fp32"):
        from musicops.models.decode import check_precision

        self.model = model
        self.processor = processor
        self.info = info
        self.info.backend = self.backend
        # decoder precision of `generate` (fp32, bf16, int8); callers record it with what it made
        self.precision = check_precision(precision)
        self._engines: dict[tuple[str, int], DecodeEngine] = {}

    # ----------------------------------------------------------------- loading
    @classmethod
    def from_preset(cls, name: str = "musicgen-tiny", seed: int = 0) -> TransformersMusicGen:
        from musicops.models.tiny import MELODY_PRESET, PRESETS, build_preset

        if name not in PRESETS:
            raise ModelLoadError(f"unknown preset {name!r}; the built-in presets are {', '.join(PRESETS)}")
        with _quiet_transformers():
            model, processor = build_preset(name, seed)
        if name == MELODY_PRESET:
            from musicops.models.melody import MelodyMusicGen

            return MelodyMusicGen(model, processor, ModelInfo(name=name, source=f"preset:{name}"))
        return cls(model, processor, ModelInfo(name=name, source=f"preset:{name}"))

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
        if model_type == "musicgen_melody":
            from musicops.models.melody import MelodyMusicGen

            return MelodyMusicGen.from_dir(directory, info=info, device=device)
        if model_type != "musicgen":
            raise ModelLoadError(f"{config_path}: model_type is {model_type!r}, expected 'musicgen' "
                                 "or 'musicgen_melody'")
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
            # transformers wraps `to` with functools.wraps; mypy then does not bind `self` to the model
            model.to(device)  # type: ignore[arg-type]
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
    def audio_channels(self) -> int:
        """1 (mono) or 2 (stereo MusicGen: left/right codebooks interleaved in the decoder)."""
        return int(getattr(self.model.decoder.config, "audio_channels", 1))

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    # --------------------------------------------------------------- generate
    def tokens_for(self, duration_s: float) -> int:
        """Decoder steps for a duration: frames plus K-1, because the delay pattern eats K-1 frames."""
        from musicops.models.decode import tokens_for

        return tokens_for(duration_s, self.frame_rate, self.num_codebooks // self.audio_channels)

    def generate(self, prompts: list[str], params: GenerationParams, seed: int | list[int]) -> list[np.ndarray]:
        """Generate one clip per prompt. `seed` may be one seed or one per prompt.

        Runs the decode engine (`musicops.models.decode`) at `self.precision`; in fp32 its clips are
        bit-identical to `generate_reference` (transformers `generate`). Sampling draws from a
        separate generator per prompt, so a clip depends on its own prompt, seed and params, not on
        which other prompts share its batch.
        """
        if not prompts:
            return []
        seeds = self._seeds(prompts, seed)
        return self.engine().generate(list(prompts), params, seeds).clips

    def engine(self, precision: str | None = None) -> DecodeEngine:
        """The decode engine for a precision (default `self.precision`); converted copies are kept."""
        from musicops.models.decode import DecodeEngine, check_precision

        precision = check_precision(precision or self.precision)
        if precision == "fp32":  # runs the model's own modules: nothing to convert or keep
            return DecodeEngine(self.model, self.processor, precision)
        key = (precision, id(self.model))
        if key not in self._engines:
            self._engines[key] = DecodeEngine(self.model, self.processor, precision)
        return self._engines[key]

    def continuous(self, max_rows: int = 16, slot_steps: int | None = None,
                   precision: str | None = None) -> ContinuousBatch:
        """A continuous batch over this model's engine: clips join at any decode step and leave when
        done; in fp32 each clip is bit-identical to `generate` of it alone (`musicops.models.continuous`)."""
        from musicops.models.continuous import ContinuousBatch

        return ContinuousBatch(self.engine(precision), max_rows, slot_steps)

    @staticmethod
    def _seeds(prompts: list[str], seed: int | list[int]) -> list[int]:
        seeds = list(seed) if isinstance(seed, list | tuple) else [seed] * len(prompts)
        if len(seeds) != len(prompts):
            raise ValueError(f"got {len(seeds)} seeds for {len(prompts)} prompts")
        return seeds

    def generate_reference(self, prompts: list[str], params: GenerationParams,
                           seed: int | list[int]) -> list[np.ndarray]:
        """The same clips through transformers' own `generate` (the backend before the engine):
        the reference that parity tests and benchmarks hold the engine to."""
        import torch

        if not prompts:
            return []
        seeds = self._seeds(prompts, seed)
        inputs = self.processor(text=list(prompts), padding=True, return_tensors="pt").to(self.device)
        from transformers import LogitsProcessorList

        sampler = _PerItemSampler(seeds, self.num_codebooks, params) if params.do_sample else None
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.tokens_for(params.duration_s),
            "do_sample": False,  # greedy over the sampler's single finite choice, or plain greedy decoding
            # > 1 doubles the batch into conditional + unconditional halves for classifier-free guidance
            "guidance_scale": params.guidance_scale if params.guidance_scale > 1 else None,
            "logits_processor": LogitsProcessorList([sampler]) if sampler else None,
        }
        target = int(round(params.duration_s * self.sample_rate))
        with torch.inference_mode(), _quiet_transformers(), _decode_one_by_one(self.model.audio_encoder):
            audio = self.model.generate(**inputs, **kwargs)
        audio = audio.detach().float().cpu().numpy()  # (batch, channels, samples)
        clips = []
        for clip in audio:
            clip = clip.T[:target]
            if clip.shape[0] < target:  # decoders may come up a few samples short
                clip = np.pad(clip, ((0, target - clip.shape[0]), (0, 0)))
            clips.append(np.ascontiguousarray(clip, dtype=np.float32))
        return clips


class _PerItemSampler:
    """A logits processor that samples each prompt's next codes with that prompt's own generator.

    transformers samples a whole batch from one global RNG, which ties a clip to its batch mates.
    This processor does classifier-free guidance, temperature, top-k and top-p itself, draws one
    token per codebook from the item's generator, and returns scores where only that token is
    finite, so greedy decoding (and MusicGen's own CFG step, which sees identical halves) keeps it.
    Used by `generate_reference`; the decode engine runs the same math (`DecodeEngine._choose`).
    """

    def __init__(self, seeds: list[int], num_codebooks: int, params: GenerationParams):
        import torch

        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.books = num_codebooks
        self.params = params

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        rows = len(self.generators) * self.books
        guided = scores.float()
        if scores.shape[0] == 2 * rows:  # conditional rows first, then unconditional
            cond, uncond = guided[:rows], guided[rows:]
            guided = uncond + (cond - uncond) * self.params.guidance_scale
        probs = filtered_logits(guided, self.params).softmax(-1).cpu()
        chosen = torch.empty(rows, dtype=torch.long)
        for item, generator in enumerate(self.generators):
            part = slice(item * self.books, (item + 1) * self.books)
            chosen[part] = torch.multinomial(probs[part], 1, generator=generator)[:, 0]
        forced = torch.full_like(scores, -1e9)
        chosen = chosen.to(scores.device)
        forced[torch.arange(rows, device=scores.device), chosen] = 0.0
        if scores.shape[0] == 2 * rows:
            forced[rows + torch.arange(rows, device=scores.device), chosen] = 0.0
        return forced


@contextlib.contextmanager
def _decode_one_by_one(codec: Any):
    """Decode each clip's codes on its own: batched EnCodec decoding differs in the last float bit
    with batch size, and assets must be bit-identical whatever batch they were generated in."""
    import torch

    batched = codec.decode

    def decode(audio_codes: Any, audio_scales: Any = None, *args: Any, **kwargs: Any) -> Any:
        scales = list(audio_scales) if audio_scales is not None else [None] * audio_codes.shape[1]
        parts = [batched(audio_codes[:, i:i + 1], [scales[i]], *args, **kwargs) for i in range(audio_codes.shape[1])]
        first = parts[0]
        first.audio_values = torch.cat([part.audio_values for part in parts], dim=0)
        return first

    codec.decode = decode
    try:
        yield
    finally:
        del codec.decode  # back to the class method


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

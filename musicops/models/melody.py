"""MusicGen-melody: text + a reference melody's chroma in, music out.

`MusicgenMelodyForConditionalGeneration` is decoder-only: the 12-bin chroma of the reference
melody (one-hot of the loudest pitch class per STFT frame, repeated or cut to `chroma_length`
frames) and the T5 text states are prepended to the audio tokens; there is no cross-attention, so
the decode engine (built around cross-attention K/V) does not run it. This backend generates
through transformers' own `generate`, one clip at a time (a clip depends only on its own prompt,
melody, seed and params), with the same per-item sampler and one-by-one EnCodec as
`TransformersMusicGen.generate_reference`.

transformers' `MusicgenMelodyFeatureExtractor` needs torchaudio, which is not installed here:
`MelodyFeatures` is the same computation (torch.stft with torchaudio's `Spectrogram(normalized=True,
power=2)` conventions, transformers' chroma filter bank) and writes/reads the same
`preprocessor_config.json`, so a saved model directory is the hub layout.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from musicops.models.base import GenerationParams, ModelInfo
from musicops.models.musicgen import (
    ModelLoadError,
    TransformersMusicGen,
    _decode_one_by_one,
    _PerItemSampler,
    _quiet_transformers,
)

PREPROCESSOR_FILE = "preprocessor_config.json"


@dataclass(frozen=True)
class Melody:
    """Reference audio: float32 samples (samples,) or (samples, channels) at `sample_rate`."""

    samples: np.ndarray
    sample_rate: int
    sha256: str = ""  # of the file it was read from (recorded in provenance), or of the samples

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Melody:
        from musicops.audio.io import read_audio
        from musicops.hashing import file_sha256

        audio = read_audio(path)
        return cls(np.asarray(audio.samples, dtype=np.float32), int(audio.sample_rate), file_sha256(path))


class MelodyFeatures:
    """`MusicgenMelodyFeatureExtractor` without torchaudio: chroma features (1, frames, num_chroma)."""

    def __init__(self, sampling_rate: int = 32_000, hop_length: int = 4096, chunk_length: int = 30,
                 n_fft: int = 16384, num_chroma: int = 12, padding_value: float = 0.0, **_: Any):
        self.sampling_rate = int(sampling_rate)
        self.hop_length = int(hop_length)
        self.chunk_length = int(chunk_length)
        self.n_fft = int(n_fft)
        self.num_chroma = int(num_chroma)
        self.padding_value = float(padding_value)

    @property
    def n_samples(self) -> int:
        return self.chunk_length * self.sampling_rate

    def __call__(self, melody: Melody) -> Any:
        import torch
        from transformers.audio_utils import chroma_filter_bank

        from musicops.audio.convert import resample

        samples = np.asarray(melody.samples, dtype=np.float32)
        mono = samples.mean(axis=1) if samples.ndim == 2 else samples
        mono = resample(mono.astype(np.float32), melody.sample_rate, self.sampling_rate)[: self.n_samples]
        if mono.shape[0] == 0:
            raise ValueError("the reference melody has no samples")
        wave = torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))[None]
        if wave.shape[-1] < self.n_fft:  # as the extractor: centre-pad short audio to one window
            pad = self.n_fft - wave.shape[-1]
            wave = torch.nn.functional.pad(wave, (pad // 2, pad // 2 + pad % 2), "constant", 0)
        window = torch.hann_window(self.n_fft)
        spec = torch.stft(wave, self.n_fft, self.hop_length, self.n_fft, window, center=True, pad_mode="reflect",
                          normalized=False, onesided=True, return_complex=True)
        spec = (spec / window.pow(2.0).sum().sqrt()).abs().pow(2.0)  # torchaudio normalized=True, power=2
        filters = torch.from_numpy(chroma_filter_bank(sampling_rate=self.sampling_rate, num_frequency_bins=self.n_fft,
                                                      tuning=0, num_chroma=self.num_chroma)).float()
        raw = torch.einsum("cf,...ft->...ct", filters, spec)
        chroma = torch.nn.functional.normalize(raw, p=float("inf"), dim=-2, eps=1e-6).transpose(1, 2)
        index = chroma.argmax(-1, keepdim=True)
        return torch.zeros_like(chroma).scatter_(-1, index, 1.0)  # (1, frames, num_chroma)

    def to_dict(self) -> dict[str, Any]:
        return {"feature_extractor_type": "MusicgenMelodyFeatureExtractor", "processor_class": "MusicgenMelodyProcessor",
                "feature_size": self.num_chroma, "sampling_rate": self.sampling_rate, "hop_length": self.hop_length,
                "chunk_length": self.chunk_length, "n_fft": self.n_fft, "num_chroma": self.num_chroma,
                "padding_value": self.padding_value, "padding_side": "right", "return_attention_mask": False,
                "stem_indices": [3, 2]}

    def save(self, directory: Path) -> None:
        (directory / PREPROCESSOR_FILE).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, directory: Path) -> MelodyFeatures:
        path = directory / PREPROCESSOR_FILE
        return cls(**json.loads(path.read_text())) if path.is_file() else cls()


class MelodyProcessor:
    """Text (the T5 tokenizer) and melody (`MelodyFeatures`) inputs, saved in the hub layout."""

    def __init__(self, tokenizer: Any, feature_extractor: MelodyFeatures):
        self.tokenizer = tokenizer
        self.feature_extractor = feature_extractor

    def __call__(self, text: list[str], **kwargs: Any) -> Any:
        return self.tokenizer(text, **kwargs)

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        directory = Path(directory)
        self.tokenizer.save_pretrained(directory)
        self.feature_extractor.save(directory)


class MelodyMusicGen(TransformersMusicGen):
    """`MusicgenMelodyForConditionalGeneration` behind the `MusicModel` interface.

    `generate(prompts, params, seed, melody=...)`: `melody` is one `Melody` for all prompts, one per
    prompt (None: text only, transformers' null chroma), or None."""

    backend = "transformers-musicgen-melody"

    @classmethod
    def from_dir(cls, directory: str | Path, info: ModelInfo | None = None,
                 device: str | None = None) -> MelodyMusicGen:
        from transformers import AutoTokenizer, MusicgenMelodyForConditionalGeneration

        from musicops.models.tiny import configure_generation

        directory = Path(directory)
        try:
            with _quiet_transformers():
                model = MusicgenMelodyForConditionalGeneration.from_pretrained(directory, local_files_only=True)
                tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        except Exception as exc:  # safetensors, tokenizers and torch each raise their own types
            raise ModelLoadError(f"{directory}: cannot load MusicGen-melody weights "
                                 f"({type(exc).__name__}: {exc})") from exc
        configure_generation(model)
        model.eval()
        if device:
            model.to(device)  # type: ignore[arg-type]
        processor = MelodyProcessor(tokenizer, MelodyFeatures.load(directory))
        return cls(model, processor, info or ModelInfo(name=directory.name, source=str(directory)))

    @property
    def audio_channels(self) -> int:
        return 1

    def engine(self, precision: str | None = None) -> Any:
        raise ValueError("MusicGen-melody is decoder-only (text and chroma prepended, no cross-attention): "
                         "it generates through transformers' generate, not the decode engine")

    def continuous(self, max_rows: int = 16, slot_steps: int | None = None, precision: str | None = None) -> Any:
        return self.engine(precision)

    def generate(self, prompts: list[str], params: GenerationParams, seed: int | list[int],
                 melody: Melody | list[Melody | None] | None = None) -> list[np.ndarray]:
        if not prompts:
            return []
        if self.precision != "fp32":
            raise ValueError(f"MusicGen-melody generates in fp32 only (asked for {self.precision})")
        seeds = self._seeds(prompts, seed)
        melodies = list(melody) if isinstance(melody, list | tuple) else [melody] * len(prompts)
        if len(melodies) != len(prompts):
            raise ValueError(f"got {len(melodies)} melodies for {len(prompts)} prompts")
        return [self._one(prompt, params, item_seed, item_melody)
                for prompt, item_seed, item_melody in zip(prompts, seeds, melodies, strict=True)]

    def generate_reference(self, prompts: list[str], params: GenerationParams, seed: int | list[int],
                           melody: Melody | list[Melody | None] | None = None) -> list[np.ndarray]:
        return self.generate(prompts, params, seed, melody)

    def _one(self, prompt: str, params: GenerationParams, seed: int, melody: Melody | None) -> np.ndarray:
        import torch
        from transformers import LogitsProcessorList

        inputs = dict(self.processor.tokenizer([prompt], padding=True, return_tensors="pt"))
        if melody is not None:
            inputs["input_features"] = self.processor.feature_extractor(melody)
        inputs = {key: value.to(self.device) for key, value in inputs.items()}
        sampler = _PerItemSampler([seed], self.num_codebooks, params) if params.do_sample else None
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.tokens_for(params.duration_s),
            "do_sample": False,  # greedy over the sampler's single finite choice, or plain greedy decoding
            "guidance_scale": params.guidance_scale if params.guidance_scale > 1 else None,
            "logits_processor": LogitsProcessorList([sampler]) if sampler else None,
        }
        with torch.inference_mode(), _quiet_transformers(), _decode_one_by_one(self.model.audio_encoder):
            audio = self.model.generate(**inputs, **kwargs)
        clip = audio.detach().float().cpu().numpy()[0].T  # (samples, channels)
        target = int(round(params.duration_s * self.sample_rate))
        clip = clip[:target]
        if clip.shape[0] < target:
            clip = np.pad(clip, ((0, target - clip.shape[0]), (0, 0)))
        return np.ascontiguousarray(clip, dtype=np.float32)

"""Source separation of delivered clips into stems (drums, bass, other, vocals).

A `Separator` takes (frames, channels) float audio at any rate and returns one array per stem, same
shape and rate. The default is demucs' HTDemucs (PyPI `demucs` 4.1, MIT):

- `htdemucs`: the published `htdemucs` weights, loaded by demucs itself through the Hugging Face hub
  (`adefossez/HTDemucs`, standard HF cache, `HF_HUB_OFFLINE` respected; demucs falls back to its own
  download URL). The hub snapshot's commit is the recorded revision.
- `htdemucs-random`: the same architecture (`HTDEMUCS_KWARGS`, the hyper-parameters of the released
  `htdemucs` checkpoint, signature 955717e8: 41.98 M parameters) with a seeded random init. Its stems
  are not musically meaningful; it exists so the whole path runs offline (tests, CI) on real shapes.

Only `demucs.htdemucs.HTDemucs`, `demucs.apply.apply_model` and (for hub weights) `demucs.pretrained`
are imported: none of them imports torchaudio (only demucs' training, `wav` and `repitch` modules do).

Rates: the clip is resampled to the model rate (44.1 kHz) with `musicops.audio.convert.resample`, the
model's stems are resampled back to the clip's rate the same way.

Sum to mix: HTDemucs' stems do not add up to its input by construction (and a random-init model's
not at all). The residual `mix - sum(stems)`, computed at the clip's rate after resampling back, is
added to "other" (what demucs' own `--two-stems` and most stem tools do with the leftover), so the
four stems sum to the mix up to float32 rounding: `SUM_TO_MIX_MAX_ABS` (measured max |error| of
the stems read back from PCM_24 files against the stored mix: 3.6e-7, SNR 115 dB on tiny-model
clips; stated bound 2e-6, i.e. an SNR above 100 dB on any delivered clip). Ogg Vorbis stems are lossy and carry no such bound.

Levels: stems are not loudness-normalised (that would break the sum). The true-peak ceiling is kept
as a safety: if any stem's true peak exceeds it, all four stems get one common gain (< 1, recorded
as `stem_gain`) that brings the loudest under it, so the stems then sum to `stem_gain * mix`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Protocol

import numpy as np

from musicops.audio.convert import RESAMPLER, resample

STEM_NAMES = ("drums", "bass", "other", "vocals")
RESIDUAL_STEM = "other"
SEPARATORS = ("htdemucs", "htdemucs-random")
HTDEMUCS_RATE = 44100
HTDEMUCS_HUB_REPO = "adefossez/HTDemucs"  # where demucs.hf looks for `htdemucs` (yaml + safetensors)
RANDOM_INIT_SEED = 0
SUM_TO_MIX_MAX_ABS = 2e-6  # stated bound on |sum(stems) / stem_gain - mix|, files read back (PCM_24)

# The released `htdemucs` (955717e8, demucs/remote/htdemucs.yaml): HTDemucs' defaults plus what its
# training grid (demucs/grids/mmi.py: dconv_mode 3, t_dropout 0.02, t_layers 5, bottom_channels 512)
# set, trained on 10 s * 0.88 - 1 s = 7.8 s segments. 41,984,456 parameters.
HTDEMUCS_KWARGS: dict[str, Any] = {
    "sources": list(STEM_NAMES),
    "audio_channels": 2,
    "samplerate": HTDEMUCS_RATE,
    "segment": Fraction(39, 5),
    "channels": 48,
    "growth": 2,
    "nfft": 4096,
    "depth": 4,
    "dconv_mode": 3,
    "dconv_depth": 2,
    "dconv_comp": 8,
    "bottom_channels": 512,
    "t_layers": 5,
    "t_heads": 8,
    "t_hidden_scale": 4.0,
    "t_dropout": 0.02,
}


class SeparatorUnavailable(RuntimeError):
    """The separator's weights cannot be loaded (offline without a cached snapshot, no access)."""


class Separator(Protocol):
    name: str
    revision: str  # weights revision: hub commit sha, or "random-init"
    sources: tuple[str, ...]

    def separate(self, samples: np.ndarray, sample_rate: int) -> dict[str, np.ndarray]:
        """(frames, channels) float audio -> {stem: (frames, channels) float32}, summing to `samples`."""
        ...

    def provenance(self) -> dict[str, Any]:
        ...


@dataclass
class HTDemucsSeparator:
    """HTDemucs through `demucs.apply.apply_model` (8 s windows, 25 % overlap, no random shifts)."""

    model: Any
    name: str = "htdemucs"
    revision: str = "random-init"
    sources: tuple[str, ...] = STEM_NAMES
    extra: dict[str, Any] = field(default_factory=dict)

    def provenance(self) -> dict[str, Any]:
        return {"name": self.name, "weights": self.revision, "model_rate": HTDEMUCS_RATE, "resampler": RESAMPLER,
                "residual_to": RESIDUAL_STEM, "shifts": 0, "overlap": 0.25, **self.extra}

    def separate(self, samples: np.ndarray, sample_rate: int) -> dict[str, np.ndarray]:
        import torch
        from demucs.apply import apply_model

        mix = np.asarray(samples, dtype=np.float32)
        mix = mix[:, None] if mix.ndim == 1 else mix
        if mix.ndim != 2 or not np.isfinite(mix).all():
            raise ValueError(f"separate needs finite (frames, channels) audio, got shape {np.shape(samples)}")
        frames, channels = mix.shape
        stereo = mix if channels == 2 else (np.repeat(mix, 2, axis=1) if channels == 1 else mix[:, :2])
        x = resample(stereo, sample_rate, HTDEMUCS_RATE, axis=0).astype(np.float32)
        # demucs normalises by the mix's mean/std around the model (as demucs.separate does).
        ref = x.mean(axis=1)
        mean, std = float(ref.mean()), float(ref.std()) or 1.0
        wav = torch.from_numpy(np.ascontiguousarray(((x - mean) / std).T))[None]
        with torch.inference_mode():
            estimate = apply_model(self.model, wav, shifts=0, split=True, overlap=0.25, progress=False)
        out = estimate[0].numpy() * std + mean / len(self.sources)  # (sources, 2, frames44)
        stems: dict[str, np.ndarray] = {}
        for name, stem in zip(self.model.sources, out, strict=True):
            back = resample(stem.T.astype(np.float32), HTDEMUCS_RATE, sample_rate, axis=0)[:frames]
            if back.shape[0] < frames:
                back = np.pad(back, ((0, frames - back.shape[0]), (0, 0)))
            if channels == 1:
                back = back.mean(axis=1, keepdims=True)
            elif channels > 2:
                back = np.concatenate([back, np.zeros((frames, channels - 2), np.float32)], axis=1)
            stems[name] = back.astype(np.float32)
        return complete_to_mix(mix, stems)


def complete_to_mix(mix: np.ndarray, stems: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Add the residual `mix - sum(stems)` to the "other" stem, so the stems sum to the mix."""
    total = np.zeros_like(mix, dtype=np.float64)
    for stem in stems.values():
        total += stem
    out = dict(stems)
    out[RESIDUAL_STEM] = (stems[RESIDUAL_STEM] + (mix - total)).astype(np.float32)
    return {name: out[name] for name in STEM_NAMES}


def random_init_htdemucs(seed: int = RANDOM_INIT_SEED) -> Any:
    """The released htdemucs architecture with seeded random weights (eval mode)."""
    import torch
    from demucs.htdemucs import HTDemucs

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = HTDemucs(**HTDEMUCS_KWARGS)
    return model.eval()


def load_separator(name: str = "htdemucs") -> HTDemucsSeparator:
    """`htdemucs` (published weights via the HF hub) or `htdemucs-random` (random init, offline)."""
    if name == "htdemucs-random":
        return HTDemucsSeparator(random_init_htdemucs(), name="htdemucs", revision="random-init",
                                 extra={"seed": RANDOM_INIT_SEED})
    if name != "htdemucs":
        raise ValueError(f"separator must be one of {', '.join(SEPARATORS)}; got {name!r}")
    try:
        from demucs.hf import get_hf_model
        from huggingface_hub import hf_hub_download

        bag: Any = get_hf_model("htdemucs").eval()
        # The snapshot demucs just read: .../snapshots/<commit>/htdemucs.yaml
        commit = os.path.basename(os.path.dirname(hf_hub_download(HTDEMUCS_HUB_REPO, "htdemucs.yaml")))
        revision = f"hf:{HTDEMUCS_HUB_REPO}@{commit}"
    except Exception as exc:
        try:  # demucs' own download (dl.fbaipublicfiles.com), when the hub is not reachable
            from demucs.pretrained import REMOTE_ROOT, ROOT_URL, AnyModelRepo, BagOnlyRepo, RemoteRepo
            from demucs.pretrained import _parse_remote_files as parse

            model_repo = RemoteRepo(parse(REMOTE_ROOT / "files.txt"))
            bag = AnyModelRepo(model_repo, BagOnlyRepo(REMOTE_ROOT, model_repo)).get_model("htdemucs").eval()
            revision = f"{ROOT_URL}hybrid_transformer/955717e8-8726e21a.th"
        except Exception as second:
            raise SeparatorUnavailable(
                f"separator 'htdemucs' needs the published weights ({HTDEMUCS_HUB_REPO} on the Hugging Face hub, "
                f"or demucs' download URL) and neither could be loaded ({exc}; {second}). Offline, use "
                "'htdemucs-random' (the same architecture, random init: not musically meaningful).") from second
    return HTDemucsSeparator(bag, name="htdemucs", revision=revision)


def stem_gain(stems: dict[str, np.ndarray], sample_rate: int, ceiling_dbtp: float | None) -> float:
    """One gain for all stems (<= 1) keeping every stem's true peak under the ceiling (0.1 dB margin)."""
    from musicops.audio.measure import true_peak_dbtp

    if ceiling_dbtp is None:
        ceiling_dbtp = 0.0
    loudest = max(true_peak_dbtp(s, sample_rate) for s in stems.values())
    limit = ceiling_dbtp - 0.1
    if not math.isfinite(loudest) or loudest <= limit:
        return 1.0
    return float(10.0 ** ((limit - loudest) / 20.0))


def sum_to_mix_error(stems: dict[str, np.ndarray], mix: np.ndarray, gain: float = 1.0) -> tuple[float, float]:
    """(max |sum(stems) / gain - mix|, SNR in dB of the mix against that error; inf when exact)."""
    total = np.zeros(np.shape(mix), dtype=np.float64)
    for stem in stems.values():
        total += np.asarray(stem, dtype=np.float64).reshape(total.shape)
    err = total / gain - np.asarray(mix, dtype=np.float64).reshape(total.shape)
    max_abs = float(np.abs(err).max()) if err.size else 0.0
    noise = float(np.sum(err**2))
    signal = float(np.sum(np.asarray(mix, dtype=np.float64) ** 2))
    snr = math.inf if noise == 0 else 10 * math.log10(max(signal, 1e-300) / noise)
    return max_abs, snr

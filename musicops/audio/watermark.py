"""Inaudible watermarks on delivered audio: one small interface, two neural watermarkers.

`embed(samples, sample_rate, payload) -> samples` and `detect(samples, sample_rate) -> Detection`,
float32 (frames, channels) in and out at the caller's rate and length, channels marked one by one.

- `perth`: Resemble AI's PerthNet (implicit) from the `resemble-perth` wheel, which ships its trained
  weights, so the real embedder and detector run offline. It marks the magnitude spectrogram below
  2 kHz at 32 kHz; it carries **no payload** (detection says only "marked by PerthNet").
  The wheel's own wrapper imports librosa (for resampling) and torchaudio (for its STFT modules),
  neither of which is installed here (PyPI torchaudio is a CUDA build that breaks beside our CPU
  torch). So the network is loaded from the wheel's model modules directly, with torchaudio's
  `Spectrogram`/`InverseSpectrogram` supplied by `torch.stft`/`torch.istft` with the same
  arguments (only while those modules are imported; nothing else ever sees the stand-in), and
  resampling done by `musicops.audio.convert.resample` like everywhere else in the platform.
- `audioseal`: Meta's AudioSeal (MIT code and weights, 16-bit payload), loaded from the HF hub by the
  `audioseal` package. Used only where the package and its weights are present; otherwise a clear
  `WatermarkUnavailable` names what is missing. The payload is 16 bits of the asset id.

Heavy libraries (torch, perth, audioseal) are imported on first use only.
"""

from __future__ import annotations

import functools
import importlib
import math
import sys
import threading
import types
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from musicops.errors import MusicopsError

METHODS = ("perth", "audioseal")
CHOICES = ("perth", "none")  # what `generate batch --watermark` accepts (audioseal: see docs/watermark.md)
PAYLOAD_BITS = 16
PERTH_THRESHOLD = 0.5  # mean decoder output over voiced frames; clean audio sits near 0, marked near 1
PERTH_NO_PAYLOAD = "perth carries no payload: detection only says the clip was marked by PerthNet"


class WatermarkUnavailable(MusicopsError):
    """A watermark method whose code or weights are not present here."""


@dataclass(frozen=True)
class Detection:
    detected: bool
    confidence: float  # the method's detection score in [0, 1]
    payload: str | None  # payload bits as a string of 0/1 when the method carries one, else None
    method: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Watermarker(Protocol):
    method: str
    carries_payload: bool

    def embed(self, samples: np.ndarray, sample_rate: int, payload: str | None = None) -> np.ndarray: ...

    def detect(self, samples: np.ndarray, sample_rate: int) -> Detection: ...


def payload_for(asset_id: str, bits: int = PAYLOAD_BITS) -> str:
    """The payload recorded for an asset: the first `bits` bits of its id's hex digest, as 0/1."""
    digest = asset_id.removeprefix("a_")
    value = int(digest[: math.ceil(bits / 4)], 16) >> (4 * math.ceil(bits / 4) - bits)
    return format(value, f"0{bits}b")


def get_watermarker(method: str) -> Watermarker:
    """The (cached, thread-safe to share) watermarker for `method`; raises WatermarkUnavailable."""
    if method not in METHODS:
        raise ValueError(f"unknown watermark method {method!r}; expected one of {', '.join(METHODS)}")
    return _watermarker(method)


@functools.cache
def _watermarker(method: str) -> Watermarker:
    return PerthWatermarker() if method == "perth" else AudioSealWatermarker()


def available(method: str) -> bool:
    """Whether `method` can run here (its code and weights load)."""
    try:
        get_watermarker(method)
    except WatermarkUnavailable:
        return False
    return True


def watermark_params(method: str) -> dict[str, Any]:
    """What an asset's provenance (and cache key) records about its watermark."""
    if method == "perth":
        from importlib.metadata import version

        return {"method": "perth", "payload": None, "note": "PerthNet carries no payload (detection only)",
                "package": f"resemble-perth {version('resemble-perth')}"}
    if method == "audioseal":
        return {"method": "audioseal", "payload": f"asset_id bits 0..{PAYLOAD_BITS - 1}"}
    raise ValueError(f"unknown watermark method {method!r}; expected one of {', '.join(METHODS)}")


@dataclass(frozen=True)
class Marked:
    """A delivered clip after watermarking and re-levelling, with its final measurements."""

    samples: np.ndarray
    sample_rate: int
    loudness: float
    true_peak: float
    relevel_gain_db: float


def mark_for_delivery(samples: np.ndarray, sample_rate: int, method: str, settings: Any,
                      payload: str | None = None) -> Marked:
    """Embed, then level the marked clip back onto the post-processing targets.

    The mark moves loudness and peaks a little (PerthNet: ~0.1-0.5 LU, a few tenths of a dB of true
    peak), so the marked clip goes once more through `postprocess`'s gain search and true-peak limiter
    with the same loudness target and ceiling (no DC filter, fades or resampling: those already ran),
    and what comes out is re-measured there; the delivery checks then verify it with pyloudnorm.
    """
    from dataclasses import replace

    from musicops.audio.postprocess import _Fades, postprocess

    clean = _frames_channels(samples)
    residual = get_watermarker(method).embed(clean, sample_rate, payload) - clean
    # the mark fades in and out with the clip, so its first and last samples stay exactly 0
    marked = clean + _Fades(clean.shape[0], sample_rate, settings.fade_in_ms, settings.fade_out_ms).apply(residual.T).T
    level = replace(settings, dc_removal=False, fade_in_ms=0.0, fade_out_ms=0.0, sample_rate=None)
    out = postprocess(marked, sample_rate, level)
    return Marked(out.samples, out.sample_rate, out.loudness_after, out.true_peak_after, out.gain_db)


def _frames_channels(samples: np.ndarray) -> np.ndarray:
    data = np.asarray(samples, dtype=np.float32)
    if data.ndim == 1:
        data = data[:, None]
    if data.ndim != 2:
        raise ValueError(f"audio must be (frames,) or (frames, channels), got shape {np.shape(samples)}")
    return data


# ---------------------------------------------------------------------------------------- perth


class _Spectrogram:
    """torchaudio.transforms.Spectrogram(power=None) as torch.stft with torchaudio's arguments."""

    def __init__(self, n_fft: int, win_length: int, hop_length: int, window_fn: Any, normalized: bool = False,
                 power: float | None = None, **_: Any):
        import torch

        if power is not None or normalized:
            raise NotImplementedError("stand-in supports power=None, normalized=False only (what PerthNet uses)")
        self.n_fft, self.win_length, self.hop_length = n_fft, win_length, hop_length
        self.window = window_fn(win_length)
        self._torch = torch

    def __call__(self, waveform: Any) -> Any:
        shape = waveform.size()
        flat = waveform.reshape(-1, shape[-1])
        spec = self._torch.stft(flat, self.n_fft, self.hop_length, self.win_length, self.window.to(flat.device),
                                center=True, pad_mode="reflect", normalized=False, onesided=True,
                                return_complex=True)
        return spec.reshape(shape[:-1] + spec.shape[-2:])


class _InverseSpectrogram(_Spectrogram):
    """torchaudio.transforms.InverseSpectrogram as torch.istft with torchaudio's arguments."""

    def __call__(self, spectrogram: Any, length: int | None = None) -> Any:
        shape = spectrogram.size()
        flat = spectrogram.reshape(-1, shape[-2], shape[-1])
        wave = self._torch.istft(flat, self.n_fft, self.hop_length, self.win_length, self.window.to(flat.device),
                                 center=True, normalized=False, onesided=True, length=length,
                                 return_complex=False)
        return wave.reshape(shape[:-2] + wave.shape[-1:])


class _TimeStretch:
    def __init__(self, **_: Any):
        pass

    def __call__(self, *_: Any) -> Any:
        raise NotImplementedError("time stretch is a PerthNet training attack; not used for embedding/detection")


_IMPORT_LOCK = threading.Lock()


def _perth_modules() -> tuple[Any, Any, Any, Path]:
    """PerthNet, PerthConfig and magphase_to_cx from the installed wheel, and its weights directory."""
    try:
        import perth  # type: ignore[import-untyped]  # its optional PerthImplicitWatermarker import fails quietly without librosa
    except ImportError as exc:
        raise WatermarkUnavailable("watermark method 'perth' needs the resemble-perth package "
                                   f"(pip install resemble-perth==1.0.1): {exc}") from exc
    package = Path(perth.__file__).parent / "perth_net"
    weights = package / "pretrained" / "implicit"
    with _IMPORT_LOCK:
        saved = {name: sys.modules.get(name) for name in ("torchaudio", "torchaudio.transforms")}
        if "perth.perth_net" not in sys.modules:
            # perth/perth_net/__init__.py needs pkg_resources and librosa only to find this directory
            # and import the wrapper we replace; a bare package module stands in for it.
            shim = types.ModuleType("perth.perth_net")
            shim.__path__ = [str(package)]
            shim.PREPACKAGED_MODELS_DIR = str(package / "pretrained")  # type: ignore[attr-defined]
            sys.modules["perth.perth_net"] = shim
        if "perth.perth_net.perth_net_implicit.audio_processor" not in sys.modules:
            fake = types.ModuleType("torchaudio")
            transforms = types.ModuleType("torchaudio.transforms")
            transforms.Spectrogram = _Spectrogram  # type: ignore[attr-defined]
            transforms.InverseSpectrogram = _InverseSpectrogram  # type: ignore[attr-defined]
            transforms.TimeStretch = _TimeStretch  # type: ignore[attr-defined]
            fake.transforms = transforms  # type: ignore[attr-defined]
            sys.modules["torchaudio"], sys.modules["torchaudio.transforms"] = fake, transforms
        try:
            model = importlib.import_module("perth.perth_net.perth_net_implicit.model.perth_net")
            config = importlib.import_module("perth.perth_net.perth_net_implicit.config")
            utils = importlib.import_module("perth.perth_net.perth_net_implicit.utils")
        finally:
            for name, module in saved.items():
                if module is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = module
    return model.PerthNet, config.PerthConfig, utils.magphase_to_cx, weights


class PerthWatermarker:
    """PerthNet (implicit) with the wheel's trained weights; no payload."""

    method = "perth"
    carries_payload = False

    def __init__(self) -> None:
        import torch
        import yaml

        perth_net_cls, config_cls, self._magphase_to_cx, weights = _perth_modules()
        checkpoints = sorted(weights.glob("*.pth.tar"))
        if not checkpoints:
            raise WatermarkUnavailable(f"resemble-perth's weights are missing from {weights}")
        hp = config_cls(**yaml.safe_load((weights / "hparams.yaml").read_text()))
        net = perth_net_cls(hp)
        state = torch.load(checkpoints[-1], map_location="cpu", weights_only=True)
        weights_state = state["model"]
        # the STFT stand-ins hold their windows as plain tensors: the checkpoint's copies (and the
        # training-only time-stretch buffer) are checked against them instead of loaded
        for name in ("ap.spectrogram.window", "ap.inv_spectrogram.window"):
            window = getattr(net.ap, name.split(".")[1]).window
            if name in weights_state and not torch.allclose(weights_state.pop(name), window):
                raise WatermarkUnavailable(f"PerthNet checkpoint {checkpoints[-1]}: {name} differs from hann")
        weights_state.pop("ap.stretch.phase_advance", None)
        net.load_state_dict(weights_state)
        self.net = net.eval()
        self.hp = hp
        self.rate = int(hp.sample_rate)
        self.weights = f"{checkpoints[-1].name} ({(weights / 'id.txt').read_text().strip()})"
        self._torch = torch
        self._lock = threading.Lock()  # one forward at a time: torch modules are shared

    def embed(self, samples: np.ndarray, sample_rate: int, payload: str | None = None) -> np.ndarray:
        from musicops.audio.convert import resample

        if payload is not None:
            raise ValueError(PERTH_NO_PAYLOAD)
        data = _frames_channels(samples)
        frames = data.shape[0]
        out = np.empty_like(data)
        torch = self._torch
        for ch in range(data.shape[1]):
            x = resample(data[:, ch].astype(np.float64), sample_rate, self.rate).astype(np.float32)
            with self._lock, torch.inference_mode():
                mag, phase = self.net.ap.signal_to_magphase(torch.from_numpy(np.ascontiguousarray(x)))
                marked, _mask = self.net.encoder(mag[None])
                spec = self._magphase_to_cx(self.hp, marked[0], phase)
                y = self.net.ap.inv_spectrogram(spec, x.shape[0]).numpy().astype(np.float64)
            y = resample(y, self.rate, sample_rate)
            # the rate round trip may leave a frame more or less: keep the caller's length exactly
            y = y[:frames] if y.shape[0] >= frames else np.pad(y, (0, frames - y.shape[0]))
            out[:, ch] = y
        return out

    def detect(self, samples: np.ndarray, sample_rate: int) -> Detection:
        from musicops.audio.convert import resample

        data = _frames_channels(samples)
        x = resample(data.astype(np.float64).mean(axis=1), sample_rate, self.rate).astype(np.float32)
        torch = self._torch
        if x.shape[0] < self.hp.n_fft:
            return Detection(False, 0.0, None, self.method)
        with self._lock, torch.inference_mode():
            mag, _phase = self.net.ap.signal_to_magphase(torch.from_numpy(np.ascontiguousarray(x)))
            pred = self.net.decoder(mag[None])[0].clip(0.0, 1.0).numpy()
        confidence = float(np.mean(pred)) if pred.size else 0.0
        return Detection(confidence >= PERTH_THRESHOLD, round(confidence, 4), None, self.method)


# ------------------------------------------------------------------------------------ audioseal


class AudioSealWatermarker:
    """AudioSeal (16 kHz, 16-bit payload) through the `audioseal` package and the HF hub."""

    method = "audioseal"
    carries_payload = True
    generator_card = "audioseal_wm_16bits"
    detector_card = "audioseal_detector_16bits"
    rate = 16_000

    def __init__(self) -> None:
        try:
            from audioseal import AudioSeal  # type: ignore[import-not-found]
        except ImportError as exc:
            raise WatermarkUnavailable(
                "watermark method 'audioseal' needs the audioseal package and its weights "
                f"({self.generator_card}, {self.detector_card}) from the Hugging Face hub; "
                f"the package is not installed here ({exc}); use --watermark perth offline") from exc
        try:
            self.generator = AudioSeal.load_generator(self.generator_card).eval()
            self.detector = AudioSeal.load_detector(self.detector_card).eval()
        except Exception as exc:  # noqa: BLE001 - any load failure means: weights not available here
            raise WatermarkUnavailable(
                f"watermark method 'audioseal': could not load {self.generator_card}/{self.detector_card} "
                f"(weights not in the HF cache and no hub access?): {exc}") from exc

    def embed(self, samples: np.ndarray, sample_rate: int, payload: str | None = None) -> np.ndarray:
        import torch

        from musicops.audio.convert import resample

        if payload is None or len(payload) != PAYLOAD_BITS or set(payload) - {"0", "1"}:
            raise ValueError(f"audioseal needs a {PAYLOAD_BITS}-bit payload as 0/1 characters, got {payload!r}")
        bits = torch.tensor([[int(b) for b in payload]])
        data = _frames_channels(samples)
        out = np.empty_like(data)
        for ch in range(data.shape[1]):
            x = resample(data[:, ch].astype(np.float64), sample_rate, self.rate).astype(np.float32)
            with torch.inference_mode():
                wav = torch.from_numpy(x)[None, None]
                mark = self.generator.get_watermark(wav, self.rate, message=bits)[0, 0].numpy()
            delta = resample(mark.astype(np.float64), self.rate, sample_rate)[: data.shape[0]]
            out[:, ch] = data[:, ch] + np.pad(delta, (0, data.shape[0] - delta.shape[0]))
        return out

    def detect(self, samples: np.ndarray, sample_rate: int) -> Detection:
        import torch

        from musicops.audio.convert import resample

        x = resample(_frames_channels(samples).astype(np.float64).mean(axis=1), sample_rate, self.rate)
        with torch.inference_mode():
            score, message = self.detector.detect_watermark(torch.from_numpy(x.astype(np.float32))[None, None],
                                                            self.rate)
        confidence = float(score)
        payload = "".join(str(int(b)) for b in message[0].tolist())
        return Detection(confidence >= 0.5, round(confidence, 4), payload if confidence >= 0.5 else None,
                         self.method)

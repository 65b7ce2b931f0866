"""Quality checks on generated audio: a failing asset is flagged and kept out of delivery.

Also the artifact detectors evaluation reuses (silence, clipping, NaN/Inf, DC, loudness, spectral
flatness of noise, wrong duration).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from musicops.audio.postprocess import PostProcessSettings

NOT_COMPUTED = "not computed: non-finite samples"


@dataclass(frozen=True)
class CheckThresholds:
    silence_dbfs: float = -60.0  # RMS below this = silent
    clip_level: float = 0.999
    max_clipped_fraction: float = 0.001
    max_dc_offset: float = 0.01
    loudness_range_lufs: tuple[float, float] | None = (-14.5, -13.5)  # None = skip
    true_peak_ceiling_dbtp: float | None = -1.0
    duration_tolerance: float = 0.05  # fraction of the expected duration
    spectral_flatness_max: float | None = None  # None = informational only (noise detector)


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    value: float | None
    limit: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["value"] is not None and not math.isfinite(data["value"]):
            data["value"] = None  # JSON has no -inf
        return data


def thresholds_for(settings: PostProcessSettings, tolerance_lu: float = 0.5) -> CheckThresholds:
    """The checks that match a post-processing configuration (loudness window around its target)."""
    window = None
    if settings.target_lufs is not None:
        window = (settings.target_lufs - tolerance_lu, settings.target_lufs + tolerance_lu)
    return CheckThresholds(loudness_range_lufs=window, true_peak_ceiling_dbtp=settings.true_peak_dbtp)


def failed(results: list[CheckResult]) -> list[CheckResult]:
    return [r for r in results if not r.passed]


def run_checks(samples: np.ndarray, sample_rate: int, expected_duration_s: float | None,
               thresholds: CheckThresholds = CheckThresholds()) -> list[CheckResult]:  # noqa: B008
    from musicops.audio.measure import integrated_loudness
    from musicops.audio.postprocess import true_peak_dbtp

    data = np.asarray(samples, dtype=np.float64)
    data = data[:, None] if data.ndim == 1 else data
    t = thresholds
    bad = int((~np.isfinite(data)).sum())
    results = [CheckResult("finite", bad == 0, float(bad), "0 NaN/Inf samples", f"{bad} NaN/Inf samples")]
    duration = data.shape[0] / float(sample_rate)
    if bad:
        for name in ("silence", "clipping", "dc_offset", "loudness", "true_peak", "spectral_flatness"):
            results.append(CheckResult(name, False, None, "-", NOT_COMPUTED))
    else:
        rms = float(np.sqrt(np.mean(data**2))) if data.size else 0.0
        rms_db = 20 * math.log10(rms) if rms > 0 else -math.inf
        results.append(CheckResult("silence", rms_db > t.silence_dbfs, rms_db, f"RMS > {t.silence_dbfs} dBFS",
                                   f"RMS {rms_db:.1f} dBFS"))
        clipped = float(np.mean(np.abs(data) >= t.clip_level)) if data.size else 0.0
        results.append(CheckResult("clipping", clipped <= t.max_clipped_fraction, clipped,
                                   f"<= {t.max_clipped_fraction:.2%} samples at |x| >= {t.clip_level}",
                                   f"{clipped:.3%} of samples clipped"))
        dc = float(np.max(np.abs(data.mean(axis=0)))) if data.size else 0.0
        results.append(CheckResult("dc_offset", dc <= t.max_dc_offset, dc, f"|mean| <= {t.max_dc_offset}",
                                   f"DC offset {dc:.4f}"))
        if t.loudness_range_lufs is None:
            results.append(CheckResult("loudness", True, None, "not checked", "no loudness window configured"))
        else:
            low, high = t.loudness_range_lufs
            lufs = integrated_loudness(data, sample_rate)
            results.append(CheckResult("loudness", low <= lufs <= high, lufs, f"{low:.1f}..{high:.1f} LUFS",
                                       f"integrated loudness {lufs:.2f} LUFS"))
        if t.true_peak_ceiling_dbtp is None:
            results.append(CheckResult("true_peak", True, None, "not checked", "no ceiling configured"))
        else:
            peak = true_peak_dbtp(data, sample_rate)
            results.append(CheckResult("true_peak", peak <= t.true_peak_ceiling_dbtp + 1e-6, peak,
                                       f"<= {t.true_peak_ceiling_dbtp:.1f} dBTP", f"true peak {peak:.2f} dBTP"))
    if expected_duration_s is None:
        results.append(CheckResult("duration", True, duration, "not checked", f"{duration:.3f} s"))
    else:
        off = abs(duration - expected_duration_s) / expected_duration_s if expected_duration_s > 0 else math.inf
        results.append(CheckResult("duration", off <= t.duration_tolerance, duration,
                                   f"{expected_duration_s:.3f} s ± {t.duration_tolerance:.0%}",
                                   f"{duration:.3f} s ({off:.1%} off)"))
    if not bad:
        flatness = spectral_flatness(data.mean(axis=1))
        limit = t.spectral_flatness_max
        results.append(CheckResult("spectral_flatness", limit is None or flatness <= limit, flatness,
                                   "informational" if limit is None else f"<= {limit}",
                                   f"mean spectral flatness {flatness:.3f} (1.0 = white noise)"))
    order = ["finite", "silence", "clipping", "dc_offset", "loudness", "true_peak", "duration", "spectral_flatness"]
    return sorted(results, key=lambda r: order.index(r.name))


def spectral_flatness(mono: np.ndarray, frame: int = 2048) -> float:
    """Mean over frames of geometric / arithmetic mean of the power spectrum (1 = white noise)."""
    if mono.shape[0] < frame:
        frame = max(16, 1 << int(math.log2(max(16, mono.shape[0]))))
        if mono.shape[0] < frame:
            return 0.0
    count = mono.shape[0] // frame
    frames = mono[: count * frame].reshape(count, frame) * np.hanning(frame)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2 + 1e-20
    loud = power.mean(axis=1) > 1e-12  # skip silent frames
    if not loud.any():
        return 0.0
    flat = np.exp(np.mean(np.log(power[loud]), axis=1)) / np.mean(power[loud], axis=1)
    return float(np.mean(flat))

"""Quality checks on generated audio: a clip that fails one is flagged and kept out of delivery.

Run at generation time on exactly what will be delivered (after `postprocess`), and reused by
evaluation as artifact detectors (NaN/Inf, silence, clipping, DC, loudness, true peak, duration,
noise via spectral flatness). Every result names its measured value and its limit, so a failed
asset's record says why without re-running anything.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from musicops.audio.postprocess import PostProcessSettings

CHECK_NAMES = ("finite", "silence", "clipping", "dc_offset", "loudness", "true_peak", "duration",
               "spectral_flatness")
NOT_COMPUTED = "not computed: non-finite samples"
_FLATNESS_FRAME = 2048


@dataclass(frozen=True)
class CheckThresholds:
    silence_dbfs: float = -60.0  # RMS below this = silent
    clip_level: float = 0.999
    max_clipped_fraction: float = 0.001
    max_dc_offset: float = 0.01
    loudness_range_lufs: tuple[float, float] | None = (-14.5, -13.5)  # None = skip
    true_peak_ceiling_dbtp: float | None = -1.0  # None = skip
    duration_tolerance: float = 0.05  # fraction of the expected duration
    spectral_flatness_max: float | None = None  # None = informational only (noise detector, never gating)


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    value: float | None
    limit: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: a non-finite value (e.g. -inf LUFS of silence) becomes None; the detail keeps it."""
        data = asdict(self)
        if data["value"] is not None and not math.isfinite(data["value"]):
            data["value"] = None
        return data


def thresholds_for(settings: PostProcessSettings, tolerance_lu: float = 0.5) -> CheckThresholds:
    """Checks matching a post-processing configuration: a loudness window around its target, its ceiling."""
    window = None
    if settings.target_lufs is not None:
        window = (settings.target_lufs - tolerance_lu, settings.target_lufs + tolerance_lu)
    return CheckThresholds(loudness_range_lufs=window, true_peak_ceiling_dbtp=settings.true_peak_dbtp)


def failed(results: list[CheckResult]) -> list[CheckResult]:
    return [r for r in results if not r.passed]


def run_checks(samples: np.ndarray, sample_rate: int, expected_duration_s: float | None,
               thresholds: CheckThresholds = CheckThresholds()) -> list[CheckResult]:  # noqa: B008
    """All checks, in `CHECK_NAMES` order; never raises on bad audio (that is what it reports)."""
    data = np.asarray(samples, dtype=np.float64)
    data = data[:, None] if data.ndim == 1 else data
    t = thresholds
    non_finite = int(data.size - np.count_nonzero(np.isfinite(data)))
    results = [CheckResult("finite", non_finite == 0, float(non_finite), "0 NaN/Inf samples",
                           f"{non_finite} NaN/Inf samples (limit 0)")]
    if non_finite or data.size == 0:
        reason = NOT_COMPUTED if non_finite else "not computed: no samples"
        skipped = [CheckResult(name, False, None, "-", reason)
                   for name in ("silence", "clipping", "dc_offset", "loudness", "true_peak")]
        return results + skipped + [_duration(data, sample_rate, expected_duration_s, t),
                                    CheckResult("spectral_flatness", False, None, "-", reason)]
    return results + [
        _silence(data, t), _clipping(data, t), _dc_offset(data, t), _loudness(data, sample_rate, t),
        _true_peak(data, sample_rate, t), _duration(data, sample_rate, expected_duration_s, t),
        _flatness(data, t),
    ]


def spectral_flatness(mono: np.ndarray, frame: int = _FLATNESS_FRAME) -> float | None:
    """Mean over non-silent Hann frames of geometric / arithmetic mean of the power spectrum.

    ~0.56 for white noise (a periodogram's flatness), near 0 for tonal music; None when no frame has
    energy. The DC bin is left out so an offset does not masquerade as tonality.
    """
    mono = np.asarray(mono, dtype=np.float64)
    if mono.shape[0] < frame:
        frame = 1 << max(4, int(math.log2(max(mono.shape[0], 1))))
        if mono.shape[0] < frame:
            return None
    count = mono.shape[0] // frame
    frames = mono[: count * frame].reshape(count, frame) * np.hanning(frame)
    power = np.abs(np.fft.rfft(frames, axis=1)[:, 1:]) ** 2
    energetic = power.mean(axis=1) > 1e-20
    if not energetic.any():
        return None
    power = power[energetic] + 1e-30
    flatness = np.exp(np.mean(np.log(power), axis=1)) / np.mean(power, axis=1)
    return float(np.mean(flatness))


# --- individual checks -----------------------------------------------------------------------------


def _db(value: float) -> float:
    return 20.0 * math.log10(value) if value > 0 else -math.inf


def _silence(data: np.ndarray, t: CheckThresholds) -> CheckResult:
    rms_db = _db(float(np.sqrt(np.mean(np.square(data)))))
    return CheckResult("silence", rms_db >= t.silence_dbfs, rms_db, f">= {t.silence_dbfs:.1f} dBFS RMS",
                       f"RMS {rms_db:.1f} dBFS (silent below {t.silence_dbfs:.1f} dBFS)")


def _clipping(data: np.ndarray, t: CheckThresholds) -> CheckResult:
    fraction = float(np.count_nonzero(np.abs(data) >= t.clip_level)) / data.size
    return CheckResult("clipping", fraction <= t.max_clipped_fraction, fraction,
                       f"<= {t.max_clipped_fraction:.3%} of samples at |x| >= {t.clip_level}",
                       f"{fraction:.3%} of samples at |x| >= {t.clip_level} "
                       f"(limit {t.max_clipped_fraction:.3%})")


def _dc_offset(data: np.ndarray, t: CheckThresholds) -> CheckResult:
    offset = float(np.max(np.abs(data.mean(axis=0))))
    return CheckResult("dc_offset", offset <= t.max_dc_offset, offset, f"|mean| <= {t.max_dc_offset}",
                       f"largest channel DC offset {offset:.4f} (limit {t.max_dc_offset})")


def _loudness(data: np.ndarray, sample_rate: int, t: CheckThresholds) -> CheckResult:
    from musicops.audio.measure import integrated_loudness

    # pyloudnorm, independent of post-processing's own meter: the check verifies its claim
    lufs = integrated_loudness(data, sample_rate)
    if t.loudness_range_lufs is None:
        return CheckResult("loudness", True, lufs, "not checked",
                           f"integrated loudness {lufs:.2f} LUFS (no window configured)")
    low, high = t.loudness_range_lufs
    note = "" if math.isfinite(lufs) else " (silent or shorter than one 400 ms block)"
    return CheckResult("loudness", low <= lufs <= high, lufs, f"{low:.1f}..{high:.1f} LUFS",
                       f"integrated loudness {lufs:.2f} LUFS{note} (window {low:.1f}..{high:.1f})")


def _true_peak(data: np.ndarray, sample_rate: int, t: CheckThresholds) -> CheckResult:
    from musicops.audio.measure import true_peak_dbtp

    peak = true_peak_dbtp(data, sample_rate)
    if t.true_peak_ceiling_dbtp is None:
        return CheckResult("true_peak", True, peak, "not checked", f"true peak {peak:.2f} dBTP (no ceiling)")
    ceiling = t.true_peak_ceiling_dbtp
    return CheckResult("true_peak", peak <= ceiling + 1e-6, peak, f"<= {ceiling:.1f} dBTP",
                       f"true peak {peak:.2f} dBTP (ceiling {ceiling:.1f} dBTP)")


def _duration(data: np.ndarray, sample_rate: int, expected: float | None, t: CheckThresholds) -> CheckResult:
    duration = data.shape[0] / float(sample_rate)
    if expected is None:
        return CheckResult("duration", True, duration, "not checked", f"{duration:.3f} s (no expected duration)")
    off = abs(duration - expected) / expected if expected > 0 else math.inf
    return CheckResult("duration", off <= t.duration_tolerance, duration,
                       f"{expected:.3f} s ± {t.duration_tolerance:.0%}",
                       f"{duration:.3f} s, {off:.1%} off the expected {expected:.3f} s "
                       f"(tolerance {t.duration_tolerance:.0%})")


def _flatness(data: np.ndarray, t: CheckThresholds) -> CheckResult:
    flatness = spectral_flatness(data.mean(axis=1))
    limit = t.spectral_flatness_max
    shown = "n/a (no energetic frame)" if flatness is None else f"{flatness:.3f}"
    if limit is None or flatness is None:
        return CheckResult("spectral_flatness", True, flatness, "informational",
                           f"mean spectral flatness {shown} (white noise ~0.56, tonal ~0)")
    return CheckResult("spectral_flatness", flatness <= limit, flatness, f"<= {limit}",
                       f"mean spectral flatness {shown} (limit {limit}; white noise ~0.56)")

"""Hidden references and low-pass anchors for a campaign: the DSP and the stored wav assets.

Why a module of its own: it is the only signal processing in the MOS package (the BS.1534-3 3.5 kHz
low anchor), and it touches the asset store rather than the ratings database. Audio is read and
written through the project's one home for it (`musicops.audio.io`, `musicops.audio.encode`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from musicops.evaluation.mos.models import CampaignAsset

ANCHOR_CUTOFF_HZ = 3500.0  # BS.1534-3 low anchor


def lowpass_anchor(samples: Any, sample_rate: int, cutoff_hz: float = ANCHOR_CUTOFF_HZ) -> Any:
    """Zero-phase 8th-order Butterworth low-pass (BS.1534-3's 3.5 kHz anchor), shape kept."""
    import numpy as np
    from scipy.signal import butter, sosfiltfilt

    data = np.asarray(samples, dtype=np.float64)
    if cutoff_hz >= sample_rate / 2:
        raise ValueError(f"cutoff {cutoff_hz:g} Hz is not below Nyquist ({sample_rate / 2:g} Hz)")
    sos = butter(8, cutoff_hz, btype="low", fs=sample_rate, output="sos")
    if data.shape[0] <= 3 * (2 * len(sos) + 1):
        raise ValueError(f"clip too short for a filtered anchor ({data.shape[0]} frames)")
    return sosfiltfilt(sos, data, axis=0).astype(np.float32)


def anchor_asset(store: Any, source: CampaignAsset, cutoff_hz: float) -> CampaignAsset:
    """A low-pass copy of `source`'s wav, stored in the asset store, as an "anchor" asset."""
    from musicops.audio.encode import encode

    audio = store.read_audio(source.audio_sha256, "wav")
    stored = store.put(encode(lowpass_anchor(audio.samples, audio.sample_rate, cutoff_hz), audio.sample_rate, "wav"),
                       "wav")
    return CampaignAsset(f"anchor_{source.asset_id}"[:128], stored.sha256, None, "anchor", None,
                         source.prompt)


def reference_asset(store: Any, reference: CampaignAsset | str | Path | dict[str, Any]) -> CampaignAsset:
    """A hidden "reference" asset: given as an asset (or its dict), or an audio file stored as wav."""
    if isinstance(reference, CampaignAsset):
        return replace(reference, role="reference", gold_score=None)
    if isinstance(reference, dict):
        return replace(CampaignAsset(**reference), role="reference", gold_score=None)
    from musicops.audio.encode import encode
    from musicops.audio.io import read_audio

    audio = read_audio(Path(reference))
    stored = store.put(encode(audio.samples, audio.sample_rate, "wav"), "wav")
    return CampaignAsset(f"ref_{stored.sha256[:16]}", stored.sha256, None, "reference", None, "")

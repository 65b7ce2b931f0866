"""Metric provenance: what a score was measured with, so incomparable scores are never compared.

An FAD or CLAP score only means something next to another score measured the same way: the same
embedder and weights, sample rate and resampler, windowing, loudness normalisation and (for FAD) the
same reference set. `ensure_comparable` refuses anything else, naming every field that differs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from musicops.errors import MusicopsError


@dataclass(frozen=True)
class MetricProvenance:
    """Everything that changes an embedding-based metric's value besides the audio itself."""

    embedder: str
    weights_sha256: str
    sample_rate: int
    resampler: str
    window_s: float
    hop_s: float
    loudness_normalisation: str  # e.g. "none" or "-23 LUFS pyloudnorm"
    reference_set_sha256: str = ""  # hash of the reference set's file hashes (FAD); "" when not applicable

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MetricProvenance:
        """Strict: an unknown key may be a field a newer version compares on, so it is not dropped."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown MetricProvenance field(s): {', '.join(unknown)}")
        missing = sorted(f.name for f in dataclasses.fields(cls)
                         if f.name not in d and f.default is dataclasses.MISSING)
        if missing:
            raise ValueError(f"MetricProvenance is missing field(s): {', '.join(missing)}")
        values = dict(d)
        values["sample_rate"] = int(values["sample_rate"])
        values["window_s"] = float(values["window_s"])
        values["hop_s"] = float(values["hop_s"])
        return cls(**values)


class ProvenanceMismatchError(MusicopsError, ValueError):
    """Two scores were measured differently; comparing them would mix a method change into the delta."""


def ensure_comparable(a: MetricProvenance, b: MetricProvenance) -> None:
    """Raise `ProvenanceMismatchError` naming every differing field with both values."""
    diffs = [
        f"{f.name}: {getattr(a, f.name)!r} != {getattr(b, f.name)!r}"
        for f in dataclasses.fields(MetricProvenance)
        if getattr(a, f.name) != getattr(b, f.name)
    ]
    if diffs:
        raise ProvenanceMismatchError("scores are not comparable, metric provenance differs: " + "; ".join(diffs))


@dataclass(frozen=True)
class Score:
    """One metric value with the provenance needed to decide whether it can be compared."""

    name: str
    value: float
    provenance: MetricProvenance
    extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "provenance": self.provenance.to_dict(),
                "extra": dict(self.extra)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Score:
        return cls(name=d["name"], value=float(d["value"]),
                   provenance=MetricProvenance.from_dict(d["provenance"]), extra=dict(d.get("extra", {})))


def compare_scores(a: Score, b: Score) -> float:
    """`b.value - a.value`, only for the same metric measured the same way."""
    if a.name != b.name:
        raise ProvenanceMismatchError(f"scores are not comparable: metric {a.name!r} != {b.name!r}")
    ensure_comparable(a.provenance, b.provenance)
    return float(b.value - a.value)

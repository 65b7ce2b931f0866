"""MOS campaign records: the plain values (frozen dataclasses) the service hands out and takes in.

Why a module of its own: the web app, the CLI, the kfp component, the release gate and the
assignment planner all pass these around without needing the database service, so they live apart
from `service` (which stores them) and from `results` (which computes `CampaignResults`). The scale
constants are here too because validation, planning, screening pages and results all read them.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

SCALES: dict[str, tuple[float, float]] = {"acr": (1.0, 5.0), "mushra": (0.0, 100.0)}
ACR_LABELS = {1: "Bad", 2: "Poor", 3: "Fair", 4: "Good", 5: "Excellent"}
ROLES = ("test", "reference", "anchor", "gold")
RATED_ROLES = ("test", "reference", "anchor")  # roles whose ratings make statistics


@dataclass(frozen=True)
class CampaignAsset:
    """One clip in a campaign; `model_version` is e.g. "models:/name/3" (None for references/anchors)."""

    asset_id: str
    audio_sha256: str  # the wav file in the asset store
    model_version: str | None = None
    role: str = "test"  # "test" | "reference" | "anchor" | "gold"
    gold_score: float | None = None  # known answer for gold clips
    prompt: str = ""


@dataclass(frozen=True)
class Invite:
    """A rater and their invitation token: the only place the token ever appears."""

    rater_id: str
    token: str


@dataclass(frozen=True)
class AssignmentItem:
    """One page of a rater's assignment; `kind` "rate" | "gold" | "trap".

    For traps, `prompt` is the instruction to show ("please rate this clip 1") and `trap_expected`
    the instructed answer. For MUSHRA, `reference_sha256` is the open reference to play alongside.
    """

    item_id: str
    position: int
    asset_id: str
    audio_sha256: str
    kind: str
    prompt: str
    trap_expected: float | None
    reference_sha256: str | None = None


@dataclass
class Progress:
    done: int
    total: int
    finished: bool


@dataclass(frozen=True)
class Rater:
    rater_id: str
    campaign_id: str
    consented_at: datetime | None
    screened_out: bool
    screen_reason: str | None
    rater_index: int = 0
    invited_at: datetime | None = None


@dataclass(frozen=True)
class Campaign:
    id: str
    name: str
    method: str
    scale: tuple[float, float]
    quorum: int
    instructions: str
    created_at: datetime
    status: str  # "open" | "closed"
    clips_per_rater: int | None = None
    seed: int = 0
    n_traps: int = 1


@dataclass(frozen=True)
class AssetScore:
    asset_id: str
    role: str
    model_version: str | None
    mos: float
    ci_low: float
    ci_high: float
    n_ratings: int
    n_raters: int


@dataclass(frozen=True)
class ModelScore:
    """Pooled valid ratings of every test clip of one model version."""

    model_version: str
    mos: float
    ci_low: float
    ci_high: float
    n_ratings: int
    n_raters: int
    n_assets: int


@dataclass
class CampaignResults:
    campaign_id: str
    name: str
    method: str
    scale: tuple[float, float]
    quorum: int
    assets: list[AssetScore]
    model_versions: list[ModelScore]
    alpha: float
    alpha_level: str
    n_valid_raters: int
    n_screened: int
    quorum_met: bool
    n_invited: int = 0
    confidence: float = 0.95

    @property
    def below_quorum(self) -> list[AssetScore]:
        """Test assets still short of quorum, fewest valid ratings first."""
        short = [a for a in self.assets if a.role == "test" and a.n_ratings < self.quorum]
        return sorted(short, key=lambda a: a.n_ratings)

    def asset(self, asset_id: str) -> AssetScore:
        for score in self.assets:
            if score.asset_id == asset_id:
                return score
        raise KeyError(asset_id)

    def model(self, model_version: str) -> ModelScore:
        for score in self.model_versions:
            if score.model_version == model_version:
                return score
        raise KeyError(model_version)

    def metrics(self) -> dict[str, float]:
        """Flat, finite metrics (kfp Metrics, dashboards): per model version plus campaign-wide."""
        out: dict[str, float] = {"n_valid_raters": float(self.n_valid_raters),
                                 "n_screened": float(self.n_screened)}
        if math.isfinite(self.alpha):
            out["alpha"] = self.alpha
        for m in self.model_versions:
            label = metric_label(m.model_version)
            for key, value in (("mos", m.mos), ("mos_ci_low", m.ci_low), ("mos_ci_high", m.ci_high),
                               ("n_ratings", float(m.n_ratings))):
                if math.isfinite(value):
                    out[f"{key}_{label}"] = float(value)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (NaN becomes None)."""
        def clean(value: Any) -> Any:
            if isinstance(value, float) and not math.isfinite(value):
                return None
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [clean(v) for v in value]
            return value

        return clean(asdict(self))


@dataclass(frozen=True)
class PlannedItem:
    """One item of an assignment before it is stored (output of `plan_assignment`)."""

    kind: str
    asset: CampaignAsset
    prompt: str
    trap_expected: float | None = None
    reference_asset_id: str | None = None


def metric_label(model_version: str) -> str:
    """"models:/name/3" -> "name_v3"; anything else sanitized to [A-Za-z0-9_.-]."""
    match = re.fullmatch(r"models:/([^/@]+)/(\d+)", model_version)
    text = f"{match[1]}_v{match[2]}" if match else model_version
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)

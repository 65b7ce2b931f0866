"""MOS listening-test campaigns: invitations, per-rater assignments, idempotent ratings, screening, results.

The web app (`evaluation/mos/app.py`), the CLI (`musicops mos`) and the kfp component
(`components/mos.py`) all go through `MosService`; none of them touches the tables directly.

Design choices (and why):
- Methods: ACR 1-5 (ITU-T P.800, the default; whole numbers only, they are categories) and MUSHRA
  0-100 (ITU-R BS.1534-3; needs a hidden reference, low-pass anchors are optional). One clip per
  item in both; for MUSHRA each item also names the open reference the page plays next to it.
- Invitations: one random token per rater (`secrets.token_urlsafe(32)`), returned once; only its
  sha256 is stored, so a leaked database does not leak working links.
- Assignments are created at invite time and stored: test clips are shuffled once with the campaign
  seed and rater k gets the window starting at k * clips_per_rater (wrapping), so coverage stays
  balanced; references, anchors and gold clips go to every rater; traps are added; the rater's own
  seeded RNG ("mos:{seed}:rater:{k}") orders the lot. Same seed, same assignments.
- Ratings: one per (rater, item), first submission wins. The same submission id again is a no-op
  (`False`); any other submission for a rated item is a `Conflict` ("already rated").
- Listening: the web app records every byte range of a clip it sends to the item's rater
  (`record_served`, table `mos_plays`) and submits with `require_listened=True`, so a rating is
  refused (`NotListened`) until the ranges sent cover the whole file: "played to the end" is the
  server's record of what it delivered, not the page's word. Programmatic callers (simulated raters,
  imports of ratings collected elsewhere) submit without it.
- Screening (rules in `qc`) runs after every gold/trap (and MUSHRA reference) answer; screened
  raters keep their ratings, flagged, and are excluded from every statistic.
- Statistics (`stats`): per asset and per model version, mean with a 95 % t-interval over the
  individual valid ratings. Pooled per-model intervals treat ratings as independent although they
  cluster by clip and rater, so they are optimistic; compare versions on the per-asset table too.
  Agreement: Krippendorff's alpha over valid raters x test clips (interval level by default, the
  level that matches averaging scores into a MOS; references/anchors are left out because their
  known extremes would inflate it).
- MLflow: results go on the rated registered versions as model-version tags
  (`MlflowClient.set_model_version_tag`). Version tags are MLflow's convention for annotations made
  after registration (validation status and the like); the version's source run is the training run
  and stays as it was logged, and a later campaign simply overwrites the tags.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import and_, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased, sessionmaker

from musicops.errors import MusicopsError
from musicops.evaluation.mos import qc
from musicops.evaluation.mos.db import (
    CampaignAssetRow,
    CampaignRow,
    ItemRow,
    PlayRow,
    RaterRow,
    RatingRow,
    create_tables,
    make_engine,
)
from musicops.evaluation.mos.stats import krippendorff_alpha, mean_ci

SCALES: dict[str, tuple[float, float]] = {"acr": (1.0, 5.0), "mushra": (0.0, 100.0)}
ACR_LABELS = {1: "Bad", 2: "Poor", 3: "Fair", 4: "Good", 5: "Excellent"}
ROLES = ("test", "reference", "anchor", "gold")
RATED_ROLES = ("test", "reference", "anchor")  # roles whose ratings make statistics
MOS_DATABASE_ENV = "MUSICOPS_MOS_DATABASE_URL"
MOS_URL_ENV = "MUSICOPS_MOS_URL"
DEFAULT_MOS_URL = "http://127.0.0.1:8765"
ANCHOR_CUTOFF_HZ = 3500.0  # BS.1534-3 low anchor
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MAX_TOKEN_LEN = 200
_MAX_SUBMISSION_LEN = 128


# ------------------------------------------------------------------------------------------ errors


class MosError(MusicopsError):
    """Base class of every MOS service error."""


class NotFound(MosError):
    """Unknown campaign or rater."""


class Forbidden(MosError):
    """The rater may not do this (item not in their assignment, campaign closed)."""


class Conflict(MosError):
    """The item is already rated by another submission."""


class NotListened(MosError):
    """The whole clip has not been sent to this rater yet, so it cannot have been played to the end."""


class QuorumTimeout(MosError):
    """The campaign did not reach quorum in time; `results` holds where it stood."""

    def __init__(self, message: str, results: CampaignResults | None = None) -> None:
        super().__init__(message)
        self.results = results


# ------------------------------------------------------------------------------------------ values


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


# ------------------------------------------------------------------------------------------ helpers


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def invite_url(token: str, base: str | None = None) -> str:
    """The link a rater opens: `{MUSICOPS_MOS_URL}/r/{token}` (default http://127.0.0.1:8765)."""
    base = (base or os.environ.get(MOS_URL_ENV) or DEFAULT_MOS_URL).rstrip("/")
    return f"{base}/r/{token}"


def metric_label(model_version: str) -> str:
    """"models:/name/3" -> "name_v3"; anything else sanitized to [A-Za-z0-9_.-]."""
    match = re.fullmatch(r"models:/([^/@]+)/(\d+)", model_version)
    text = f"{match[1]}_v{match[2]}" if match else model_version
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def raters_for_quorum(n_test: int, quorum: int, clips_per_rater: int | None) -> int:
    """Raters needed for every test clip to reach quorum if nobody is screened out."""
    if not clips_per_rater or clips_per_rater >= n_test:
        return quorum
    return math.ceil(quorum * n_test / clips_per_rater)


def _trap_instruction(method: str, expected: float) -> str:
    if method == "acr":
        return (f"Attention check: whatever you hear, please rate this clip {expected:g} "
                f"({ACR_LABELS[int(expected)]}).")
    return f"Attention check: whatever you hear, please set the score for this clip to {expected:g}."


def plan_assignment(assets: Sequence[CampaignAsset], *, method: str, seed: int, rater_index: int,
                    clips_per_rater: int | None, n_traps: int) -> list[PlannedItem]:
    """The rater's items in order; a pure function of (assets, settings, seed, rater index)."""
    tests = [a for a in assets if a.role == "test"]
    fixed = [a for a in assets if a.role in ("reference", "anchor")]
    gold = [a for a in assets if a.role == "gold"]
    if clips_per_rater is None or clips_per_rater >= len(tests):
        chosen = list(tests)
    else:
        order = list(range(len(tests)))
        random.Random(f"mos:{seed}:campaign").shuffle(order)
        start = rater_index * clips_per_rater
        chosen = [tests[order[(start + i) % len(tests)]] for i in range(clips_per_rater)]
    rng = random.Random(f"mos:{seed}:rater:{rater_index}")
    items = [PlannedItem("rate", a, a.prompt) for a in chosen + fixed]
    items += [PlannedItem("gold", a, a.prompt) for a in gold]
    trap_values = [1.0, 2.0, 3.0, 4.0, 5.0] if method == "acr" else [0.0, 100.0]
    for _ in range(n_traps):
        clip = rng.choice(tests)
        expected = rng.choice(trap_values)
        items.append(PlannedItem("trap", clip, _trap_instruction(method, expected), expected))
    rng.shuffle(items)
    references = [a for a in assets if a.role == "reference"]
    if method == "mushra" and references:
        by_prompt = {a.prompt: a.asset_id for a in reversed(references) if a.prompt}
        items = [replace(item, reference_asset_id=by_prompt.get(item.asset.prompt, references[0].asset_id))
                 for item in items]
    return items


def _validate_assets(assets: Sequence[CampaignAsset], method: str) -> None:
    low, high = SCALES[method]
    if not assets:
        raise ValueError("a campaign needs assets")
    seen: set[str] = set()
    for asset in assets:
        if not isinstance(asset, CampaignAsset):
            raise ValueError(f"expected CampaignAsset, got {type(asset).__name__}")
        if not asset.asset_id or len(asset.asset_id) > 128:
            raise ValueError(f"asset id must be 1-128 characters: {asset.asset_id!r}")
        if asset.asset_id in seen:
            raise ValueError(f"duplicate asset id {asset.asset_id!r}")
        seen.add(asset.asset_id)
        if not isinstance(asset.audio_sha256, str) or not _SHA256.fullmatch(asset.audio_sha256):
            raise ValueError(f"asset {asset.asset_id}: audio_sha256 must be 64 lowercase hex")
        if asset.role not in ROLES:
            raise ValueError(f"asset {asset.asset_id}: role must be one of {ROLES}, got {asset.role!r}")
        if asset.role == "gold":
            if asset.gold_score is None:
                raise ValueError(f"gold asset {asset.asset_id} needs a gold_score")
            if not low <= float(asset.gold_score) <= high:
                raise ValueError(f"gold asset {asset.asset_id}: gold_score {asset.gold_score} "
                                 f"outside {low:g}-{high:g}")
        elif asset.gold_score is not None:
            raise ValueError(f"asset {asset.asset_id}: gold_score is only for role 'gold'")
    if not any(a.role == "test" for a in assets):
        raise ValueError("a campaign needs at least one test asset")
    if method == "mushra" and not any(a.role == "reference" for a in assets):
        raise ValueError("a MUSHRA campaign needs a hidden reference (an asset with role 'reference')")


def _now() -> datetime:
    return datetime.now(UTC)


def _campaign(row: CampaignRow) -> Campaign:
    return Campaign(row.campaign_id, row.name, row.method, (row.scale_min, row.scale_max), row.quorum,
                    row.instructions, row.created_at, row.status, row.clips_per_rater, row.seed, row.n_traps)


def _rater(row: RaterRow) -> Rater:
    return Rater(row.rater_id, row.campaign_id, row.consented_at, bool(row.screened_out), row.screen_reason,
                 row.rater_index, row.invited_at)


def _asset(row: CampaignAssetRow) -> CampaignAsset:
    return CampaignAsset(row.asset_id, row.audio_sha256, row.model_version, row.role, row.gold_score,
                         row.prompt)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# ------------------------------------------------------------------------------------------ service


class MosService:
    """Campaigns, raters and ratings behind a SQLAlchemy URL; safe to share between threads."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        create_tables(self.engine)

    @classmethod
    def from_settings(cls, settings: Any = None) -> MosService:
        """`MUSICOPS_MOS_DATABASE_URL`, else `sqlite:///{home}/mos.db`."""
        if settings is None:
            from musicops.config import get_settings

            settings = get_settings()
        return cls(os.environ.get(MOS_DATABASE_ENV) or f"sqlite:///{Path(settings.home) / 'mos.db'}")

    def __repr__(self) -> str:
        from sqlalchemy.engine import make_url

        return f"MosService({make_url(self.url).render_as_string(hide_password=True)!r})"

    def __enter__(self) -> MosService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.engine.dispose()

    # campaigns

    def create_campaign(self, name: str, assets: list[CampaignAsset], method: str = "acr",
                        clips_per_rater: int | None = None, quorum: int = 3, seed: int = 0, n_traps: int = 1,
                        instructions: str = "") -> str:
        """Validate and store a campaign; returns its id (raters come from `invite`)."""
        method = (method or "").lower()
        if method not in SCALES:
            raise ValueError(f"method must be one of {sorted(SCALES)}, got {method!r}")
        if not name or not name.strip():
            raise ValueError("a campaign needs a name")
        if quorum < 1:
            raise ValueError(f"quorum must be >= 1, got {quorum}")
        if clips_per_rater is not None and clips_per_rater < 1:
            raise ValueError(f"clips_per_rater must be >= 1 (or None for all), got {clips_per_rater}")
        if n_traps < 0:
            raise ValueError(f"n_traps must be >= 0, got {n_traps}")
        assets = list(assets)
        _validate_assets(assets, method)
        low, high = SCALES[method]
        campaign_id = "c_" + secrets.token_hex(8)
        with self._sessions.begin() as session:
            session.add(CampaignRow(campaign_id=campaign_id, name=name.strip(), method=method, scale_min=low,
                                    scale_max=high, quorum=int(quorum), clips_per_rater=clips_per_rater,
                                    seed=int(seed), n_traps=int(n_traps), instructions=instructions,
                                    status="open", created_at=_now()))
            session.flush()
            session.add_all(CampaignAssetRow(campaign_id=campaign_id, asset_id=a.asset_id, position=i,
                                             audio_sha256=a.audio_sha256, model_version=a.model_version,
                                             role=a.role, prompt=a.prompt or "",
                                             gold_score=None if a.gold_score is None else float(a.gold_score))
                            for i, a in enumerate(assets))
        return campaign_id

    def campaign(self, campaign_id: str) -> Campaign:
        with self._sessions() as session:
            return _campaign(self._campaign_row(session, campaign_id))

    def list_campaigns(self) -> list[Campaign]:
        with self._sessions() as session:
            query = select(CampaignRow).order_by(CampaignRow.created_at, CampaignRow.campaign_id)
            rows = session.scalars(query)
            return [_campaign(row) for row in rows]

    def campaign_assets(self, campaign_id: str) -> list[CampaignAsset]:
        with self._sessions() as session:
            self._campaign_row(session, campaign_id)
            return [_asset(row) for row in self._asset_rows(session, campaign_id)]

    def close_campaign(self, campaign_id: str) -> None:
        """Stop accepting ratings and invitations (results stay available)."""
        with self._sessions.begin() as session:
            self._campaign_row(session, campaign_id).status = "closed"

    # raters

    def invite(self, campaign_id: str, n: int) -> list[Invite]:
        """Create `n` raters with their assignments; the tokens are returned here and never again."""
        if n < 1:
            raise ValueError(f"invite at least one rater, got {n}")
        with self._sessions() as session:
            campaign = self._campaign_row(session, campaign_id)
            assets = [_asset(row) for row in self._asset_rows(session, campaign_id)]
        if campaign.status != "open":
            raise Forbidden(f"campaign {campaign_id} is closed")
        return [self._invite_one(campaign, assets) for _ in range(n)]

    def _invite_one(self, campaign: CampaignRow, assets: list[CampaignAsset]) -> Invite:
        for _attempt in range(50):
            token = secrets.token_urlsafe(32)
            rater_id = "r_" + secrets.token_hex(8)
            try:
                with self._sessions.begin() as session:
                    index = session.scalar(select(func.max(RaterRow.rater_index))
                                           .where(RaterRow.campaign_id == campaign.campaign_id))
                    index = 0 if index is None else index + 1
                    session.add(RaterRow(rater_id=rater_id, campaign_id=campaign.campaign_id,
                                         rater_index=index, token_hash=hash_token(token), invited_at=_now(),
                                         screened_out=False))
                    session.flush()
                    planned = plan_assignment(assets, method=campaign.method, seed=campaign.seed,
                                              rater_index=index, clips_per_rater=campaign.clips_per_rater,
                                              n_traps=campaign.n_traps)
                    session.add_all(ItemRow(item_id="i_" + secrets.token_hex(8), rater_id=rater_id,
                                            campaign_id=campaign.campaign_id, position=position,
                                            asset_id=item.asset.asset_id, kind=item.kind, prompt=item.prompt,
                                            trap_expected=item.trap_expected,
                                            reference_asset_id=item.reference_asset_id)
                                    for position, item in enumerate(planned))
                return Invite(rater_id, token)
            except IntegrityError:
                continue  # a concurrent invite took this rater index: take the next one
        raise MosError(f"campaign {campaign.campaign_id}: could not allocate a rater index")

    def rater_for_token(self, token: str) -> Rater | None:
        """The rater an invitation token belongs to (constant work per lookup: by hash), or None."""
        if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN_LEN:
            return None
        with self._sessions() as session:
            row = session.scalar(select(RaterRow).where(RaterRow.token_hash == hash_token(token)))
            return _rater(row) if row is not None else None

    def rater(self, rater_id: str) -> Rater:
        with self._sessions() as session:
            return _rater(self._rater_row(session, rater_id))

    def list_raters(self, campaign_id: str) -> list[Rater]:
        with self._sessions() as session:
            self._campaign_row(session, campaign_id)
            rows = session.scalars(select(RaterRow).where(RaterRow.campaign_id == campaign_id)
                                   .order_by(RaterRow.rater_index))
            return [_rater(row) for row in rows]

    def record_consent(self, rater_id: str) -> None:
        """Record consent; the first time is kept (a second consent is a no-op)."""
        with self._sessions.begin() as session:
            row = self._rater_row(session, rater_id)
            if row.consented_at is None:
                row.consented_at = _now()

    # assignments

    def assignment(self, rater_id: str) -> list[AssignmentItem]:
        with self._sessions() as session:
            self._rater_row(session, rater_id)
            return self._items(session, rater_id)

    def next_item(self, rater_id: str) -> AssignmentItem | None:
        """The first unrated item in the rater's order: where a returning rater resumes."""
        with self._sessions() as session:
            self._rater_row(session, rater_id)
            items = self._items(session, rater_id, unrated_only=True, limit=1)
            return items[0] if items else None

    def progress(self, rater_id: str) -> Progress:
        with self._sessions() as session:
            self._rater_row(session, rater_id)
            total = session.scalar(select(func.count()).select_from(ItemRow)
                                   .where(ItemRow.rater_id == rater_id)) or 0
            done = session.scalar(select(func.count()).select_from(RatingRow)
                                  .where(RatingRow.rater_id == rater_id)) or 0
        return Progress(int(done), int(total), total > 0 and done >= total)

    def assigned_item(self, rater_id: str, item_id: str) -> AssignmentItem | None:
        """One item of the rater's assignment (None when it is not theirs): what the audio route needs,
        without loading the whole assignment for every clip fetched."""
        with self._sessions() as session:
            found = self._items(session, rater_id, item_id=item_id)
            return found[0] if found else None

    def _items(self, session: Session, rater_id: str, unrated_only: bool = False,
               limit: int | None = None, item_id: str | None = None) -> list[AssignmentItem]:
        reference = aliased(CampaignAssetRow)
        query = (
            select(ItemRow, CampaignAssetRow.audio_sha256, reference.audio_sha256)
            .join(CampaignAssetRow, and_(CampaignAssetRow.campaign_id == ItemRow.campaign_id,
                                         CampaignAssetRow.asset_id == ItemRow.asset_id))
            .outerjoin(reference, and_(reference.campaign_id == ItemRow.campaign_id,
                                       reference.asset_id == ItemRow.reference_asset_id))
            .where(ItemRow.rater_id == rater_id)
            .order_by(ItemRow.position)
        )
        if item_id is not None:
            query = query.where(ItemRow.item_id == item_id)
        if unrated_only:
            query = (query.outerjoin(RatingRow, RatingRow.item_id == ItemRow.item_id)
                     .where(RatingRow.item_id.is_(None)))
        if limit is not None:
            query = query.limit(limit)
        return [AssignmentItem(item.item_id, item.position, item.asset_id, sha, item.kind, item.prompt,
                               item.trap_expected, ref_sha)
                for item, sha, ref_sha in session.execute(query)]

    # listening

    def record_served(self, item_id: str, start: int, end: int, size: int) -> None:
        """Record that bytes [start, end) of the item's clip (a file of `size` bytes) were sent to its
        rater. The caller has checked the item is in that rater's assignment."""
        if not 0 <= start <= end <= size:
            raise ValueError(f"bad byte range [{start}, {end}) of a {size}-byte file")
        if end > start:
            with self._sessions.begin() as session:
                session.add(PlayRow(item_id=item_id, start=int(start), end=int(end), size=int(size),
                                    served_at=_now()))

    def listened(self, item_id: str) -> bool:
        """Whether the ranges sent for this item cover the whole file (every byte, in any order)."""
        with self._sessions() as session:
            return self._covered(session, item_id)

    @staticmethod
    def _covered(session: Session, item_id: str) -> bool:
        ranges = session.execute(select(PlayRow.start, PlayRow.end, PlayRow.size)
                                 .where(PlayRow.item_id == item_id).order_by(PlayRow.start)).all()
        if not ranges:
            return False
        size = max(r.size for r in ranges)  # a file is content-addressed: its size does not change
        reached = 0
        for start, end, _size in ranges:
            if start > reached:
                return False  # a gap: those bytes were never sent
            reached = max(reached, end)
        return reached >= size

    # ratings

    def submit_rating(self, rater_id: str, item_id: str, score: float, submission_id: str,
                      require_listened: bool = False) -> bool:
        """Store one rating: True if stored now, False if this exact submission was already stored.

        Raises NotFound (unknown rater), Forbidden (item not in this rater's assignment, or campaign
        closed), ValueError (score outside the scale, ACR not a whole number, bad submission id),
        Conflict (item already rated by another submission), NotListened (`require_listened` and the
        whole clip was not sent to this rater). Screens the rater after check items.
        """
        if not isinstance(submission_id, str) or not 0 < len(submission_id) <= _MAX_SUBMISSION_LEN:
            raise ValueError(f"submission_id must be a non-empty string of at most {_MAX_SUBMISSION_LEN} "
                             "characters")
        with self._sessions() as session:  # one query on the hot path: item, campaign, role, prior rating
            found = session.execute(
                select(ItemRow, CampaignRow, CampaignAssetRow.role, RatingRow)
                .join(CampaignRow, CampaignRow.campaign_id == ItemRow.campaign_id)
                .join(CampaignAssetRow, and_(CampaignAssetRow.campaign_id == ItemRow.campaign_id,
                                             CampaignAssetRow.asset_id == ItemRow.asset_id))
                .outerjoin(RatingRow, RatingRow.item_id == ItemRow.item_id)
                .where(ItemRow.item_id == item_id)
            ).first()
            if found is None or found[0].rater_id != rater_id:
                self._rater_row(session, rater_id)  # an unknown rater is NotFound, not Forbidden
                raise Forbidden(f"item {item_id!r} is not in this rater's assignment")
        item, campaign, role, existing = found
        value = self._check_score(score, campaign)
        if campaign.status != "open":
            raise Forbidden(f"campaign {campaign.campaign_id} is closed")
        if existing is not None:
            return self._repeat(existing, value, submission_id)
        if require_listened and not self.listened(item_id):
            raise NotListened(f"item {item_id}: the whole clip has not been sent to this rater")
        try:
            with self._sessions.begin() as session:
                session.add(RatingRow(item_id=item_id, rater_id=rater_id, campaign_id=item.campaign_id,
                                      score=value, submission_id=submission_id, created_at=_now()))
        except IntegrityError:
            with self._sessions() as session:
                existing = session.get(RatingRow, item_id)
            if existing is None:
                raise
            return self._repeat(existing, value, submission_id)
        if item.kind in ("gold", "trap") or (campaign.method == "mushra" and role == "reference"):
            self._screen_rater(rater_id)
        return True

    @staticmethod
    def _check_score(score: Any, campaign: CampaignRow) -> float:
        try:
            value = float(score)
        except (TypeError, ValueError):
            raise ValueError(f"score must be a number, got {score!r}") from None
        if not math.isfinite(value) or not campaign.scale_min <= value <= campaign.scale_max:
            raise ValueError(f"score {score!r} outside the {campaign.method.upper()} scale "
                             f"{campaign.scale_min:g}-{campaign.scale_max:g}")
        if campaign.method == "acr" and value != int(value):
            raise ValueError(f"ACR scores are whole numbers 1-5, got {score!r}")
        return value

    @staticmethod
    def _repeat(existing: RatingRow, value: float, submission_id: str) -> bool:
        if existing.submission_id == submission_id and existing.score == value:
            return False
        raise Conflict(f"item {existing.item_id} is already rated")

    # screening

    def _screen_rater(self, rater_id: str) -> str | None:
        """Apply the `qc` rules to one rater; persists a failure. Returns the reason or None."""
        with self._sessions() as session:
            rater = self._rater_row(session, rater_id)
            if rater.screened_out:
                return rater.screen_reason
            method = session.scalar(select(CampaignRow.method)
                                    .where(CampaignRow.campaign_id == rater.campaign_id))
            rows = session.execute(
                select(ItemRow.item_id, ItemRow.kind, ItemRow.trap_expected, CampaignAssetRow.role,
                       CampaignAssetRow.gold_score, RatingRow.score)
                .join(CampaignAssetRow, and_(CampaignAssetRow.campaign_id == ItemRow.campaign_id,
                                             CampaignAssetRow.asset_id == ItemRow.asset_id))
                .outerjoin(RatingRow, RatingRow.item_id == ItemRow.item_id)
                .where(ItemRow.rater_id == rater_id)
                .order_by(ItemRow.position)
            ).all()
        answers = []
        for item_id, kind, trap_expected, role, gold_score, score in rows:
            if kind == "trap":
                answers.append(qc.CheckAnswer(item_id, "trap", trap_expected, score))
            elif kind == "gold":
                answers.append(qc.CheckAnswer(item_id, "gold", gold_score, score))
            elif role == "reference":
                answers.append(qc.CheckAnswer(item_id, "reference", None, score))
        reason = qc.screening_reason(answers, method)
        if reason:
            with self._sessions.begin() as session:
                session.execute(update(RaterRow)
                                .where(RaterRow.rater_id == rater_id, RaterRow.screened_out.is_(False))
                                .values(screened_out=True, screen_reason=reason, screened_at=_now()))
        return reason

    def screen(self, campaign_id: str) -> list[tuple[str, str]]:
        """Apply screening to every rater; returns all screened raters (rater_id, reason), by rater index."""
        for rater in self.list_raters(campaign_id):
            if not rater.screened_out:
                self._screen_rater(rater.rater_id)
        return [(r.rater_id, r.screen_reason or "") for r in self.list_raters(campaign_id) if r.screened_out]

    # results

    def results(self, campaign_id: str, alpha_level: str = "interval",
                confidence: float = 0.95) -> CampaignResults:
        """MOS with t-intervals per asset and per model version over valid (unscreened) raters' ratings."""
        with self._sessions() as session:
            campaign = self._campaign_row(session, campaign_id)
            assets = [_asset(row) for row in self._asset_rows(session, campaign_id)]
            raters = {r.rater_id: r.screened_out for r in
                      session.scalars(select(RaterRow).where(RaterRow.campaign_id == campaign_id))}
            ratings = session.execute(
                select(ItemRow.rater_id, ItemRow.asset_id, RatingRow.score)
                .join(RatingRow, RatingRow.item_id == ItemRow.item_id)
                .where(ItemRow.campaign_id == campaign_id, ItemRow.kind == "rate")
            ).all()
        valid = [(rater, asset, score) for rater, asset, score in ratings if not raters.get(rater, True)]
        by_asset: dict[str, list[tuple[str, float]]] = {}
        for rater, asset, score in valid:
            by_asset.setdefault(asset, []).append((rater, score))

        asset_scores = []
        for asset in assets:
            if asset.role not in RATED_ROLES:
                continue
            pairs = by_asset.get(asset.asset_id, [])
            mos, low, high = mean_ci([s for _, s in pairs], confidence)
            asset_scores.append(AssetScore(asset.asset_id, asset.role, asset.model_version, mos, low, high,
                                           len(pairs), len({r for r, _ in pairs})))

        model_scores = []
        versions = list(dict.fromkeys(a.model_version for a in assets
                                      if a.role == "test" and a.model_version))
        for version in versions:
            ids = [a.asset_id for a in assets if a.role == "test" and a.model_version == version]
            pairs = [p for asset_id in ids for p in by_asset.get(asset_id, [])]
            mos, low, high = mean_ci([s for _, s in pairs], confidence)
            model_scores.append(ModelScore(version, mos, low, high, len(pairs), len({r for r, _ in pairs}),
                                           len(ids)))

        test_ids = [a.asset_id for a in assets if a.role == "test"]
        valid_raters = sorted({r for r, _, _ in valid})
        column = {asset_id: j for j, asset_id in enumerate(test_ids)}
        row = {rater: i for i, rater in enumerate(valid_raters)}
        matrix = [[math.nan] * len(test_ids) for _ in valid_raters]
        for rater, asset, score in valid:
            if asset in column:
                matrix[row[rater]][column[asset]] = score
        alpha = krippendorff_alpha(matrix, alpha_level) if valid_raters else math.nan

        quorum_met = all(len(by_asset.get(asset_id, [])) >= campaign.quorum for asset_id in test_ids)
        return CampaignResults(
            campaign_id=campaign_id, name=campaign.name, method=campaign.method,
            scale=(campaign.scale_min, campaign.scale_max), quorum=campaign.quorum, assets=asset_scores,
            model_versions=model_scores, alpha=alpha, alpha_level=alpha_level,
            n_valid_raters=len(valid_raters),
            n_screened=sum(1 for screened in raters.values() if screened), quorum_met=quorum_met,
            n_invited=len(raters), confidence=confidence,
        )

    def quorum_met(self, campaign_id: str) -> bool:
        return self.results(campaign_id).quorum_met

    def wait_for_quorum(self, campaign_id: str, timeout_s: float, poll_s: float = 5.0) -> CampaignResults:
        """Poll until every test asset has `quorum` valid ratings; QuorumTimeout says which fall short."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            results = self.results(campaign_id)
            if results.quorum_met:
                return results
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                short = results.below_quorum
                n_test = sum(1 for a in results.assets if a.role == "test")
                lowest = short[0]
                raise QuorumTimeout(
                    f"campaign {campaign_id}: {len(short)} of {n_test} assets below quorum {results.quorum} "
                    f"after {timeout_s:g} s (lowest: {lowest.asset_id} with "
                    f"{_plural(lowest.n_ratings, 'valid rating')})", results)
            time.sleep(max(0.0, min(poll_s, remaining)))

    # export and MLflow

    def export(self, campaign_id: str, path: Path) -> Path:
        """One row per rating (every kind, screened raters flagged) as .csv or .parquet, by suffix."""
        import pandas as pd

        from musicops.store.files import atomic_path

        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".csv", ".parquet"):
            raise ValueError(f"export to .csv or .parquet, got {path.name!r}")
        with self._sessions() as session:
            campaign = self._campaign_row(session, campaign_id)
            rows = session.execute(
                select(RatingRow, ItemRow, RaterRow, CampaignAssetRow)
                .join(ItemRow, ItemRow.item_id == RatingRow.item_id)
                .join(RaterRow, RaterRow.rater_id == ItemRow.rater_id)
                .join(CampaignAssetRow, and_(CampaignAssetRow.campaign_id == ItemRow.campaign_id,
                                             CampaignAssetRow.asset_id == ItemRow.asset_id))
                .where(ItemRow.campaign_id == campaign_id)
                .order_by(RaterRow.rater_index, ItemRow.position)
            ).all()
        expected = {"trap": lambda item, asset: item.trap_expected,
                    "gold": lambda item, asset: asset.gold_score}
        records = [{
            "campaign_id": campaign_id, "method": campaign.method, "rater_id": rater.rater_id,
            "rater_index": rater.rater_index, "item_id": item.item_id, "position": item.position,
            "kind": item.kind, "asset_id": asset.asset_id, "role": asset.role,
            "audio_sha256": asset.audio_sha256, "model_version": asset.model_version, "score": rating.score,
            "expected": expected[item.kind](item, asset) if item.kind in expected else None,
            "submission_id": rating.submission_id, "screened_out": bool(rater.screened_out),
            "screen_reason": rater.screen_reason, "rated_at": rating.created_at,
            "invited_at": rater.invited_at, "consented_at": rater.consented_at,
        } for rating, item, rater, asset in rows]
        columns = ["campaign_id", "method", "rater_id", "rater_index", "item_id", "position", "kind",
                   "asset_id", "role", "audio_sha256", "model_version", "score", "expected", "submission_id",
                   "screened_out", "screen_reason", "rated_at", "invited_at", "consented_at"]
        frame = pd.DataFrame.from_records(records, columns=columns)
        for name in ("rated_at", "invited_at", "consented_at"):
            frame[name] = pd.to_datetime(frame[name], utc=True)
        frame["score"] = frame["score"].astype(float)
        frame["expected"] = frame["expected"].astype(float)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            if suffix == ".csv":
                frame.to_csv(tmp, index=False)
            else:
                frame.to_parquet(tmp, index=False)
        return path

    def log_to_mlflow(self, campaign_id: str, settings: Any = None) -> list[str]:
        """Tag each rated registered version with its MOS (model-version tags); returns the versions tagged.

        Model versions that are not registry URIs (presets, directories) are skipped; an unknown
        registry version fails before anything is tagged.
        """
        from mlflow import MlflowClient

        from musicops.registry import configure_mlflow, parse_model_uri, resolve_version

        configure_mlflow(settings)
        client = MlflowClient()
        results = self.results(campaign_id)
        planned = []
        for score in results.model_versions:
            try:
                ref = parse_model_uri(score.model_version)
            except ValueError:
                continue
            planned.append((resolve_version(ref, client), score))

        def fmt(value: float) -> str:
            return f"{value:.4f}" if math.isfinite(value) else "nan"

        tagged = []
        for version, score in planned:
            tags = {"mos": fmt(score.mos), "mos_ci_low": fmt(score.ci_low), "mos_ci_high": fmt(score.ci_high),
                    "n_ratings": str(score.n_ratings), "campaign": campaign_id,
                    "mos_campaign_name": results.name,
                    "mos_method": results.method, "mos_n_raters": str(score.n_raters),
                    "mos_confidence": f"{results.confidence:g}", "mos_alpha": fmt(results.alpha),
                    "mos_quorum_met": str(results.quorum_met).lower()}
            for key, value in tags.items():
                client.set_model_version_tag(version.name, version.version, key, value)
            tagged.append(f"models:/{version.name}/{version.version}")
        return tagged

    # lookups

    @staticmethod
    def _campaign_row(session: Session, campaign_id: str) -> CampaignRow:
        row = session.get(CampaignRow, campaign_id) if isinstance(campaign_id, str) else None
        if row is None:
            raise NotFound(f"no campaign {campaign_id!r}")
        return row

    @staticmethod
    def _rater_row(session: Session, rater_id: str) -> RaterRow:
        row = session.get(RaterRow, rater_id) if isinstance(rater_id, str) else None
        if row is None:
            raise NotFound(f"no rater {rater_id!r}")
        return row

    @staticmethod
    def _asset_rows(session: Session, campaign_id: str) -> list[CampaignAssetRow]:
        query = (select(CampaignAssetRow).where(CampaignAssetRow.campaign_id == campaign_id)
                 .order_by(CampaignAssetRow.position))
        return list(session.scalars(query))


# ------------------------------------------------------------------------------- building campaigns


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


def _wav_sha256(store: Any, files: dict[str, dict[str, Any]]) -> str:
    """The asset's wav in the store, transcoding (once; content-addressed) when only flac/ogg was kept."""
    if "wav" in files:
        return files["wav"]["sha256"]
    from musicops.audio.encode import encode

    for fmt in ("flac", "ogg"):
        if fmt in files:
            audio = store.read_audio(files[fmt]["sha256"], fmt)  # hash-checked and decoded with checks
            return store.put(encode(audio.samples, audio.sample_rate, "wav"), "wav").sha256
    raise ValueError(f"asset has no wav, flac or ogg file: {sorted(files)}")


def _anchor_asset(store: Any, source: CampaignAsset, cutoff_hz: float) -> CampaignAsset:
    from musicops.audio.encode import encode

    audio = store.read_audio(source.audio_sha256, "wav")
    stored = store.put(encode(lowpass_anchor(audio.samples, audio.sample_rate, cutoff_hz), audio.sample_rate, "wav"),
                       "wav")
    return CampaignAsset(f"anchor_{source.asset_id}"[:128], stored.sha256, None, "anchor", None,
                         source.prompt)


def _reference_asset(store: Any, reference: CampaignAsset | str | Path | dict[str, Any]) -> CampaignAsset:
    if isinstance(reference, CampaignAsset):
        return replace(reference, role="reference", gold_score=None)
    if isinstance(reference, dict):
        return replace(CampaignAsset(**reference), role="reference", gold_score=None)
    from musicops.audio.encode import encode
    from musicops.audio.io import read_audio

    audio = read_audio(Path(reference))
    stored = store.put(encode(audio.samples, audio.sample_rate, "wav"), "wav")
    return CampaignAsset(f"ref_{stored.sha256[:16]}", stored.sha256, None, "reference", None, "")


def campaign_assets_from_batch(batch_id: str, settings: Any = None,
                               references: Sequence[CampaignAsset | str | Path | dict[str, Any]] = (),
                               anchors: int = 0, include_failed: bool = False,
                               cutoff_hz: float = ANCHOR_CUTOFF_HZ) -> list[CampaignAsset]:
    """Test assets from a batch's provenance rows, plus hidden references and low-pass anchors.

    `references`: CampaignAssets, or audio files (stored into the asset store as wav). `anchors`:
    how many 3.5 kHz low-pass copies to add, made from the references when there are any (the
    BS.1534 anchor is the filtered reference), else from the first test assets. Assets that failed
    their quality checks were never delivered, so they are left out unless `include_failed`.
    """
    from musicops.config import get_settings
    from musicops.store.assets import open_asset_store
    from musicops.store.provenance import ProvenanceDB

    settings = settings or get_settings()
    db = ProvenanceDB.from_settings(settings)
    try:
        records = db.list_assets(batch_id)
    finally:
        db.close()
    if not records:
        raise NotFound(f"batch {batch_id!r} has no assets in the provenance database")
    store = open_asset_store(settings)
    tests = [CampaignAsset(r.asset_id, _wav_sha256(store, r.files), r.model_uri, "test", None, r.prompt)
             for r in records if r.passed or include_failed]
    if not tests:
        raise ValueError(f"batch {batch_id!r}: no asset passed its checks")
    refs = [_reference_asset(store, ref) for ref in references]
    sources = refs or tests
    extra = [_anchor_asset(store, sources[i % len(sources)], cutoff_hz) for i in range(max(0, anchors))]
    unique = {a.asset_id: a for a in [*tests, *refs, *extra]}  # repeated sources give one anchor
    return list(unique.values())


def campaign_assets_from_spec(spec: str, settings: Any = None) -> list[CampaignAsset]:
    """Assets from a JSON spec: a list of CampaignAsset dicts, {"assets": [...]}, {"batch_id": ...,
    "references": [...], "anchors": n}, or a bare batch id (the batch pipeline's summary output)."""
    text = (spec or "").strip()
    if not text:
        raise ValueError("empty assets spec")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = text
    if isinstance(data, str):
        return campaign_assets_from_batch(data, settings)
    if isinstance(data, dict):
        if "assets" in data:
            data = data["assets"]
        elif "batch_id" in data:
            return campaign_assets_from_batch(data["batch_id"], settings,
                                              references=data.get("references", ()),
                                              anchors=int(data.get("anchors", 0)),
                                              include_failed=bool(data.get("include_failed", False)))
        else:
            raise ValueError("assets spec object needs 'assets' or 'batch_id'")
    if not isinstance(data, list):
        raise ValueError(f"assets spec must be a list, an object or a batch id, got {type(data).__name__}")
    try:
        return [CampaignAsset(**item) for item in data]
    except TypeError as exc:
        raise ValueError(f"bad asset in spec: {exc}") from None


@dataclass
class CampaignRun:
    campaign_id: str
    invites: list[Invite]
    results: CampaignResults | None = None
    urls: list[str] = field(default_factory=list)


def run_campaign(service: MosService, assets: list[CampaignAsset], name: str, method: str = "acr",
                 quorum: int = 3, timeout_s: float = 3600.0, poll_s: float = 5.0, n_raters: int = 0,
                 clips_per_rater: int | None = None, seed: int = 0, n_traps: int = 1, instructions: str = "",
                 announce: Callable[[str], None] = print) -> CampaignRun:
    """Create, invite (announcing each link), wait for quorum: what the pipeline step does.

    `n_raters` 0 invites just enough for quorum if nobody is screened out. Raises QuorumTimeout.
    """
    campaign_id = service.create_campaign(name, assets, method=method, clips_per_rater=clips_per_rater,
                                          quorum=quorum, seed=seed, n_traps=n_traps,
                                          instructions=instructions)
    n_test = sum(1 for a in assets if a.role == "test")
    invites = service.invite(campaign_id, n_raters or raters_for_quorum(n_test, quorum, clips_per_rater))
    run = CampaignRun(campaign_id, invites, urls=[invite_url(i.token) for i in invites])
    announce(f"MOS campaign {campaign_id} ({name}, {method}): {len(invites)} invitation(s), quorum {quorum}")
    for invite, url in zip(invites, run.urls, strict=True):
        announce(f"  {invite.rater_id}: {url}")
    run.results = service.wait_for_quorum(campaign_id, timeout_s, poll_s)
    return run

"""MOS listening-test campaigns in the database: invitations, per-rater assignments, idempotent ratings,
screening, and the reads behind results and export.

The web app (`musicops.evaluation.mos.app`), the CLI (`musicops mos`) and the kfp component
(`components/mos.py`) all go through `MosService`; none of them touches the tables directly. The
rest of the package holds what needs no database session: `models` (the records handed out),
`errors`, `assignment` (who rates what), `invites` (tokens and links), `results` (statistics),
`export` (the ratings file), `mlflow_tags`, `anchors` and `sources` (building asset lists) and
`campaign` (the blocking pipeline step).

Design choices (and why):
- Methods: ACR 1-5 (ITU-T P.800, the default; whole numbers only, they are categories) and MUSHRA
  0-100 (ITU-R BS.1534-3; needs a hidden reference, low-pass anchors are optional). One clip per
  item in both; for MUSHRA each item also names the open reference the page plays next to it.
- Invitations: one random token per rater, returned once; only its sha256 is stored (`invites`).
- Assignments are planned at invite time (`assignment.plan_assignment`) and stored, so the same
  seed gives the same assignments and a returning rater resumes where they left off.
- Ratings: one per (rater, item), first submission wins. The same submission id again is a no-op
  (`False`); any other submission for a rated item is a `Conflict` ("already rated").
- Listening: the web app records every byte range of a clip it sends to the item's rater
  (`record_served`, table `mos_plays`) and submits with `require_listened=True`, so a rating is
  refused (`NotListened`) until the ranges sent cover the whole file: "played to the end" is the
  server's record of what it delivered, not the page's word. Programmatic callers (simulated raters,
  imports of ratings collected elsewhere) submit without it.
- Screening (rules in `qc`) runs after every gold/trap (and MUSHRA reference) answer; screened
  raters keep their ratings, flagged, and are excluded from every statistic (`results`).
"""

from __future__ import annotations

import math
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import and_, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased, sessionmaker

from musicops.config import Settings
from musicops.evaluation.mos import qc
from musicops.evaluation.mos.assignment import plan_assignment, validate_assets
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
from musicops.evaluation.mos.errors import Conflict, Forbidden, MosError, NotFound, NotListened, QuorumTimeout
from musicops.evaluation.mos.export import export_path, rating_record, write_ratings
from musicops.evaluation.mos.invites import hash_token
from musicops.evaluation.mos.models import (
    SCALES,
    AssignmentItem,
    Campaign,
    CampaignAsset,
    CampaignResults,
    Invite,
    Progress,
    Rater,
)
from musicops.evaluation.mos.results import campaign_results

_MAX_TOKEN_LEN = 200
_MAX_SUBMISSION_LEN = 128


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
    def from_settings(cls, settings: Settings | None = None) -> MosService:
        """`MUSICOPS_MOS_DATABASE_URL`, else `sqlite:///{home}/mos.db` (`Settings.mos_database`)."""
        if settings is None:
            from musicops.config import get_settings

            settings = get_settings()
        return cls(settings.mos_database)

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
        validate_assets(assets, method)
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
        if method is None:  # the rater row names its campaign; a missing one is a broken database
            raise NotFound(f"no campaign for rater {rater_id!r}")
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
        return campaign_results(_campaign(campaign), assets, raters, ratings, alpha_level, confidence)

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
        path = export_path(path)
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
        records = [rating_record(campaign_id, campaign.method, rating, item, rater, asset)
                   for rating, item, rater, asset in rows]
        return write_ratings(records, path)

    def log_to_mlflow(self, campaign_id: str, settings: Any = None) -> list[str]:
        """Tag each rated registered version with its MOS (model-version tags, see `mlflow_tags`);
        returns the versions tagged."""
        from musicops.evaluation.mos.mlflow_tags import tag_model_versions

        return tag_model_versions(self.results(campaign_id), settings)

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

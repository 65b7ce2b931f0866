"""MOS listening tests: campaigns, rater invitations, quality control and results (issue 6).

- `service`: `MosService`, the one API the web app, CLI and kfp component use.
- `db`: the SQLAlchemy tables (SQLite `HOME/mos.db` by default, PostgreSQL by URL).
- `qc`: rater screening rules (traps, gold clips, MUSHRA hidden reference).
- `stats`: MOS with t confidence intervals, Krippendorff's alpha.
- `app` / `security`: the rating web server (FastAPI).
"""

from musicops.evaluation.mos.service import (
    AssignmentItem,
    Campaign,
    CampaignAsset,
    CampaignResults,
    Conflict,
    Forbidden,
    Invite,
    MosError,
    MosService,
    NotFound,
    NotListened,
    Progress,
    QuorumTimeout,
    Rater,
)

__all__ = [
    "AssignmentItem",
    "Campaign",
    "CampaignAsset",
    "CampaignResults",
    "Conflict",
    "Forbidden",
    "Invite",
    "MosError",
    "MosService",
    "NotFound",
    "NotListened",
    "Progress",
    "QuorumTimeout",
    "Rater",
]

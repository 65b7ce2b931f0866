"""MOS listening tests: campaigns, rater invitations, quality control and results (issue 6).

- `service`: `MosService`, the one API over the campaign database that the web app, CLI and kfp
  component use.
- `models`: the records it hands out and takes in (`CampaignAsset`, `Campaign`, `CampaignResults`...).
- `errors`: `MosError` and the answers callers tell apart.
- `assignment`: asset validation and the per-rater assignment plan; `invites`: tokens and links.
- `results`: statistics from stored ratings; `export`: the ratings file; `mlflow_tags`: MOS on
  registered model versions.
- `anchors` / `sources`: hidden references, low-pass anchors, asset lists from a batch or spec.
- `campaign`: create, invite and wait for quorum in one call (the kfp step).
- `db`: the SQLAlchemy tables (SQLite `HOME/mos.db` by default, PostgreSQL by URL).
- `qc`: rater screening rules (traps, gold clips, MUSHRA hidden reference).
- `stats`: MOS with t confidence intervals, Krippendorff's alpha.
- `app` / `security`: the rating web server (FastAPI).
"""

from musicops.evaluation.mos.errors import (
    Conflict,
    Forbidden,
    MosError,
    NotFound,
    NotListened,
    QuorumTimeout,
)
from musicops.evaluation.mos.models import (
    AssignmentItem,
    Campaign,
    CampaignAsset,
    CampaignResults,
    Invite,
    Progress,
    Rater,
)
from musicops.evaluation.mos.service import MosService

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

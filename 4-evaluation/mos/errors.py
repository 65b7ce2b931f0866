"""MOS service errors, one class per answer a caller has to tell apart.

Why a module of its own: the web app maps each class to an HTTP status, the CLI and the kfp step
report them, and `musicops.errors` counts `MosError` among the project's errors; none of them
should need the database service to catch one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from musicops.errors import MusicopsError

if TYPE_CHECKING:
    from musicops.evaluation.mos.models import CampaignResults


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

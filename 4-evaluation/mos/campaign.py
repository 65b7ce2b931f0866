"""A whole campaign in one blocking call: create, invite (announcing each link), wait for quorum.

Why a module of its own: this is the pipeline step's orchestration (`components/mos.py`), built only
from the public service API; the service itself never waits on people or prints links.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from musicops.evaluation.mos.assignment import raters_for_quorum
from musicops.evaluation.mos.invites import invite_url
from musicops.evaluation.mos.models import CampaignAsset, CampaignResults, Invite
from musicops.evaluation.mos.service import MosService


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

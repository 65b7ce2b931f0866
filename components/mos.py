"""kfp component for a MOS listening test: create the campaign, announce invitations, wait for quorum.

The step blocks while people rate, so its timeout is the campaign's deadline; it fails with the
QuorumTimeout message (which assets are short, by how much) when raters do not finish in time.
The logic is `musicops.evaluation.mos.campaign.run_campaign`; this only unpacks and records.
"""

# No `from __future__ import annotations` here: kfp reads the real annotation objects.
from kfp import dsl
from kfp.dsl import Metrics, Output

from musicops.components.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def mos_campaign(assets_json: str, name: str, method: str, quorum: int, timeout_s: float, poll_s: float,
                 musicops_home: str, metrics: Output[Metrics], n_raters: int = 0, clips_per_rater: int = 0,
                 seed: int = 0, n_traps: int = 1) -> str:
    """Run a MOS campaign to quorum; logs MOS per model version as metrics and returns the campaign id.

    `assets_json`: a JSON list of CampaignAsset dicts, {"batch_id": ..., "references": [...],
    "anchors": n}, or a bare batch id (the batch pipeline's output). Invitation links (base URL from
    MUSICOPS_MOS_URL) go to the step log. `n_raters` 0 = enough for quorum; `clips_per_rater` 0 = all.
    """
    from musicops.components.runtime import component_settings
    from musicops.evaluation.mos.campaign import run_campaign
    from musicops.evaluation.mos.service import MosService
    from musicops.evaluation.mos.sources import campaign_assets_from_spec

    settings = component_settings(musicops_home)
    service = MosService.from_settings(settings)
    try:
        assets = campaign_assets_from_spec(assets_json, settings)
        run = run_campaign(service, assets, name, method=method, quorum=quorum, timeout_s=timeout_s,
                           poll_s=poll_s, n_raters=n_raters, clips_per_rater=clips_per_rater or None,
                           seed=seed, n_traps=n_traps, announce=lambda line: print(line, flush=True))
    finally:
        service.close()
    assert run.results is not None  # run_campaign waits for quorum (or raises)
    for key, value in run.results.metrics().items():
        metrics.log_metric(key, value)
    return run.campaign_id

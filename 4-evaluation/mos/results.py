"""Campaign results from stored ratings: per-asset and per-model MOS with intervals, and agreement.

Why a module of its own: turning ratings into statistics is pure arithmetic over what the service
read from the database, so it is kept apart from the queries (`service`) and from the formulas
themselves (`stats`).

- Only valid raters count: screened raters keep their ratings, flagged, and are excluded here.
- Per asset and per model version: mean with a 95 % t-interval over the individual valid ratings.
  Pooled per-model intervals treat ratings as independent although they cluster by clip and rater,
  so they are optimistic; compare versions on the per-asset table too.
- Agreement: Krippendorff's alpha over valid raters x test clips (interval level by default, the
  level that matches averaging scores into a MOS; references/anchors are left out because their
  known extremes would inflate it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from musicops.evaluation.mos.models import (
    RATED_ROLES,
    AssetScore,
    Campaign,
    CampaignAsset,
    CampaignResults,
    ModelScore,
)
from musicops.evaluation.mos.stats import krippendorff_alpha, mean_ci


def campaign_results(campaign: Campaign, assets: Sequence[CampaignAsset], raters: Mapping[str, bool],
                     ratings: Sequence[tuple[str, str, float]], alpha_level: str = "interval",
                     confidence: float = 0.95) -> CampaignResults:
    """Results of `campaign` from its assets, its raters (rater id -> screened out) and the
    (rater id, asset id, score) ratings of its "rate" items."""
    valid = [(rater, asset_id, score) for rater, asset_id, score in ratings if not raters.get(rater, True)]
    by_asset: dict[str, list[tuple[str, float]]] = {}
    for rater, asset_id, score in valid:
        by_asset.setdefault(asset_id, []).append((rater, score))

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
    for rater, asset_id, score in valid:
        if asset_id in column:
            matrix[row[rater]][column[asset_id]] = score
    alpha = krippendorff_alpha(matrix, alpha_level) if valid_raters else math.nan

    quorum_met = all(len(by_asset.get(asset_id, [])) >= campaign.quorum for asset_id in test_ids)
    return CampaignResults(
        campaign_id=campaign.id, name=campaign.name, method=campaign.method,
        scale=campaign.scale, quorum=campaign.quorum, assets=asset_scores,
        model_versions=model_scores, alpha=alpha, alpha_level=alpha_level,
        n_valid_raters=len(valid_raters),
        n_screened=sum(1 for screened in raters.values() if screened), quorum_met=quorum_met,
        n_invited=len(raters), confidence=confidence,
    )

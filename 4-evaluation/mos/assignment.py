"""Who rates what: campaign asset validation and the per-rater assignment plan (pure functions).

Why a module of its own: the plan is a pure function of (assets, settings, seed, rater index), so it
is kept apart from the database service that stores it, and can be read and tested on its own.

How: test clips are shuffled once with the campaign seed and rater k gets the window starting at
k * clips_per_rater (wrapping), so coverage stays balanced; references, anchors and gold clips go
to every rater; traps are added; the rater's own seeded RNG ("mos:{seed}:rater:{k}") orders the
lot. Same seed, same assignments. For MUSHRA each item also names the open reference the page
plays next to it (the reference with the item's prompt, else the first one).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import replace

from musicops.evaluation.mos.models import ACR_LABELS, ROLES, SCALES, CampaignAsset, PlannedItem

_SHA256 = re.compile(r"[0-9a-f]{64}")


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


def validate_assets(assets: Sequence[CampaignAsset], method: str) -> None:
    """Raise ValueError unless `assets` can make a campaign of `method` (checked before anything is stored)."""
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

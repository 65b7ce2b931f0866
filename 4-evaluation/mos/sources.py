"""Where a campaign's assets come from: a generation batch (provenance rows) or a JSON spec.

Why a module of its own: building the asset list reads the provenance database and the asset store,
which the campaign service never needs; the CLI (`musicops mos create`) and the kfp step
(`components/mos.py`) call these before they hand the list to `MosService.create_campaign`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from musicops.evaluation.mos.anchors import ANCHOR_CUTOFF_HZ, anchor_asset, reference_asset
from musicops.evaluation.mos.errors import NotFound
from musicops.evaluation.mos.models import CampaignAsset


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
    refs = [reference_asset(store, ref) for ref in references]
    sources = refs or tests
    extra = [anchor_asset(store, sources[i % len(sources)], cutoff_hz) for i in range(max(0, anchors))]
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

"""Run the copyright gate over stored assets and record each verdict in the asset's provenance."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from musicops.config import Settings, get_settings


@dataclass(frozen=True)
class AssetGateResult:
    asset_id: str
    blocked: bool
    reason: str


def gate_assets(catalog_name: str, asset_ids: list[str] | None = None, batch_id: str | None = None,
                settings: Settings | None = None, embedder: Any = None) -> list[AssetGateResult]:
    """Check assets (by id or a whole batch) against a catalog; every verdict goes to provenance."""
    from musicops.evaluation.catalog.gate import check_asset
    from musicops.evaluation.catalog.store import load_catalog
    from musicops.store.assets import open_asset_store
    from musicops.store.provenance import ProvenanceDB

    settings = settings or get_settings()
    catalog = load_catalog(catalog_name, settings=settings)
    store = open_asset_store(settings)
    results = []
    with ProvenanceDB.from_settings(settings) as db:
        records = db.list_assets(batch_id) if batch_id else []
        for asset_id in asset_ids or []:
            record = db.get_asset(asset_id)
            if record is None:
                raise KeyError(f"no asset {asset_id!r}")
            records.append(record)
        if not records:
            raise ValueError("no assets to check: give asset ids or a batch id that has assets")
        for record in records:
            audio = store.read_audio(record.files["wav"]["sha256"], "wav")
            verdict = check_asset(catalog, audio.samples, audio.sample_rate, embedder=embedder)
            db.record_gate(record.asset_id, "copyright", not verdict.blocked, verdict.to_dict())
            results.append(AssetGateResult(record.asset_id, verdict.blocked, verdict.reason))
    return results

"""The ratings table a campaign exports: one row per rating, as .csv or .parquet.

Why a module of its own: the file format (columns, types, atomic write) is what analysts outside
the service depend on, and it needs pandas, which the rating web app never loads; the service only
reads the rows (`MosService.export`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

EXPORT_SUFFIXES = (".csv", ".parquet")
COLUMNS = ["campaign_id", "method", "rater_id", "rater_index", "item_id", "position", "kind",
           "asset_id", "role", "audio_sha256", "model_version", "score", "expected", "submission_id",
           "screened_out", "screen_reason", "rated_at", "invited_at", "consented_at"]
_EXPECTED = {"trap": lambda item, asset: item.trap_expected,
             "gold": lambda item, asset: asset.gold_score}


def export_path(path: Path) -> Path:
    """`path` as a Path; ValueError unless it ends in .csv or .parquet (checked before any query)."""
    path = Path(path)
    if path.suffix.lower() not in EXPORT_SUFFIXES:
        raise ValueError(f"export to .csv or .parquet, got {path.name!r}")
    return path


def rating_record(campaign_id: str, method: str, rating: Any, item: Any, rater: Any, asset: Any) -> dict[str, Any]:
    """One export row from the stored rating, its item, its rater and the item's campaign asset."""
    return {
        "campaign_id": campaign_id, "method": method, "rater_id": rater.rater_id,
        "rater_index": rater.rater_index, "item_id": item.item_id, "position": item.position,
        "kind": item.kind, "asset_id": asset.asset_id, "role": asset.role,
        "audio_sha256": asset.audio_sha256, "model_version": asset.model_version, "score": rating.score,
        "expected": _EXPECTED[item.kind](item, asset) if item.kind in _EXPECTED else None,
        "submission_id": rating.submission_id, "screened_out": bool(rater.screened_out),
        "screen_reason": rater.screen_reason, "rated_at": rating.created_at,
        "invited_at": rater.invited_at, "consented_at": rater.consented_at,
    }


def write_ratings(records: list[dict[str, Any]], path: Path) -> Path:
    """Write the rows (timestamps as UTC, scores as float) atomically, format by suffix."""
    import pandas as pd

    from musicops.store.files import atomic_path

    path = export_path(path)
    frame = pd.DataFrame.from_records(records, columns=COLUMNS)
    for name in ("rated_at", "invited_at", "consented_at"):
        frame[name] = pd.to_datetime(frame[name], utc=True)
    frame["score"] = frame["score"].astype(float)
    frame["expected"] = frame["expected"].astype(float)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
    return path

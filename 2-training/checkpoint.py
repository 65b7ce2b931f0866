"""Crash-safe training checkpoints: written atomically, the last few kept, the newest resumed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from musicops.store.files import atomic_path

_NAME = re.compile(r"^step-(\d{8})\.pt$")


def list_checkpoints(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(directory: Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """torch.save to a temp file then rename: a crash mid-write never corrupts the last checkpoint."""
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"step-{step:08d}.pt"
    with atomic_path(target) as tmp:
        torch.save(state, tmp)
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return target


def load_latest(directory: Path) -> dict[str, Any] | None:
    """The newest readable checkpoint, skipping any that a crash left unreadable."""
    import torch

    for path in reversed(list_checkpoints(directory)):
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception:  # noqa: BLE001 - a torn file: fall back to the previous one
            continue
    return None

"""Numbered version folders (v0001, v0002, ...) shared by dataset manifests and reference catalogs.

A version folder is complete once its marker file (written last) exists; folders without it are
interrupted writes that readers skip and writers never reuse the number of.
"""

from __future__ import annotations

import re
from pathlib import Path

VERSION_DIR = re.compile(r"^v(\d{4,})$")


def version_dir(base: Path, version: int) -> Path:
    return base / f"v{int(version):04d}"


def version_numbers(base: Path, *markers: str) -> list[int]:
    """Version numbers under `base`, ascending: every vNNNN folder, or only those holding all `markers`."""
    if not base.is_dir():
        return []
    found = []
    for entry in base.iterdir():
        match = VERSION_DIR.fullmatch(entry.name)
        if match and entry.is_dir() and all((entry / marker).is_file() for marker in markers):
            found.append(int(match.group(1)))
    return sorted(found)


def claim_next_version(base: Path) -> tuple[Path, int]:
    """Create the next version folder with an exclusive mkdir: concurrent writers get distinct numbers."""
    version = max(version_numbers(base), default=0) + 1
    while True:
        candidate = version_dir(base, version)
        try:
            candidate.mkdir(exist_ok=False)
        except FileExistsError:  # someone else won this number; take the next
            version += 1
            continue
        return candidate, version

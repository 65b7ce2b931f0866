"""Where each `musicops.*` package lives in the checkout, read from pyproject's `package-dir`.

One source of truth for the folder names (`6-serving` is `musicops.serving`), so tests that read
the source tree (import direction, settings reads) follow a rename without editing.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def package_dirs(root: Path = ROOT) -> dict[str, Path]:
    """`{"musicops": root/"musicops", "musicops.serving": root/"6-serving", ...}`."""
    project = tomllib.loads((root / "pyproject.toml").read_text())
    mapping = project["tool"]["setuptools"]["package-dir"]
    return {module: root / folder for module, folder in mapping.items()}


def module_name(path: Path, root: Path = ROOT) -> str:
    """The dotted module name of a source file under one of the mapped folders."""
    best: tuple[str, Path] | None = None
    for module, folder in package_dirs(root).items():
        if path.is_relative_to(folder) and (best is None or len(folder.parts) > len(best[1].parts)):
            best = (module, folder)
    if best is None:
        raise ValueError(f"{path} is in no package folder of pyproject's package-dir")
    parts = [*best[0].split("."), *path.relative_to(best[1]).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files(root: Path = ROOT) -> list[Path]:
    """Every .py file of the package, in every mapped folder."""
    return sorted({p for folder in package_dirs(root).values() for p in folder.rglob("*.py")})

"""The top level is the data flow, and imports follow it: a stage may import the core and earlier
stages, never a later one; the core (`musicops/`) imports no stage. Only the entry points that
wire stages together (the CLI, kfp components and pipelines) may import any stage.

Read from the source with `ast` (function-level lazy imports included), so it fails the moment
someone adds an import in the wrong direction, whether or not that code path is ever run.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest
from helpers.layout import ROOT, module_name, package_dirs, source_files

STAGES = ("datasets", "training", "generation", "evaluation", "release", "serving")
WIRING = ("components", "pipelines")  # thin kfp layers over every stage
CORE_WIRING = ("musicops.cli", "musicops.demo_loop")  # entry points inside the core package


def imported(path: Path, root: Path = ROOT) -> set[str]:
    """Absolute `musicops.*` module names imported anywhere in the file (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path, root).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                names.add(".".join([*base, node.module] if node.module else base))
            elif node.module:
                names.add(node.module)
    return {n for n in names if n == "musicops" or n.startswith("musicops.")}


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES + WIRING else None


def sources(root: Path = ROOT) -> list[Path]:
    return source_files(root)


def violations(root: Path = ROOT) -> list[str]:
    found = []
    for path in sources(root):
        here = module_name(path, root)
        own = stage_of(here)
        if own in WIRING or here.startswith(CORE_WIRING):
            continue
        for target in sorted(imported(path, root)):
            other = stage_of(target)
            if other is None or other == own:
                continue
            if other in WIRING or own is None or STAGES.index(other) > STAGES.index(own):
                where = f"stage {own!r}" if own else "the core"
                found.append(f"{path.relative_to(root)} ({where}) imports {target} (stage {other!r})")
    return found


def test_the_top_level_is_the_data_flow() -> None:
    """`ls` of the checkout lists the stages in data-flow order, each a top-level folder."""
    folders = package_dirs()
    stage_folders = [folders[f"musicops.{stage}"] for stage in STAGES]
    assert all(folder.parent == ROOT and folder.is_dir() for folder in stage_folders)
    listed = sorted(p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [name for name in listed if ROOT / name in stage_folders] == [f.name for f in stage_folders]
    assert listed[: len(STAGES)] == [f.name for f in stage_folders]  # and they come first
    assert not set(STAGES) & {p.name for p in (ROOT / "musicops").iterdir()}


def test_no_stage_imports_a_later_stage() -> None:
    assert violations() == []


@pytest.mark.parametrize("source, target", [
    ("4-evaluation/report.py", "musicops.release.gates"),  # a stage importing a later one
    ("musicops/audio/x.py", "musicops.evaluation.metrics"),  # the core importing a stage
    ("2-training/x.py", "musicops.components.release"),  # a stage importing the kfp wiring
])
def test_the_check_catches_a_wrong_way_import(tmp_path: Path, source: str, target: str) -> None:
    """The checker itself can fail (a lazy import inside a function counts)."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for folder in package_dirs(tmp_path).values():
        folder.mkdir()
    (tmp_path / source).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / source).write_text(f"def f():\n    import {target}\n")
    (tmp_path / "6-serving" / "ok.py").write_text("from musicops.generation import batch\n")  # allowed
    assert len(violations(tmp_path)) == 1, violations(tmp_path)

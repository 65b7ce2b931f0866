"""Compile every pipeline to kfp IR YAML for a real Kubeflow Pipelines cluster."""

from __future__ import annotations

from pathlib import Path


def compile_all(out_dir: str | Path) -> list[Path]:
    from kfp import compiler

    from musicops.pipelines.catalog import PIPELINES, get_pipeline

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in sorted(PIPELINES):
        path = out / f"{name}.yaml"
        compiler.Compiler().compile(pipeline_func=get_pipeline(name), package_path=str(path))
        written.append(path)
    return written

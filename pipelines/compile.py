"""Compile pipelines to kfp IR YAML that carries its own infrastructure (see musicops.pipelines.profile).

The container image is set by rewriting each executor's `image` in the compiled IR rather than by
rebuilding the components: `dsl.component` fixes `base_image` when the component module is imported,
and the image is one plain field per executor in the IR, so patching it keeps one definition of each
component. GPUs, node selectors, secrets and environment go through kfp's own task APIs (Profile.step).
"""

from __future__ import annotations

from pathlib import Path

from musicops.pipelines.profile import LOCAL, Profile


def compile_pipeline(name: str, path: str | Path, profile: Profile = LOCAL) -> Path:
    """Compile pipeline `name` with `profile` to `path` (IR YAML); returns the path."""
    import yaml
    from kfp import compiler

    from musicops.pipelines.catalog import get_pipeline

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(pipeline_func=get_pipeline(name, profile), package_path=str(path))
    if profile.image:
        documents = list(yaml.safe_load_all(path.read_text()))
        for executor in documents[0]["deploymentSpec"]["executors"].values():
            executor["container"]["image"] = profile.image
        path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return path


def compile_all(out_dir: str | Path, profile: Profile = LOCAL, names: list[str] | None = None) -> list[Path]:
    """One `<name>.yaml` per pipeline (all of them unless `names`) in `out_dir`."""
    from musicops.pipelines.catalog import PIPELINES

    out = Path(out_dir)
    return [compile_pipeline(name, out / f"{name}.yaml", profile) for name in (names or sorted(PIPELINES))]

"""One entry point to get a model from any reference a user may give.

References: a built-in preset (`musicgen-tiny`, `musicgen-stereo-tiny`, `musicgen-melody-tiny`), a local model directory, `models:/NAME/VERSION` or
`models:/NAME@ALIAS`, or a Hugging Face hub id (`facebook/musicgen-small`, `owner/name@revision`,
`hub:owner/name@<sha>`; see `musicops.models.hub`). Aliases are resolved to a version and hub
revisions to a commit sha once, here, and that is what is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from musicops.config import Settings, get_settings
from musicops.models.base import ModelInfo
from musicops.models.tiny import PRESETS

if TYPE_CHECKING:
    from musicops.models.musicgen import TransformersMusicGen  # imports torch: only for the annotation


@dataclass(frozen=True)
class ResolvedModel:
    """A reference pinned to something immutable (a registry version, a directory, a preset, a hub
    commit).

    For "hub": `name` is the repo id, `version` the commit sha the revision resolved to, `reference`
    the local snapshot directory the weights load from, `revision` what was asked for.
    """

    reference: str
    kind: str  # "preset" | "directory" | "registry" | "hub"
    name: str
    version: str | None = None
    run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    revision: str | None = None

    @property
    def pinned_uri(self) -> str:
        if self.kind == "registry":
            return f"models:/{self.name}/{self.version}"
        if self.kind == "hub":
            return f"hub:{self.name}@{self.version}"
        return self.reference


def resolve_model(reference: str, settings: Settings | None = None) -> ResolvedModel:
    """Resolve without loading weights (cheap): used to fail fast and to build cache keys."""
    reference = reference.strip()
    if reference in PRESETS:
        return ResolvedModel(reference, "preset", reference)
    if reference.startswith("models:/"):
        from musicops.registry import configure_mlflow, parse_model_uri, resolve_version

        configure_mlflow(settings)
        ref = parse_model_uri(reference)
        version = resolve_version(ref)
        return ResolvedModel(reference, "registry", ref.name, str(version.version), version.run_id,
                             dict(version.tags or {}))
    from musicops.models.hub import HUB_PREFIX, is_hub_id

    path = Path(reference).expanduser()
    if path.is_dir() and not reference.startswith(HUB_PREFIX):  # a local directory wins, as in transformers
        return ResolvedModel(str(path.resolve()), "directory", path.resolve().name)
    if is_hub_id(reference):
        from musicops.models.hub import snapshot

        snap = snapshot(reference)  # HubModelNotFoundError (exit 2) names the id, revision and cache
        return ResolvedModel(str(snap.directory), "hub", snap.repo_id, snap.commit, tags=snap.tags(),
                             revision=snap.revision)
    raise ValueError(
        f"unknown model reference {reference!r}: expected a preset ({', '.join(PRESETS)}), a local "
        "model directory, "
        "models:/NAME/VERSION, models:/NAME@ALIAS or a hub id owner/name[@revision]"
    )


def load_model(reference: str | ResolvedModel, settings: Settings | None = None,
               device: str | None = None, precision: str = "fp32") -> TransformersMusicGen:
    """Load the model a reference names (resolving it first when given a string), generating at
    `precision` (fp32, bf16, int8: see musicops.models.decode).

    Every reference loads as the transformers MusicGen backend (audiocraft checkpoints are imported
    into that format), which fine-tuning relies on.
    """
    from musicops.models.decode import check_precision
    from musicops.models.musicgen import TransformersMusicGen

    precision = check_precision(precision)  # a typo fails before any weights are read

    settings = settings or get_settings()
    resolved = reference if isinstance(reference, ResolvedModel) else resolve_model(reference, settings)
    if resolved.kind == "preset":
        model = TransformersMusicGen.from_preset(resolved.name)
    else:
        info = ModelInfo(name=resolved.name, version=resolved.version, run_id=resolved.run_id,
                         source=resolved.pinned_uri, tags=resolved.tags)
        if resolved.kind == "registry":
            from musicops.registry import download_version

            directory = download_version(resolved.name, str(resolved.version), settings)
        else:
            directory = Path(resolved.reference)
        model = TransformersMusicGen.from_dir(directory, info=info, device=device)
    if device and resolved.kind == "preset":
        model.model.to(device)
    model.precision = precision
    return model

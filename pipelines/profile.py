"""What a compiled pipeline carries for its cluster: image, GPUs, node placement, secrets, environment, caching.

Every pipeline builds its graph through `Profile.step(task, ...)`, so the choices live in one place:

- caching is decided per step by the pipeline (`cache=`): only pure functions of their input artifacts
  are cacheable; a step with side effects (registry writes, asset store rows, a dataset version) or
  with inputs kfp cannot hash (a folder path whose files may change, an alias) never is;
- `gpu`/`gpu_type` request accelerators for the model steps (training, generation, evaluation), and
  `node_selector` places those same steps (GPU nodes are for the steps that need them);
- `secrets` become environment variables of every step through kfp-kubernetes (`use_secret_as_env`),
  so tracking URIs, database URLs and object-store keys never appear in the YAML or as parameters;
- `env` sets plain task environment (e.g. `MUSICOPS_HOME=/mnt/state`) on every step.

The default profile adds nothing: that is what `kfp.local` runs (it ignores the Kubernetes platform spec,
and task environment would override the runner's own `MUSICOPS_HOME`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The variables a step reads from a secret (`optional`: a secret holding only some of them is fine).
SECRET_ENV_KEYS: tuple[str, ...] = (
    "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_S3_ENDPOINT_URL", "MUSICOPS_DATABASE_URL", "MUSICOPS_ASSET_STORE", "MUSICOPS_MOS_DATABASE_URL",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "WANDB_API_KEY",
)


@dataclass(frozen=True)
class Profile:
    """Compile options; `Profile()` is the local default (nothing cluster-specific in the YAML)."""

    image: str | None = None
    gpu: int = 0
    gpu_type: str = "nvidia.com/gpu"
    node_selector: dict[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.gpu < 0:
            raise ValueError(f"gpu must be >= 0, got {self.gpu}")
        for name in self.env:
            if not name or "=" in name:
                raise ValueError(f"bad environment variable name {name!r}")

    def step(self, task: Any, *, cache: bool, model: bool = False, name: str | None = None) -> Any:
        """Apply this profile to one task: caching, display name, and for `model` steps GPU + placement."""
        task.set_caching_options(cache)
        if name:
            task.set_display_name(name)
        for key, value in sorted(self.env.items()):
            task.set_env_variable(key, value)
        if self.secrets:
            from kfp import kubernetes

            for secret in self.secrets:
                kubernetes.use_secret_as_env(task, secret_name=secret,
                                             secret_key_to_env={key: key for key in SECRET_ENV_KEYS},
                                             optional=True)
        if model and self.gpu:
            task.set_accelerator_type(self.gpu_type).set_accelerator_limit(self.gpu)
        if model and self.node_selector:
            from kfp import kubernetes

            for label, value in sorted(self.node_selector.items()):
                kubernetes.add_node_selector(task, label_key=label, label_value=value)
        return task


LOCAL = Profile()


def parse_pairs(pairs: list[str], what: str) -> dict[str, str]:
    """`["k=v", ...]` -> dict; a pair without `=` is a clear error naming the option."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{what}: expected KEY=VALUE, got {pair!r}")
        out[key] = value
    return out

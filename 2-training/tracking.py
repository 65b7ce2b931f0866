"""Experiment tracking: every metric goes to the MLflow run and to W&B (offline by default)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from musicops.config import Settings


class RunTracker:
    """An MLflow run with a W&B run mirrored beside it; use as a context manager."""

    def __init__(self, settings: Settings, run_name: str, params: dict[str, Any], tags: dict[str, str]):
        self.settings = settings
        self.run_name = run_name
        self.params = params
        self.tags = tags
        self.run_id: str | None = None
        self._wandb: Any = None

    def __enter__(self) -> RunTracker:
        import mlflow

        from musicops.registry import configure_mlflow, ensure_experiment

        configure_mlflow(self.settings)
        experiment_id = ensure_experiment(self.settings)
        run = mlflow.start_run(experiment_id=experiment_id, run_name=self.run_name, tags=self.tags)
        self.run_id = run.info.run_id
        mlflow.log_params({k: _param(v) for k, v in self.params.items()})
        self._wandb = self._start_wandb()
        return self

    def _start_wandb(self) -> Any:
        mode = self.settings.wandb_mode
        if mode == "disabled":
            return None
        import wandb

        self.settings.wandb_dir.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("WANDB_SILENT", "true")
        return wandb.init(project=self.settings.wandb_project, name=self.run_name, mode=mode,
                          dir=str(self.settings.wandb_dir), config=self.params,
                          tags=[f"{k}:{v}"[:64] for k, v in self.tags.items()],
                          settings=wandb.Settings(console="off", silent=True, x_disable_stats=True))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        import mlflow

        mlflow.log_metrics(metrics, step=step)
        if self._wandb is not None:
            self._wandb.log(metrics, step=step)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        import mlflow

        mlflow.log_artifact(str(path), artifact_path=artifact_path)
        if self._wandb is not None and path.suffix == ".png":
            import wandb

            self._wandb.log({path.stem: wandb.Image(str(path))})

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        import mlflow

        status = "FINISHED" if exc_type is None else "FAILED"
        if self._wandb is not None:
            self._wandb.finish(exit_code=0 if exc_type is None else 1)
        mlflow.end_run(status=status)


def _param(value: Any) -> Any:
    return value if isinstance(value, int | float | str | bool) else str(value)


def plot_loss_curve(losses: list[float], path: Path, title: str) -> Path:
    """A PNG of the training loss, because people would rather look than read a column of numbers."""
    from musicops.reports.plots import loss_curve_png

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(loss_curve_png(losses, title))
    return path

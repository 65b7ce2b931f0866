"""What every musicops kfp component does first: build the settings it runs with, and pin torch threads.

Components receive the state directory and tracking URI as plain parameters (empty = the task's
environment, which a cluster sets with `set_env_variable` / Kubernetes secrets), so the same compiled
pipeline runs under kfp.local or on a cluster with a real MLflow server. The values are passed down
as a `Settings` object; the process environment is never written.
"""

from __future__ import annotations

from musicops.config import Settings, get_settings


def component_settings(musicops_home: str = "", mlflow_tracking_uri: str = "") -> Settings:
    from musicops.models.threads import apply_torch_threads

    overrides: dict[str, str] = {}
    if musicops_home:
        overrides["home"] = musicops_home
    if mlflow_tracking_uri:
        overrides["mlflow_tracking_uri"] = mlflow_tracking_uri
    settings = get_settings()
    if overrides:
        settings = settings.replace(**overrides)
    apply_torch_threads(settings)
    _report_progress_in_step_log(settings)
    return settings.ensure()


def _report_progress_in_step_log(settings: Settings) -> None:
    """In a kfp step's own process (kfp's executor is `__main__`): decode steps, embedding and gate
    stages as log lines. Not when a component function is called in another process (tests,
    notebooks), which keeps its own reporter, if any."""
    import sys

    from musicops import progress

    main = getattr(sys.modules.get("__main__"), "__spec__", None)
    if getattr(main, "name", None) == "kfp.dsl.executor_main":
        progress.install(progress.LineReporter(sys.stdout, settings.progress_interval_s))

"""The release pipeline: regression -> copyright -> MOS -> licence gates -> promote (kfp wiring only)."""

# No `from __future__ import annotations` here: kfp reads the pipeline's real annotation objects.
from typing import Any

from kfp import dsl

from musicops.components.release import (
    copyright_gate_step,
    licence_gate_step,
    mos_gate_step,
    promote_step,
    regression_gate_step,
)
from musicops.pipelines.profile import LOCAL, Profile


def build(profile: Profile = LOCAL) -> Any:
    """No gate is cacheable: each resolves aliases and reads live registry state, and promote moves one."""

    @dsl.pipeline(name="musicops-release",
                  description="Gate a candidate model version and move the champion alias only if every gate passes.")
    def release_pipeline(
        candidate: str,
        baseline: str = "",
        catalog: str = "",
        mos_campaign: str = "",
        alias: str = "champion",
        suite_path: str = "",
        musicops_home: str = "",
        mlflow_tracking_uri: str = "",
        require: str = "",  # gates that must run, e.g. "regression,copyright,mos,licence"; "": the default
    ) -> str:
        common = {"musicops_home": musicops_home, "mlflow_tracking_uri": mlflow_tracking_uri}
        regression = profile.step(regression_gate_step(candidate=candidate, baseline=baseline, alias=alias,
                                                       suite_path=suite_path, **common),
                                  cache=False, model=True)
        copyright_check = profile.step(copyright_gate_step(regression=regression.outputs["Output"], catalog=catalog,
                                                           **common), cache=False)
        mos = profile.step(mos_gate_step(candidate=candidate, baseline=baseline, alias=alias,
                                         mos_campaign=mos_campaign, **common), cache=False)
        mos.after(copyright_check)
        licence = profile.step(licence_gate_step(candidate=candidate, alias=alias, **common), cache=False)
        licence.after(mos)
        promote = profile.step(promote_step(candidate=candidate, baseline=baseline, alias=alias,
                                            regression=regression.outputs["Output"], copyright=copyright_check.output,
                                            mos=mos.output, licence=licence.output, require=require, **common),
                               cache=False)
        return promote.output

    return release_pipeline


release_pipeline = build()

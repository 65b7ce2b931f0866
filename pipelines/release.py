"""The release pipeline: regression -> copyright -> MOS -> licence gates -> promote (kfp wiring only)."""

from kfp import dsl

from musicops.components.release import (
    copyright_gate_step,
    licence_gate_step,
    mos_gate_step,
    promote_step,
    regression_gate_step,
)


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
) -> str:
    common = {"musicops_home": musicops_home, "mlflow_tracking_uri": mlflow_tracking_uri}
    regression = regression_gate_step(candidate=candidate, baseline=baseline, alias=alias, suite_path=suite_path,
                                      **common)
    copyright_check = copyright_gate_step(regression=regression.outputs["Output"], catalog=catalog, **common)
    mos = mos_gate_step(candidate=candidate, baseline=baseline, alias=alias, mos_campaign=mos_campaign, **common)
    mos.after(copyright_check)
    licence = licence_gate_step(candidate=candidate, alias=alias, **common)
    licence.after(mos)
    promote = promote_step(candidate=candidate, baseline=baseline, alias=alias,
                           regression=regression.outputs["Output"], copyright=copyright_check.output,
                           mos=mos.output, licence=licence.output, **common)
    for task in (regression, copyright_check, mos, licence, promote):
        task.set_caching_options(False)
    return promote.output

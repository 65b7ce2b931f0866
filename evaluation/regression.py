"""The regression suite: is the candidate at least as good as the baseline, and free of broken audio?

Both models generate the suite's prompts with the suite's seeds through the batch pipeline's code
(cache, post-processing, checks, store, provenance), the audio is embedded, and the candidate is
compared with the baseline prompt by prompt. Every figure carries its metric provenance.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from musicops.config import Settings, get_settings

DEFAULT_SUITE = Path(__file__).resolve().parent / "suites" / "regression-v1.json"
PASS, REGRESSION, ERROR = 0, 1, 2


class SuiteError(ValueError):
    """A suite file that cannot be used."""


@dataclass(frozen=True)
class SuitePrompt:
    id: str
    prompt: str
    duration_s: float
    seed: int


@dataclass(frozen=True)
class Suite:
    name: str
    version: int
    embedder: str
    prompts: tuple[SuitePrompt, ...]
    thresholds: dict[str, Any]
    sha256: str
    path: str


def load_suite(path: str | Path = DEFAULT_SUITE) -> Suite:
    path = Path(path)
    try:
        raw = path.read_bytes()
        data = json.loads(raw)
        prompts = tuple(SuitePrompt(str(p["id"]), str(p["prompt"]), float(p["duration_s"]), int(p["seed"]))
                        for p in data["prompts"])
        suite = Suite(str(data["name"]), int(data["version"]), str(data.get("embedder", "clap-tiny")), prompts,
                      dict(data["thresholds"]), hashlib.sha256(raw).hexdigest(), str(path))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise SuiteError(f"{path}: not a usable regression suite ({exc})") from exc
    if len(prompts) < 3:
        raise SuiteError(f"{path}: a suite needs at least 3 prompts for confidence intervals")
    if len({p.id for p in prompts}) != len(prompts):
        raise SuiteError(f"{path}: prompt ids must be unique")
    return suite


@dataclass
class GateCheck:
    name: str
    passed: bool
    value: float | None
    threshold: float | None
    detail: str


@dataclass
class PromptRow:
    id: str
    prompt: str
    seed: int
    candidate_asset: str
    baseline_asset: str
    candidate_audio: str
    baseline_audio: str
    clap_candidate: float
    clap_baseline: float
    drift: float
    flatness_candidate: float
    flatness_baseline: float
    candidate_failed_checks: list[str]
    baseline_failed_checks: list[str]
    fd_contribution: float


@dataclass
class RegressionResult:
    suite: dict[str, Any]
    candidate: str
    baseline: str
    provenance: dict[str, Any]
    rows: list[PromptRow]
    checks: list[GateCheck]
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def exit_code(self) -> int:
        return PASS if self.passed else REGRESSION

    def to_dict(self) -> dict[str, Any]:
        return {"suite": self.suite, "candidate": self.candidate, "baseline": self.baseline,
                "verdict": "pass" if self.passed else "regression", "provenance": self.provenance,
                "checks": [asdict(c) for c in self.checks], "metrics": self.metrics,
                "rows": [asdict(r) for r in self.rows]}


def run_regression(candidate: str, baseline: str, suite_path: str | Path = DEFAULT_SUITE,
                   out_dir: str | Path | None = None, settings: Settings | None = None) -> RegressionResult:
    """Generate, embed and compare; write JSON, JUnit XML and HTML into `out_dir` when given."""
    from musicops.evaluation.embedders import get_embedder
    from musicops.evaluation.metrics import (
        clap_score,
        embedding_drift,
        frechet_contributions,
        frechet_distance,
        paired_bootstrap,
        reference_set_hash,
    )
    from musicops.generation.batch import BatchOptions, run_batch
    from musicops.generation.prompts import WorkItem
    from musicops.store.cache import normalize_prompt

    settings = (settings or get_settings()).ensure()
    suite = load_suite(suite_path)
    items = [WorkItem(i + 1, 0, p.prompt, normalize_prompt(p.prompt), p.duration_s, p.seed)
             for i, p in enumerate(suite.prompts)]
    options = BatchOptions(log_to_mlflow=False)
    cand = run_batch(f"<suite {suite.name} v{suite.version}>", candidate, options, settings, items=items)
    base = run_batch(f"<suite {suite.name} v{suite.version}>", baseline, options, settings, items=items)
    cand_audio, rate = _load_audio(cand, settings)
    base_audio, _ = _load_audio(base, settings)
    embedder = get_embedder(suite.embedder)
    reference_hash = reference_set_hash([o.record.sha256 for o in base.outcomes])
    provenance = embedder.provenance(loudness_normalisation=_loudness_note(options),
                                     reference_set_sha256=reference_hash)
    emb_c = embedder.embed_audio(cand_audio, rate)
    emb_b = embedder.embed_audio(base_audio, rate)
    text = embedder.embed_text([p.prompt for p in suite.prompts])
    clap_c, clap_b = clap_score(emb_c, text), clap_score(emb_b, text)
    drift = embedding_drift(emb_c, emb_b)
    fd = frechet_distance(emb_c, emb_b)
    contributions = frechet_contributions(emb_c, emb_b)
    flat_c = np.array([_check_value(o.record, "spectral_flatness") for o in cand.outcomes])
    flat_b = np.array([_check_value(o.record, "spectral_flatness") for o in base.outcomes])
    t = suite.thresholds
    n_boot, confidence = int(t.get("bootstrap_samples", 2000)), float(t.get("confidence", 0.95))
    clap_cmp = paired_bootstrap(clap_c, clap_b, n_boot=n_boot, seed=0, ci=confidence)
    # noise shows as a rise in spectral flatness; compare on a log scale (ratios), per prompt
    flat_cmp = paired_bootstrap(np.log(np.maximum(flat_c, 1e-6)), np.log(np.maximum(flat_b, 1e-6)),
                                n_boot=n_boot, seed=1, ci=confidence)
    max_log_ratio = float(np.log(t["max_flatness_ratio"]))
    fail_c = float(np.mean([not o.record.passed for o in cand.outcomes]))
    fail_b = float(np.mean([not o.record.passed for o in base.outcomes]))

    checks = [
        GateCheck("artifacts", fail_c - fail_b <= t["max_artifact_rate_increase"], fail_c - fail_b,
                  t["max_artifact_rate_increase"],
                  f"candidate fails quality checks on {fail_c:.0%} of prompts, baseline on {fail_b:.0%}"),
        GateCheck("noise", flat_cmp.ci_low <= max_log_ratio, float(np.exp(flat_cmp.mean_delta)),
                  t["max_flatness_ratio"],
                  f"spectral flatness x{np.exp(flat_cmp.mean_delta):.2f} vs baseline "
                  f"(CI x{np.exp(flat_cmp.ci_low):.2f}..x{np.exp(flat_cmp.ci_high):.2f}; white noise is ~0.56, "
                  f"candidate median {np.median(flat_c):.4f})"),
        GateCheck("clap_score", clap_cmp.ci_high >= -t["max_clap_score_drop"], clap_cmp.mean_delta,
                  -t["max_clap_score_drop"],
                  f"CLAP text-audio score change {clap_cmp.mean_delta:+.4f} "
                  f"(CI {clap_cmp.ci_low:+.4f}..{clap_cmp.ci_high:+.4f})"),
    ]
    limit = t.get("max_frechet_distance")
    checks.append(GateCheck("frechet_distance", limit is None or fd <= limit, fd, limit,
                            f"Fréchet distance to the baseline's outputs {fd:.4f}"
                            + (" (informational: no limit in this suite)" if limit is None else "")))
    rows = []
    for i, prompt in enumerate(suite.prompts):
        rc, rb = cand.outcomes[i].record, base.outcomes[i].record
        rows.append(PromptRow(
            prompt.id, prompt.prompt, prompt.seed, rc.asset_id, rb.asset_id, rc.files["wav"]["sha256"],
            rb.files["wav"]["sha256"], float(clap_c[i]), float(clap_b[i]), float(drift[i]), float(flat_c[i]),
            float(flat_b[i]), [c["name"] for c in rc.checks if not c["passed"]],
            [c["name"] for c in rb.checks if not c["passed"]], float(contributions[i])))
    result = RegressionResult(
        suite={"name": suite.name, "version": suite.version, "sha256": suite.sha256, "path": suite.path},
        candidate=cand.plan.model.pinned_uri, baseline=base.plan.model.pinned_uri, provenance=provenance.to_dict(),
        rows=rows, checks=checks,
        metrics={"frechet_distance": fd, "clap": clap_cmp.to_dict(), "flatness": flat_cmp.to_dict(),
                 "artifact_rate_candidate": fail_c, "artifact_rate_baseline": fail_b,
                 "drift_median": float(np.median(drift)), "drift_max": float(np.max(drift))},
    )
    if out_dir is not None:
        from musicops.evaluation.report import write_reports

        write_reports(result, Path(out_dir), settings)
    return result


def _load_audio(result: Any, settings: Settings) -> tuple[list[np.ndarray], int]:
    import io

    import soundfile as sf

    from musicops.store.assets import open_asset_store

    store = open_asset_store(settings)
    clips, rate = [], 0
    for outcome in result.outcomes:
        data, rate = sf.read(io.BytesIO(store.read(outcome.record.files["wav"]["sha256"], "wav")),
                             dtype="float32", always_2d=True)
        clips.append(data)
    return clips, rate


def _check_value(record: Any, name: str) -> float:
    for check in record.checks:
        if check["name"] == name and check.get("value") is not None:
            return float(check["value"])
    return 0.0


def _loudness_note(options: Any) -> str:
    target = options.postprocess.target_lufs
    return "none" if target is None else f"{target:g} LUFS (musicops post-processing)"

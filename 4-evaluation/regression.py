"""The regression suite: is the candidate at least as good as the baseline, and free of broken audio?

Both models generate the suite's prompts with the suite's seeds through the batch pipeline's code
(cache, post-processing, checks, store, provenance), the audio is embedded, and the candidate is
compared with the baseline prompt by prompt. Every figure carries its metric provenance.

Comparisons alone can be fooled: once a broken champion exists, a broken candidate is "no worse".
So the candidate also has to clear absolute floors (quality-check pass rate, silence / NaN / noise
rates, and a CLAP score floor when real CLAP weights are used) that need no baseline. The suite
file states its floors; `BUILTIN_FLOORS` is a minimum a suite file can tighten but never loosen.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from musicops.config import Settings, get_settings
from musicops.errors import MusicopsError

DEFAULT_SUITE = Path(__file__).resolve().parent / "suites" / "regression-v1.json"
PASS, REGRESSION, ERROR = 0, 1, 2

# The hard minimum for every release, whatever suite file is used (a suite may only tighten these).
# Rates are fractions of the suite's prompts. Why these values: see the suite file's "floor_notes".
BUILTIN_FLOORS: dict[str, float] = {
    "max_check_failure_rate": 0.2,  # clips failing any quality check
    "max_silence_rate": 0.1,  # clips failing the silence check (RMS below -60 dBFS)
    "max_nonfinite_rate": 0.0,  # clips with NaN/Inf samples: never legitimate
    "max_noise_rate": 0.1,  # clips whose spectral flatness exceeds `noise_flatness`
    "noise_flatness": 0.35,  # white noise ~0.56, pink noise ~0.19, music ~0.00-0.03
    "min_clap_score": 0.05,  # mean text-audio cosine; only with real (non-random) CLAP weights
}
# A floor is tighter when lower, except these, which are tighter when higher.
_HIGHER_IS_TIGHTER = frozenset({"min_clap_score"})


def is_artifact_uri(value: str) -> bool:
    """An MLflow model/run/artifact URI (or any scheme://) rather than a local path."""
    return value.startswith(("models:/", "runs:/")) or "://" in value


class SuiteError(MusicopsError, ValueError):
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
    floors: dict[str, float] = field(default_factory=lambda: dict(BUILTIN_FLOORS))
    floors_ignored: dict[str, float] = field(default_factory=dict)  # suite values looser than the built-ins
    embedder_path: str | None = None

    def info(self) -> dict[str, Any]:
        """What a verdict records about the suite it was measured with (the sha256 pins the file)."""
        from musicops.evaluation.embedders import CLAP_TINY

        return {"name": self.name, "version": self.version, "sha256": self.sha256, "path": self.path,
                "floors": self.floors, "floors_ignored": self.floors_ignored, "embedder": self.embedder,
                "embedder_random_weights": self.embedder == CLAP_TINY}


def embedder_warning(suite: dict[str, Any] | None) -> str | None:
    """The line every report leads with when its CLAP scores come from random weights (None otherwise)."""
    if not suite or not suite.get("embedder_random_weights"):
        return None
    return (f"WARNING: CLAP scores here come from {suite.get('embedder')!r}, an embedder with random weights: they "
            "measure nothing musical. Name real CLAP weights in the suite ('embedder': 'clap' with 'embedder_path' "
            "a directory or an MLflow models:/ or runs:/ URI, or 'embedder': 'clap:OWNER/NAME' from the hub).")


def load_suite(path: str | Path = DEFAULT_SUITE) -> Suite:
    path = Path(path)
    try:
        raw = path.read_bytes()
        data = json.loads(raw)
        prompts = tuple(SuitePrompt(str(p["id"]), str(p["prompt"]), float(p["duration_s"]), int(p["seed"]))
                        for p in data["prompts"])
        floors, ignored = effective_floors(data.get("floors") or {})
        embedder_path = data.get("embedder_path")
        if embedder_path is not None and not is_artifact_uri(str(embedder_path)):
            # relative to the suite file, so a suite folder travels whole (URIs are kept as written)
            embedder_path = str((path.parent / str(embedder_path)).resolve())
        suite = Suite(str(data["name"]), int(data["version"]), str(data.get("embedder", "clap-tiny")), prompts,
                      dict(data["thresholds"]), hashlib.sha256(raw).hexdigest(), str(path), floors, ignored,
                      embedder_path)
    except SuiteError as exc:
        raise SuiteError(f"{path}: {exc}") from exc
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SuiteError(f"{path}: not a usable regression suite ({exc})") from exc
    if len(prompts) < 3:
        raise SuiteError(f"{path}: a suite needs at least 3 prompts for confidence intervals")
    if len({p.id for p in prompts}) != len(prompts):
        raise SuiteError(f"{path}: prompt ids must be unique")
    return suite


def effective_floors(declared: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """The suite's floors, each clamped to at least the built-in minimum.

    Returns (floors in force, the suite's values that were looser and therefore ignored). An unknown
    floor name is an error: a typo must not silently leave a floor at a value nobody chose.
    """
    unknown = sorted(set(declared) - set(BUILTIN_FLOORS))
    if unknown:
        raise SuiteError(f"unknown floor(s) {', '.join(unknown)}; known: {', '.join(sorted(BUILTIN_FLOORS))}")
    floors, ignored = dict(BUILTIN_FLOORS), {}
    for key, raw in declared.items():
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not np.isfinite(raw):
            raise SuiteError(f"floor {key!r} must be a finite number, not {raw!r}")
        value, minimum = float(raw), BUILTIN_FLOORS[key]
        looser = value < minimum if key in _HIGHER_IS_TIGHTER else value > minimum
        if looser:
            ignored[key] = value
        else:
            floors[key] = value
    return floors, ignored


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

    @property
    def warning(self) -> str | None:
        return embedder_warning(self.suite)

    def to_dict(self) -> dict[str, Any]:
        head = {"warning": self.warning} if self.warning else {}
        return {**head, "suite": self.suite, "candidate": self.candidate, "baseline": self.baseline,
                "verdict": "pass" if self.passed else "regression", "provenance": self.provenance,
                "checks": [asdict(c) for c in self.checks], "metrics": self.metrics,
                "rows": [asdict(r) for r in self.rows]}


@dataclass
class FloorResult:
    """The absolute floors on a candidate alone (a first release has no baseline to compare with)."""

    suite: dict[str, Any]
    candidate: str
    checks: list[GateCheck]
    metrics: dict[str, Any]
    candidate_assets: list[str]

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"suite": self.suite, "candidate": self.candidate, "verdict": "pass" if self.passed else "regression",
                "checks": [asdict(c) for c in self.checks], "metrics": self.metrics,
                "candidate_assets": self.candidate_assets}


def floor_checks(records: list[Any], clap: np.ndarray | None, floors: dict[str, float],
                 real_clap: bool) -> tuple[list[GateCheck], dict[str, Any]]:
    """Absolute checks on the candidate's suite outputs; no baseline can move these.

    `clap` is the per-prompt text-audio score; its floor applies only with real CLAP weights (the
    random-init `clap-tiny` preset's scores mean nothing musically).
    """
    from musicops.audio.checks import NOT_COMPUTED

    n = max(len(records), 1)

    def rate(failed: Any) -> float:
        return sum(1 for record in records if failed(record)) / n

    def failed_check(record: Any, name: str) -> bool:
        return any(c["name"] == name and not c["passed"] and not str(c.get("detail", "")).startswith(NOT_COMPUTED)
                   for c in record.checks)

    any_failed = rate(lambda r: not r.passed)
    silent = rate(lambda r: failed_check(r, "silence"))
    nonfinite = rate(lambda r: failed_check(r, "finite"))
    noise_level = floors["noise_flatness"]
    noisy = rate(lambda r: _check_value(r, "spectral_flatness") > noise_level)
    f = floors
    checks = [
        GateCheck("floor_quality_checks", any_failed <= f["max_check_failure_rate"], any_failed,
                  f["max_check_failure_rate"],
                  f"candidate fails quality checks on {any_failed:.0%} of prompts "
                  f"(absolute floor: at most {f['max_check_failure_rate']:.0%}, whatever the baseline)"),
        GateCheck("floor_silence", silent <= f["max_silence_rate"], silent, f["max_silence_rate"],
                  f"{silent:.0%} of the candidate's clips are silent (absolute floor: at most "
                  f"{f['max_silence_rate']:.0%})"),
        GateCheck("floor_nonfinite", nonfinite <= f["max_nonfinite_rate"], nonfinite, f["max_nonfinite_rate"],
                  f"{nonfinite:.0%} of the candidate's clips contain NaN/Inf samples (absolute floor: at most "
                  f"{f['max_nonfinite_rate']:.0%})"),
        GateCheck("floor_noise", noisy <= f["max_noise_rate"], noisy, f["max_noise_rate"],
                  f"{noisy:.0%} of the candidate's clips are noise-like (spectral flatness > {noise_level:g}; "
                  f"absolute floor: at most {f['max_noise_rate']:.0%})"),
    ]
    metrics: dict[str, Any] = {"check_failure_rate": any_failed, "silence_rate": silent,
                               "nonfinite_rate": nonfinite, "noise_rate": noisy}
    if real_clap and clap is not None:
        mean = float(np.mean(clap))
        checks.append(GateCheck("floor_clap_score", mean >= f["min_clap_score"], mean, f["min_clap_score"],
                                f"mean CLAP text-audio score {mean:.4f} (absolute floor: at least "
                                f"{f['min_clap_score']:g})"))
        metrics["clap_mean"] = mean
    else:
        metrics["clap_floor"] = "not applied: the suite's embedder is the random-init clap-tiny preset"
    return checks, metrics


def run_floors(candidate: str, suite_path: str | Path = DEFAULT_SUITE,
               settings: Settings | None = None) -> FloorResult:
    """Generate the suite with the candidate alone and apply the absolute floors (first release)."""
    from musicops import progress
    from musicops.evaluation.embedders import CLAP_TINY, get_embedder
    from musicops.evaluation.metrics import clap_score

    settings = (settings or get_settings()).ensure()
    suite = load_suite(suite_path)
    progress.stage(f"floors: suite {suite.name} v{suite.version}, {len(suite.prompts)} prompts with {candidate}")
    cand = _generate(suite, candidate, settings)
    records = [o.record for o in cand.outcomes]
    real_clap = suite.embedder != CLAP_TINY
    clap = None
    if real_clap:  # the random-init preset's score would gate nothing: skip the embedding cost
        audio, rate = _load_audio(cand, settings)
        embedder = get_embedder(suite.embedder, suite.embedder_path)
        clap = clap_score(embedder.embed_audio(audio, rate), embedder.embed_text([p.prompt for p in suite.prompts]))
    checks, metrics = floor_checks(records, clap, suite.floors, real_clap)
    return FloorResult(suite.info(), cand.plan.model.pinned_uri, checks, metrics, [r.asset_id for r in records])


def _generate(suite: Suite, model: str, settings: Settings) -> Any:
    from musicops.generation.batch import run_batch
    from musicops.generation.planning import BatchOptions
    from musicops.generation.prompts import WorkItem
    from musicops.store.cache import normalize_prompt

    items = [WorkItem(i + 1, 0, p.prompt, normalize_prompt(p.prompt), p.duration_s, p.seed)
             for i, p in enumerate(suite.prompts)]
    return run_batch(f"<suite {suite.name} v{suite.version}>", model, BatchOptions(log_to_mlflow=False), settings,
                     items=items)


def run_regression(candidate: str, baseline: str, suite_path: str | Path = DEFAULT_SUITE,
                   out_dir: str | Path | None = None, settings: Settings | None = None) -> RegressionResult:
    """Generate, embed and compare; write JSON, JUnit XML and HTML into `out_dir` when given."""
    from musicops import progress
    from musicops.evaluation.embedders import CLAP_TINY, get_embedder
    from musicops.evaluation.metrics import (
        clap_score,
        embedding_drift,
        frechet_contributions,
        frechet_distance,
        paired_bootstrap,
        reference_set_hash,
    )
    from musicops.generation.planning import BatchOptions

    settings = (settings or get_settings()).ensure()
    suite = load_suite(suite_path)
    options = BatchOptions(log_to_mlflow=False)
    n = len(suite.prompts)
    progress.stage(f"regression: suite {suite.name} v{suite.version}, {n} prompts with the candidate {candidate}")
    cand = _generate(suite, candidate, settings)
    progress.stage(f"regression: {n} prompts with the baseline {baseline}")
    base = _generate(suite, baseline, settings)
    cand_audio, rate = _load_audio(cand, settings)
    base_audio, _ = _load_audio(base, settings)
    progress.stage(f"regression: embedding {2 * n} clips with {suite.embedder}")
    embedder = get_embedder(suite.embedder, suite.embedder_path)
    reference_hash = reference_set_hash([o.record.sha256 for o in base.outcomes])
    provenance = embedder.provenance(loudness_normalisation=_loudness_note(options),
                                     reference_set_sha256=reference_hash)
    emb_c = embedder.embed_audio(cand_audio, rate)
    emb_b = embedder.embed_audio(base_audio, rate)
    text = embedder.embed_text([p.prompt for p in suite.prompts])
    progress.stage("regression: comparing (Fréchet distance, bootstrap CIs, floors)")
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

    floors, floor_metrics = floor_checks([o.record for o in cand.outcomes], clap_c, suite.floors,
                                         suite.embedder != CLAP_TINY)
    checks = floors + [
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
        suite=suite.info(),
        candidate=cand.plan.model.pinned_uri, baseline=base.plan.model.pinned_uri, provenance=provenance.to_dict(),
        rows=rows, checks=checks,
        metrics={"frechet_distance": fd, "clap": clap_cmp.to_dict(), "flatness": flat_cmp.to_dict(),
                 "artifact_rate_candidate": fail_c, "artifact_rate_baseline": fail_b,
                 "drift_median": float(np.median(drift)), "drift_max": float(np.max(drift)),
                 "floors": floor_metrics},
    )
    if out_dir is not None:
        from musicops.evaluation.report import write_reports

        write_reports(result, Path(out_dir), settings)
    return result


def _load_audio(result: Any, settings: Settings) -> tuple[list[np.ndarray], int]:
    from musicops.store.assets import open_asset_store

    store = open_asset_store(settings)
    clips, rate = [], 0
    for outcome in result.outcomes:
        audio = store.read_audio(outcome.record.files["wav"]["sha256"], "wav")
        clips.append(audio.samples)
        rate = audio.sample_rate
    return clips, rate


def _check_value(record: Any, name: str) -> float:
    for check in record.checks:
        if check["name"] == name and check.get("value") is not None:
            return float(check["value"])
    return 0.0


def _loudness_note(options: Any) -> str:
    target = options.postprocess.target_lufs
    return "none" if target is None else f"{target:g} LUFS (musicops post-processing)"

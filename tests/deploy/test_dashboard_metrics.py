"""The Grafana dashboard and the Prometheus rules query only what `musicops serve` really exports.

A real server (tiny model, 127.0.0.1) serves a generation (a cache miss, then the same request as a
hit), an async job and a refused request, so labelled histograms and counters have samples; then
/metrics is scraped. Every PromQL expression in deploy/kustomize/base/monitoring (dashboard
targets, recording and alert rules) is reduced to its vector selectors: each metric name must be a
sample name in the scrape (histogram `_bucket`/`_sum`/`_count` and counter `_total` samples are
matched as the exposition names them, so a family name without its suffix does not pass) or a
recording rule defined in the rules file; each label matcher must name a label the metric has,
and an equality or regex matcher must match a value in the scrape, except values that only appear
after a rare event (EVENTUAL). Grafana variables are replaced by a number first.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers.servers import musicops_serve
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.slow

# (label, matcher value) pairs whose samples exist only after a failure, which the test does not cause.
EVENTUAL = {("state", "failed"), ("status", "5.."), ("cause", "model_load")}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
            "offset", "inf", "nan"}
_SELECTOR = re.compile(r"(?<![\w.])(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)\s*(?P<labels>\{[^}]*\})?(?P<call>\s*\()?")
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


def selectors(expr: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """The vector selectors of a PromQL expression: (metric name, [(label, op, value)])."""
    text = re.sub(r"\$\{[^}]*\}|\$\w+", "1", expr)  # Grafana variables
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery windows
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    assert text.count("(") == text.count(")") and text.count("{") == text.count("}"), expr
    assert not re.search(r"(?<![\w}])\s*\{", re.sub(r"[A-Za-z0-9_:]\s*\{", "", text)), f"nameless selector: {expr}"
    found = []
    for m in _SELECTOR.finditer(text):
        if m.group("call") and not m.group("labels") or m.group("name").lower() in KEYWORDS:
            continue  # a function or aggregation, or a keyword
        found.append((m.group("name"), _MATCHER.findall(m.group("labels") or "")))
    return found


def test_selector_extraction() -> None:
    """The extractor the checks below rely on: functions, grouping, windows, numbers and variables are
    not metrics; suffixed sample names and label matchers come through as written."""
    expr = ('histogram_quantile(0.99, sum by (le, route) (rate(a_seconds_bucket{route=~"/v1/.*", status!="200"}'
            '[$__rate_interval]))) / clamp_min(sum(rate(b_total[5m])) * $price, 1e-9) > on() musicops:rec:rate5m')
    assert selectors(expr) == [("a_seconds_bucket", [("route", "=~", "/v1/.*"), ("status", "!=", "200")]),
                               ("b_total", []), ("musicops:rec:rate5m", [])]
    assert selectors("absent(x == 1) and vector(2.0)") == [("x", [])]


@pytest.fixture(scope="module")
def scrape(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from musicops.config import Settings
    from musicops.serving.keys import KeyStore

    home: Path = tmp_path_factory.mktemp("dash-serve")
    store = KeyStore.for_settings(Settings.from_values(home=home))
    try:
        key = store.create("dashboard")[1]
    finally:
        store.close()
    server = musicops_serve(home, ["--model", "musicgen-tiny", "--poll-interval", "0", "--max-duration", "2"])
    with server, httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as c:
        request = {"prompt": "dashboard check", "duration_s": 0.5, "seed": 3}
        first, again = c.post("/v1/generate", json=request), c.post("/v1/generate", json=request)
        assert first.status_code == again.status_code == 200, first.text
        assert again.json()["assets"][0]["cache_hit"] is True
        job = c.post("/v1/jobs", json={"prompt": "dashboard job", "duration_s": 0.5}).json()
        deadline = time.monotonic() + 120
        while job["state"] not in ("succeeded", "failed") and time.monotonic() < deadline:
            time.sleep(0.1)
            job = c.get(f"/v1/jobs/{job['job_id']}").json()
        assert job["state"] == "succeeded", job
        assert httpx.post(f"{server.url}/v1/generate", json=request, timeout=60).status_code == 401
        text = httpx.get(f"{server.url}/metrics", timeout=60).text
    samples: dict[str, list[dict[str, str]]] = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample.labels)
            types[sample.name] = family.type
    return {"samples": samples, "types": types}


def expressions(dashboard: dict[str, Any], rule_groups: list[dict[str, Any]]) -> list[tuple[str, str]]:
    out = [(f"panel {p['title']!r}", t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]
    out += [(f"rule {r.get('record') or r.get('alert')}", r["expr"]) for g in rule_groups for r in g["rules"]]
    return out


def test_every_queried_metric_is_exported(scrape, dashboard, rule_groups) -> None:
    samples, types = scrape["samples"], scrape["types"]
    recorded = {r["record"] for g in rule_groups for r in g["rules"] if "record" in r}
    checked = set()
    exprs = expressions(dashboard, rule_groups)
    assert len(exprs) >= 25
    for where, expr in exprs:
        for name, matchers in selectors(expr):
            if name in recorded:
                assert not matchers, f"{where}: matchers on recording rule {name}"
                continue
            assert name in samples, f"{where}: {name} is not in the /metrics scrape"
            if name.endswith("_bucket") or "histogram_quantile" in expr:
                assert types[name] == "histogram" and name.endswith("_bucket") == ("histogram_quantile" in expr), \
                    f"{where}: {name}"
            for label, op, value in matchers:
                values = {labels[label] for labels in samples[name] if label in labels}
                assert values, f"{where}: {name} has no label {label!r}"
                if op in ("=", "=~") and (label, value) not in EVENTUAL:
                    assert any(re.fullmatch(value, v) for v in values), f"{where}: no {name}{{{label}{op}{value!r}}}"
            checked.add(name)
    # the metrics the issue names are all queried
    assert {"musicops_http_request_duration_seconds_bucket", "musicops_http_request_duration_seconds_count",
            "musicops_generated_audio_seconds_total", "musicops_queue_depth", "musicops_cache_lookups_total",
            "musicops_replica_seconds_total", "musicops_errors_total", "musicops_jobs_total"} <= checked


def test_histogram_quantiles_group_by_le(dashboard, rule_groups) -> None:
    quantiles = [e for _, e in expressions(dashboard, rule_groups) if "histogram_quantile" in e]
    assert quantiles and all(re.search(r"by \(le\b", e) for e in quantiles), quantiles


def _panel(dashboard: dict[str, Any], word: str) -> list[str]:
    matches = [p for p in dashboard["panels"] if word in p["title"].lower()]
    assert matches, f"no panel titled with {word!r}"
    return [t["expr"] for p in matches for t in p["targets"]]


def test_required_panels(dashboard) -> None:
    latency = " ".join(_panel(dashboard, "latency p50"))
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (le) (rate(musicops_http_request_duration_seconds_bucket" in latency
    assert any("rate(musicops_generated_audio_seconds_total" in e for e in _panel(dashboard, "throughput"))
    assert any("musicops_queue_depth" in e for e in _panel(dashboard, "queue depth"))
    failure = _panel(dashboard, "failure rate")
    assert any('status=~"5.."' in e and " / " in e for e in failure)
    assert any('state="failed"' in e for e in failure)
    assert any('result="hit"' in e and " / " in e for e in _panel(dashboard, "cache hit rate"))
    (cost, *_) = _panel(dashboard, "cost per generated minute")
    assert "musicops_replica_seconds_total" in cost and "$replica_cost_per_hour" in cost
    assert "musicops_generated_audio_seconds_total" in cost.split(" / (", 1)[1]  # per generated minute
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert float(variables["replica_cost_per_hour"]["query"]) >= 0
    assert all(p["datasource"]["uid"] == "${datasource}" for p in dashboard["panels"])
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_alerts_cover_each_signal(rule_groups) -> None:
    rules = [r for g in rule_groups for r in g["rules"]]
    records = {r["record"]: r["expr"] for r in rules if "record" in r}
    alerts = {r["alert"]: r["expr"] for r in rules if "alert" in r}

    def covered(text: str) -> bool:
        return any(text in e or any(text in records.get(n, "") for n, _ in selectors(e)) for e in alerts.values())

    for q in ("0.99", "0.95", "0.50"):
        assert covered(f"histogram_quantile({q},"), q
    for signal in ('status=~"5.."', 'queue="jobs"', "musicops_generated_audio_seconds_total", 'result="hit"',
                   "musicops_replica_seconds_total", 'state="failed"'):
        assert covered(signal), signal
    assert "scalar(musicops:replica_cost_per_hour)" in records["musicops:cost_per_generated_minute:1h"]

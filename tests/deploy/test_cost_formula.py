"""Cost per generated minute: the formula of the dashboard panel and of the recording rule, and the
counter it prices (`musicops_replica_seconds_total`).

The PromQL is evaluated for a known hour by replacing each `sum(rate(X[w]))` with X's rate and the
price variable or rule with the price; what is left must be plain arithmetic.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

# An hour of 3 replicas (3 replica-seconds per second) that generated 45 minutes of audio and
# decoded for 30 minutes in all, at 2.0 per replica-hour: 6.0 / 45 min, busy floor 1.0 / 45 min.
RATES = {"musicops_replica_seconds_total": 3.0, "musicops_generated_audio_seconds_total": 45 * 60 / 3600,
         "musicops_generation_seconds_sum": 30 * 60 / 3600}
PRICE = 2.0


def evaluate(expr: str) -> float:
    text = expr.replace("$replica_cost_per_hour", repr(PRICE))
    text = text.replace("scalar(musicops:replica_cost_per_hour)", repr(PRICE))
    text = re.sub(r"sum\(rate\((\w+)\[[^\]]*\]\)\)", lambda m: repr(RATES[m.group(1)]), text)
    assert re.fullmatch(r"[\d.\s()*/+-]+", text), f"not reduced to arithmetic: {text}"
    return float(eval(" ".join(text.split())))  # digits, dots, parentheses and operators only (checked above)


def test_dashboard_cost_panel(dashboard: dict[str, Any]) -> None:
    (panel,) = [p for p in dashboard["panels"] if p["title"] == "Cost per generated minute"]
    replica, busy = (t["expr"] for t in panel["targets"])
    assert evaluate(replica) == pytest.approx(6.0 / 45)
    assert evaluate(busy) == pytest.approx(1.0 / 45)


def test_cost_recording_rule(rule_groups: list[dict[str, Any]]) -> None:
    rules = {r.get("record"): r["expr"] for g in rule_groups for r in g["rules"]}
    assert evaluate(rules["musicops:cost_per_generated_minute:1h"]) == pytest.approx(6.0 / 45)
    assert rules["musicops:replica_cost_per_hour"] == "vector(2.0)"


def test_replica_seconds_counts_the_time_since_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client import generate_latest

    from musicops.serving import metrics as module

    clock = [1000.0]
    monkeypatch.setattr(module.time, "monotonic", lambda: clock[0])
    registry = module.ServerMetrics().registry

    def value() -> float:
        (line,) = [ln for ln in generate_latest(registry).decode().splitlines()
                   if ln.startswith("musicops_replica_seconds_total ")]
        return float(line.split()[1])

    assert value() == 0.0
    clock[0] += 90.5
    assert value() == 90.5
    assert "# TYPE musicops_replica_seconds_total counter" in generate_latest(registry).decode()


def test_metrics_carry_long_buckets_process_series_and_cost_per_generated_minute(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Real-size clips take minutes: latency buckets reach 30 min; /metrics itself has process CPU and
    memory and this replica's cost per generated minute (price x up-time or decode time / audio minutes)."""
    from prometheus_client import generate_latest

    from musicops.serving import metrics as module

    clock = [500.0]
    monkeypatch.setattr(module.time, "monotonic", lambda: clock[0])
    server = module.ServerMetrics(price_per_hour=3.6)

    def scrape() -> dict[str, float]:
        lines = [ln for ln in generate_latest(server.registry).decode().splitlines() if not ln.startswith("#")]
        return {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1]) for ln in lines}

    before = scrape()
    assert before["musicops_cost_per_generated_minute"] == 0.0  # no audio yet: no rate, not infinity
    assert before["process_cpu_seconds_total"] >= 0 and before["process_resident_memory_bytes"] > 0
    assert 'musicops_http_request_duration_seconds_bucket{le="1800.0",method="POST",route="/x",status="200"}' \
        not in before  # no request yet
    server.request_latency.labels("POST", "/x", "200").observe(400.0)
    server.generation_seconds.labels("1").observe(30.0)
    server.generated_audio_seconds.inc(120.0)  # two minutes of audio
    clock[0] += 3600.0  # one hour up
    after = scrape()
    assert after['musicops_http_request_duration_seconds_bucket{le="300.0",method="POST",route="/x",status="200"}'] == 0
    assert after['musicops_http_request_duration_seconds_bucket{le="600.0",method="POST",route="/x",status="200"}'] == 1
    assert after["musicops_cost_per_generated_minute"] == pytest.approx(3.6 / 2)
    assert after["musicops_cost_per_generated_minute_busy"] == pytest.approx(3.6 * 30 / 3600 / 2)
    assert after["musicops_price_per_hour"] == 3.6

"""Rendering deploy/kustomize with `kubectl kustomize` (Debian's kubernetes-client; `make kubectl`).

The manifest tests are in the slow tier (make test-fast needs nothing beyond the install). Without
kubectl they skip, except where the full tier runs them (`make test` sets
MUSICOPS_REQUIRE_POSTGRES=1 and installs kubectl first), with MUSICOPS_REQUIRE_KUBECTL=1, or in CI:
there a missing kubectl fails them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
KUSTOMIZE = REPO / "deploy" / "kustomize"
OVERLAYS = ("dev", "production", "kserve")
MONITORING = KUSTOMIZE / "base" / "monitoring"


def _kubectl_required() -> bool:
    return any(os.environ.get(name) == "1" for name in ("MUSICOPS_REQUIRE_KUBECTL", "MUSICOPS_REQUIRE_POSTGRES")) \
        or bool(os.environ.get("CI"))


@pytest.fixture(scope="session")
def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        message = "kubectl is not installed (make kubectl installs Debian's kubernetes-client)"
        if _kubectl_required():
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="session")
def rendered(kubectl: str) -> dict[str, list[dict[str, Any]]]:
    """Every overlay rendered by `kubectl kustomize`: overlay name -> its documents."""
    out: dict[str, list[dict[str, Any]]] = {}
    for overlay in OVERLAYS:
        result = subprocess.run([kubectl, "kustomize", str(KUSTOMIZE / "overlays" / overlay)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"kubectl kustomize overlays/{overlay} failed:\n{result.stderr}"
        out[overlay] = [d for d in yaml.safe_load_all(result.stdout) if d]
    return out


@pytest.fixture(scope="session")
def rule_groups() -> list[dict[str, Any]]:
    """The rule groups of the base PrometheusRule (overlays only patch the price)."""
    rule = yaml.safe_load((MONITORING / "prometheus-rules.yaml").read_text())
    assert rule["kind"] == "PrometheusRule"
    return rule["spec"]["groups"]


@pytest.fixture(scope="session")
def dashboard() -> dict[str, Any]:
    import json

    return json.loads((MONITORING / "musicops-dashboard.json").read_text())

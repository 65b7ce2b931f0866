"""deploy/kustomize: every overlay rendered by `kubectl kustomize` and validated offline.

Built-in kinds are validated with kubernetes-validate against the Kubernetes KUBERNETES_VERSION
OpenAPI schemas in strict mode (unknown fields are errors). Custom resources have no schema there
(InferenceService from KServe, PrometheusRule / ServiceMonitor / PodMonitor from the Prometheus
Operator): for those the tests check apiVersion and kind against the ones these manifests target,
metadata, and the structure the controllers read (rule groups with one record or alert and an
expr each; monitors that select the Service or pods that exist, by a port that exists; the
InferenceService container held to the same probe, resource and secret rules as the Deployments).
Nothing here talks to a cluster.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from kubernetes_validate.utils import SchemaNotFoundError
from kubernetes_validate.utils import ValidationError as SchemaError

pytestmark = pytest.mark.slow  # needs kubectl (make kubectl), like FluidSynth or PostgreSQL elsewhere

REPO = Path(__file__).resolve().parents[2]
OVERLAYS = ("dev", "production", "kserve")  # as in conftest.py
KUBERNETES_VERSION = "1.32"  # the kubectl Debian packages (kubernetes-client 1.32)
CUSTOM_KINDS = {("serving.kserve.io/v1beta1", "InferenceService"), ("monitoring.coreos.com/v1", "PrometheusRule"),
                ("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PodMonitor")}
WORKLOADS = ("Deployment", "StatefulSet")
# Secret name -> the keys the manifests read; docs/deploy.md must create each with these keys.
SECRETS = {"musicops-postgres": {"POSTGRES_PASSWORD"},
           "musicops-serving": {"MUSICOPS_SERVE_SECRET", "MUSICOPS_DATABASE_URL", "MUSICOPS_SERVING_DATABASE_URL"},
           "musicops-mlflow": {"MLFLOW_BACKEND_STORE_URI"},
           "musicops-mos": {"MUSICOPS_MOS_SECRET", "MUSICOPS_MOS_DATABASE_URL", "MUSICOPS_MOS_ADMIN_TOKEN"},
           "musicops-s3": {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}}
SENSITIVE = re.compile(r"SECRET|PASSWORD|TOKEN|DATABASE_URL|BACKEND_STORE_URI|ACCESS_KEY")


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(kind/name, pod spec) of every workload, the InferenceService predictor included."""
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in WORKLOADS:
            yield name, doc["spec"]["template"]["spec"]
        elif doc["kind"] == "InferenceService":
            yield name, doc["spec"]["predictor"]


def containers(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, spec in pod_specs(docs):
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            yield f"{name}/{c['name']}", c


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def check_custom(doc: dict[str, Any], docs: list[dict[str, Any]]) -> None:
    kind, meta = doc["kind"], doc["metadata"]
    assert (doc["apiVersion"], kind) in CUSTOM_KINDS, f"no schema and not a known custom kind: {doc['apiVersion']} {kind}"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", meta["name"]) and meta.get("namespace")
    if kind == "PrometheusRule":
        groups = doc["spec"]["groups"]
        assert groups and len({g["name"] for g in groups}) == len(groups)
        for group in groups:
            for rule in group["rules"]:
                assert ("record" in rule) != ("alert" in rule), rule
                assert isinstance(rule["expr"], str) and rule["expr"].strip(), rule
                assert rule["expr"].count("(") == rule["expr"].count(")"), rule
                assert set(rule) <= {"record", "alert", "expr", "for", "labels", "annotations"}, rule
                if "alert" in rule:
                    assert rule["labels"]["severity"] in ("info", "warning", "critical"), rule
                    assert rule["annotations"]["summary"], rule
    elif kind == "ServiceMonitor":
        selector = doc["spec"]["selector"]["matchLabels"]
        services = [s for s in find(docs, "Service") if selector.items() <= s["metadata"]["labels"].items()]
        assert services, f"ServiceMonitor {meta['name']} selects no Service"
        for endpoint in doc["spec"]["endpoints"]:
            assert all(endpoint["port"] in {p.get("name") for p in s["spec"]["ports"]} for s in services), endpoint
    elif kind == "PodMonitor":
        selector = doc["spec"]["selector"]["matchLabels"]
        # KServe labels predictor pods serving.kserve.io/inferenceservice=<name>
        (isvc,) = find(docs, "InferenceService")
        assert selector == {"serving.kserve.io/inferenceservice": isvc["metadata"]["name"]}
        ports = {p.get("name") for c in isvc["spec"]["predictor"]["containers"] for p in c.get("ports", [])}
        assert all(e["port"] in ports for e in doc["spec"]["podMetricsEndpoints"])
    elif kind == "InferenceService":
        predictor = doc["spec"]["predictor"]
        assert doc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
        assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]
        assert predictor["containers"][0]["name"] == "kserve-container"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_against_kubernetes_schemas(rendered, overlay) -> None:
    docs = rendered[overlay]
    validated, custom = [], []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            validated.append(doc["kind"])
        except SchemaNotFoundError:
            check_custom(doc, docs)
            custom.append(doc["kind"])
        except SchemaError as exc:
            pytest.fail(f"{overlay}: {doc['kind']}/{doc['metadata']['name']} at {list(exc.path)}: {exc.message}")
    assert {"Deployment", "StatefulSet", "Service", "ConfigMap", "Namespace"} <= set(validated)
    assert "PrometheusRule" in custom
    namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
    assert namespaces == {find(docs, "Namespace")[0]["metadata"]["name"]}, namespaces


def test_strict_validation_rejects_a_misspelt_field(rendered) -> None:
    """The negative control: the validator in strict mode does catch what the test relies on it for."""
    (serve,) = find(rendered["production"], "Deployment", "musicops-serve")
    broken = copy.deepcopy(serve)
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/readyz", "port": 1}}
    with pytest.raises(SchemaError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    with pytest.raises(SchemaNotFoundError):
        kubernetes_validate.validate(find(rendered["production"], "PrometheusRule")[0], KUBERNETES_VERSION)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_probes_and_resources(rendered, overlay) -> None:
    found = list(containers(rendered[overlay]))
    assert len(found) >= 4  # postgres, mlflow, serving, mos
    for name, c in found:
        assert c.get("readinessProbe") and c.get("livenessProbe"), f"{name}: probes"
        requests, limits = c["resources"]["requests"], c["resources"]["limits"]
        assert {"cpu", "memory"} <= set(requests) and "memory" in limits, f"{name}: resources"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_stack_is_there(rendered, overlay) -> None:
    docs = rendered[overlay]
    assert find(docs, "StatefulSet", "postgres") and find(docs, "Deployment", "mlflow")
    assert find(docs, "Deployment", "musicops-mos")
    assert find(docs, "ConfigMap", "musicops-grafana-dashboard")[0]["metadata"]["labels"]["grafana_dashboard"] == "1"
    serving = find(docs, "Deployment", "musicops-serve") + find(docs, "InferenceService")
    assert len(serving) == 1, "exactly one way to run the server per overlay"
    if overlay == "kserve":
        assert find(docs, "InferenceService") and not find(docs, "HorizontalPodAutoscaler")
    # the serving database and provenance are PostgreSQL in every overlay: replicas share one queue
    for name, c in containers([serving[0]]):
        env = {e["name"]: e for e in c.get("env", [])}
        for var in ("MUSICOPS_SERVING_DATABASE_URL", "MUSICOPS_DATABASE_URL", "MUSICOPS_SERVE_SECRET"):
            assert env[var]["valueFrom"]["secretKeyRef"]["name"] == "musicops-serving", f"{name}: {var}"
        assert "fieldRef" in env["MUSICOPS_REPLICA_ID"]["valueFrom"]


@pytest.mark.parametrize("overlay", ["dev", "production"])
def test_hpa_scales_serving_on_queue_depth(rendered, overlay) -> None:
    docs = rendered[overlay]
    (hpa,) = find(docs, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert find(docs, target["kind"], target["name"]) and target["name"] == "musicops-serve"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    by_type = {m["type"]: m[m["type"].lower()]["metric"] for m in hpa["spec"]["metrics"]}
    assert by_type["External"]["name"] == "musicops_queue_depth"
    assert by_type["External"]["selector"]["matchLabels"] == {"queue": "jobs"}
    assert by_type["Pods"] == {"name": "musicops_queue_depth", "selector": {"matchLabels": {"queue": "model"}}}
    # prometheus-adapter serves that metric under that name, both as a Pods and an External metric
    import yaml

    (adapter,) = find(docs, "ConfigMap", "musicops-prometheus-adapter-rules")
    config = yaml.safe_load(adapter["data"]["config.yaml"])
    for section in ("rules", "externalRules"):
        assert [r["name"]["as"] for r in config[section]] == ["musicops_queue_depth"]
        assert "musicops_queue_depth" in config[section][0]["seriesQuery"]


def test_production_scales_further_than_dev(rendered) -> None:
    def most(overlay: str) -> int:
        return find(rendered[overlay], "HorizontalPodAutoscaler")[0]["spec"]["maxReplicas"]

    assert most("production") > most("dev")
    assert find(rendered["production"], "PodDisruptionBudget", "musicops-serve")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_host_access(rendered, overlay) -> None:
    for name, spec in pod_specs(rendered[overlay]):
        for field in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(field), f"{name}: {field}"
        assert not any("hostPath" in v for v in spec.get("volumes", [])), name
        assert spec.get("securityContext", {}).get("runAsNonRoot"), f"{name}: runAsNonRoot"
    for name, c in containers(rendered[overlay]):
        assert not any("hostPort" in p for p in c.get("ports", [])), name
        assert not c.get("securityContext", {}).get("privileged"), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_are_referenced_never_inlined(rendered, overlay) -> None:
    docs = rendered[overlay]
    assert not find(docs, "Secret"), "Secrets are created with kubectl (docs/deploy.md), not shipped"
    referenced: dict[str, set[str]] = {}
    for name, c in containers(docs):
        for e in c.get("env", []):
            if SENSITIVE.search(e["name"]):
                assert "value" not in e, f"{name}: {e['name']} inlined"
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                referenced.setdefault(ref["name"], set()).add(ref["key"])
        for source in c.get("envFrom", []):
            if "secretRef" in source:
                referenced.setdefault(source["secretRef"]["name"], set())
    for cm in find(docs, "ConfigMap"):
        assert not any(SENSITIVE.search(k) for k in cm.get("data", {})), cm["metadata"]["name"]
        assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", str(cm.get("data"))), "credentials in a URL"
    assert referenced.keys() <= SECRETS.keys() and all(referenced[k] <= SECRETS[k] for k in referenced)
    # every secret a workload reads is documented with the keys it must hold
    guide = (REPO / "docs" / "deploy.md").read_text()
    for secret in referenced:
        command = re.search(rf"kubectl (?:-n \S+ )?create secret generic {secret}\b(.*?)(?:\n\n|```)", guide, re.S)
        assert command, f"docs/deploy.md: no `kubectl create secret generic {secret}`"
        for key in SECRETS[secret]:
            assert f"--from-literal={key}=" in command.group(1), f"docs/deploy.md: {secret} lacks {key}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_config_references_resolve(rendered, overlay) -> None:
    """kustomize appends a hash to generated ConfigMaps: every reference (the InferenceService's too,
    through overlays/kserve/kserve-name-references.yaml) must carry it."""
    docs = rendered[overlay]
    names = {cm["metadata"]["name"] for cm in find(docs, "ConfigMap")}
    seen = 0
    for name, c in containers(docs):
        for source in c.get("envFrom", []):
            if "configMapRef" in source:
                seen += 1
                assert source["configMapRef"]["name"] in names, f"{name}: {source}"
    for name, spec in pod_specs(docs):
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                seen += 1
                assert volume["configMap"]["name"] in names, f"{name}: {volume}"
    assert seen >= 4


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_servers_bind_all_interfaces_only_inside_pods(rendered, overlay) -> None:
    for fn in (importlib.import_module("musicops.cli.serve").serve, importlib.import_module("musicops.cli.mos").serve):  # outside a pod: loopback unless told otherwise
        assert inspect.signature(fn).parameters["host"].default.default == "127.0.0.1"
    servers = 0
    for name, c in containers(rendered[overlay]):
        args = [*c.get("command", []), *c.get("args", [])]
        if args[:1] == ["serve"] or args[:2] == ["mos", "serve"] or args[:2] == ["mlflow", "server"]:
            servers += 1
            assert "--host=0.0.0.0" in args, f"{name}: {args}"
    assert servers == 3


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_price_rule_survives_the_overlay_patch(rendered, overlay) -> None:
    """Overlays patch the price by position: it must still be the price rule, with a number."""
    (rule,) = find(rendered[overlay], "PrometheusRule")
    first = rule["spec"]["groups"][0]["rules"][0]
    assert first["record"] == "musicops:replica_cost_per_hour"
    assert re.fullmatch(r"vector\(\d+(\.\d+)?\)", first["expr"])


def test_kserve_overlay_is_the_only_place_for_inference_service() -> None:
    assert not (REPO / "deploy" / "kserve.yaml").exists()
    assert sorted(p.name for p in (REPO / "deploy" / "kustomize" / "overlays").iterdir()) == sorted(OVERLAYS)
    assert "deploy/kustomize" in (REPO / "docs" / "serving.md").read_text()
    assert Path(REPO / "docs" / "deploy.md").exists()

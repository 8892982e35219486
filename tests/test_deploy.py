"""The container, compose file, Kubernetes manifests, alert rules and dashboard are valid and agree
with the code (metric names, setting names, ports, drain deadline)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics_core import Metric

from connector.config import known_env_names
from connector.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def exposed_names() -> set[str]:
    """Every sample name the connector can expose (counters end in _total, histograms in _bucket...)."""
    names = set()
    family: Metric
    for family in Metrics().registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        names.update(family.name + s for s in suffixes)
    return names


def metric_names_in(expr: str) -> set[str]:
    return set(re.findall(r"\bconnector_[a-z_]+\b", expr))


def manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def by_kind(kind: str) -> dict[str, Any]:
    return next(d for d in manifests() if d["kind"] == kind)


def test_builtin_kubernetes_objects_pass_schema_validation() -> None:
    """Every built-in kind validates strictly against the Kubernetes schemas (kubernetes-validate)."""
    import kubernetes_validate

    version = kubernetes_validate.utils.latest_version()
    checked = 0
    for doc in manifests():
        if doc["apiVersion"].startswith("keda.sh/"):
            continue
        kubernetes_validate.validate(doc, version, strict=True)
        checked += 1
    assert checked >= 5


def test_deployment_probes_ports_and_grace_match_the_service() -> None:
    """Readiness /readyz, liveness /healthz on the metrics port; termination grace covers the drain."""
    deployment = by_kind("Deployment")
    config = by_kind("ConfigMap")["data"]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["ports"][0]["containerPort"] == int(config["CONNECTOR_METRICS__PORT"])
    assert pod["terminationGracePeriodSeconds"] >= float(config["CONNECTOR_SHUTDOWN_GRACE_SECONDS"]) + 10
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert by_kind("PodDisruptionBudget")["spec"]["selector"] == deployment["spec"]["selector"]


def test_configuration_names_in_every_asset_are_real_settings() -> None:
    """No typo in CONNECTOR_* names: the connector would refuse to start on one."""
    known = known_env_names()
    names = set(by_kind("ConfigMap")["data"]) | set(by_kind("Secret")["stringData"])
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    names |= set(compose["services"]["connector"]["environment"])
    assert names <= known, names - known


def test_keda_autoscaler_targets_the_group_and_caps_at_partitions() -> None:
    """The ScaledObject scales the Deployment on the group's lag, capped, without idle consumers."""
    scaled = by_kind("ScaledObject")
    config = by_kind("ConfigMap")["data"]
    trigger = scaled["spec"]["triggers"][0]
    assert scaled["spec"]["scaleTargetRef"]["name"] == by_kind("Deployment")["metadata"]["name"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == config["CONNECTOR_KAFKA__GROUP_ID"]
    assert trigger["metadata"]["topic"] == config["CONNECTOR_KAFKA__TOPICS"]
    assert trigger["metadata"]["allowIdleConsumers"] == "false"
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]


def test_alert_rules_are_valid_and_name_real_metrics() -> None:
    """promtool accepts the rules (when installed); each rule is complete; every metric exists."""
    path = DEPLOY / "prometheus" / "alerts.yaml"
    if shutil.which("promtool"):
        subprocess.run(["promtool", "check", "rules", str(path)], check=True, capture_output=True)
    rules = [r for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} >= {
        "OrdersConnectorOldestUnsyncedEvent", "OrdersConnectorDeadLetters", "OrdersConnectorCircuitOpen",
        "OrdersConnectorLagGrowing",
    }  # fmt: skip
    names = exposed_names()
    for rule in rules:
        assert {"expr", "for", "labels", "annotations"} <= rule.keys()
        assert metric_names_in(rule["expr"]) <= names, rule["alert"]


def test_dashboard_panels_name_real_metrics() -> None:
    """Every Grafana panel queries metrics the connector exposes."""
    dashboard = json.loads((DEPLOY / "grafana" / "dashboard.json").read_text())
    names = exposed_names()
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 15
    for expr in exprs:
        assert metric_names_in(expr) <= names, expr


def test_compose_file_is_valid() -> None:
    """docker-compose accepts the file (when installed); it runs broker, sandbox, connector, producer."""
    path = ROOT / "docker-compose.yml"
    tool = shutil.which("docker-compose")
    if tool:
        subprocess.run([tool, "-f", str(path), "config", "-q"], check=True, capture_output=True)
    services = yaml.safe_load(path.read_text())["services"]
    assert set(services) == {"kafka", "sandbox", "connector", "producer"}
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["connector"]["depends_on"]["kafka"]["condition"] == "service_healthy"


@pytest.mark.parametrize(
    "line",
    [r"^FROM python:3\.\d+-slim AS build$", r"^USER 10001$", r"^STOPSIGNAL SIGTERM$",
     r'^HEALTHCHECK .*CMD \["connector", "check"\]$', r'^ENTRYPOINT \["connector"\]$', r'^CMD \["run"\]$'],
)  # fmt: skip
def test_dockerfile_is_multi_stage_non_root_with_health_check(line: str) -> None:
    """The image: multi-stage build, non-root user, SIGTERM, `connector check` health check."""
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(line, text, re.M)
    assert text.count("\nFROM ") + text.startswith("FROM ") >= 2

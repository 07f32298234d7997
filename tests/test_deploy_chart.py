"""deploy/chart, rudder's own Helm chart, rendered by Helm's engine: with default values it is
exactly deploy/*.yaml (the namespace aside: `helm install --create-namespace` makes it), and
its values switch tenant mode and the ServiceMonitor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python
import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
NAMESPACE = "rudder-system"


def rendered(values: dict[str, Any] | None = None) -> dict[tuple[str, str], dict[str, Any]]:
    chart = helm_python.Chart.load(str(DEPLOY / "chart"))
    files = chart.render(values or {}, name="rudder", namespace=NAMESPACE, is_install=True)
    objects = [
        doc
        for path, text in files.items()
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def deploy_files() -> dict[tuple[str, str], dict[str, Any]]:
    objects = [
        doc
        for path in sorted(DEPLOY.glob("*.yaml"))
        if path.name not in ("00-namespace.yaml", "01-crd.yaml")
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def test_the_chart_with_default_values_is_deploy() -> None:
    assert rendered() == deploy_files()


def test_the_chart_ships_the_crd_deploy_applies() -> None:
    chart = helm_python.Chart.load(str(DEPLOY / "chart"))
    [crd] = chart.crds
    assert yaml.safe_load(crd["data"] if isinstance(crd, dict) else crd) == yaml.safe_load(
        (DEPLOY / "01-crd.yaml").read_text()
    )


def test_tenant_mode_drops_the_apply_any_rights_and_sets_the_flags() -> None:
    objects = rendered({"tenantMode": {"enabled": True}})
    assert ("ClusterRoleBinding", "rudder-apply-any") not in objects
    assert ("ClusterRole", "rudder-apply-any") not in objects
    args = objects["Deployment", "rudder"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--default-service-account=deployer" in args
    assert "--no-cross-namespace-refs" in args


def test_a_service_monitor_when_asked() -> None:
    assert not any(kind == "ServiceMonitor" for kind, _ in rendered())
    monitor = rendered({"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}})[
        "ServiceMonitor", "rudder"
    ]
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "interval": "30s"}]

"""Small helpers shared by the end-to-end tests: applying HelmReleases and waiting on them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from conftest import Cluster


def unique(prefix: str) -> str:
    """A namespace name of its own per run, so reruns against a reused cluster stay clean."""
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def helmrelease(name: str, namespace: str, spec: Mapping[str, Any]) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "rudder.dev/v1alpha1",
            "kind": "HelmRelease",
            "metadata": {"name": name, "namespace": namespace},
            "spec": dict(spec),
        }
    )


def apply_helmrelease(cluster: Cluster, name: str, namespace: str, spec: Mapping[str, Any]) -> None:
    cluster.kubectl("create", "namespace", namespace, check=False)
    cluster.kubectl("apply", "-f", "-", input=helmrelease(name, namespace, spec))


def get_json(cluster: Cluster, *args: str) -> dict[str, Any]:
    result = cluster.kubectl("get", *args, "-o", "json", check=False)
    if result.returncode != 0:
        return {}
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


def condition(obj: Mapping[str, Any], type_: str) -> dict[str, Any]:
    for entry in obj.get("status", {}).get("conditions", []):
        if entry.get("type") == type_:
            return dict(entry)
    return {}


def wait_for(
    probe: Callable[[], Any], *, timeout: float = 60, interval: float = 0.5, what: str = ""
) -> Any:
    """Poll `probe` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or probe}; last: {last}")


def wait_for_condition(
    cluster: Cluster,
    namespace: str,
    name: str,
    type_: str,
    *,
    status: str = "True",
    reason: str | None = None,
    generation: bool = True,
    timeout: float = 60,
) -> dict[str, Any]:
    """The HelmRelease once `type_` has `status` (and `reason`) for its current generation."""

    def probe() -> dict[str, Any] | None:
        obj = get_json(cluster, "helmrelease", name, "-n", namespace)
        found = condition(obj, type_)
        if found.get("status") != status or (reason and found.get("reason") != reason):
            return None
        current = obj.get("metadata", {}).get("generation")
        if generation and obj.get("status", {}).get("observedGeneration") != current:
            return None
        return obj

    result: dict[str, Any] = wait_for(
        probe, timeout=timeout, what=f"{namespace}/{name} {type_}={status} {reason or ''}"
    )
    return result


def release_secrets(cluster: Cluster, namespace: str, release: str) -> list[dict[str, Any]]:
    listed = get_json(cluster, "secrets", "-n", namespace, "-l", f"owner=helm,name={release}")
    items: list[dict[str, Any]] = listed.get("items", [])
    return sorted(items, key=lambda s: int(s["metadata"]["labels"]["version"]))


def rudder_cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    """The `rudder` command line as a user runs it, with the cluster's admin kubeconfig."""
    return subprocess.run(
        [sys.executable, "-m", "rudder", *args, f"--kubeconfig={cluster.kubeconfig}"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )

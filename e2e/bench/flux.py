"""Flux beside rudder for `bench_releases.py --flux`: Flux's helm-controller and
source-controller, built from their Go modules at the versions pinned in e2e/versions.env
(`e2e/build-tools.sh flux`), run as local processes against the bench's control plane.

Each controller authenticates with a TokenRequest token of a ServiceAccount of its own
(flux-system/helm-controller, flux-system/source-controller), so the audit log tells their
requests apart from rudder's and from each other's. Both are bound to cluster-admin: Flux's
own install does that for helm-controller and gives source-controller a narrower role; the
authorizer's answer costs no request either way.

Per release the scenario applies one OCIRepository (the bench chart in the local registry
over plain HTTP, pinned by the digest rudder's HelmReleases use, the chart layer copied as
is) and one HelmRelease (helm.toolkit.fluxcd.io/v2) whose chartRef names it, with the same
values, interval and timeout as rudder's HelmRelease. The CRDs are read at run time from the
modules' own config/crd/bases in the Go module cache (nothing of Flux's is in this repo).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from localcluster import CACHE, REPO, TOOLS, free_port
from operator_process import service_account_kubeconfig

NAMESPACE = "flux-system"
CONTROLLERS = ("source-controller", "helm-controller")
USERS = {name: f"system:serviceaccount:{NAMESPACE}:{name}" for name in CONTROLLERS}
MODULES = {
    "helm-controller": ("github.com/fluxcd/helm-controller", "FLUX_HELM_CONTROLLER_VERSION"),
    "source-controller": (
        "github.com/fluxcd/source-controller",
        "FLUX_SOURCE_CONTROLLER_VERSION",
    ),
}
HELMRELEASE_RESOURCE = "helmreleases.helm.toolkit.fluxcd.io"
CHART_LAYER = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
# What Flux's own Deployments pass (config/manager/deployment.yaml of each module), less
# leader election (one replica, as rudder runs here) and the events address (no
# notification-controller): concurrency and the client's QPS/burst stay the controllers'
# defaults (and the QPS limiter is off anyway when the API server has priority and fairness).
COMMON_ARGS = ("--watch-all-namespaces", "--log-level=info", "--log-encoding=json")


def versions() -> dict[str, str]:
    """The pinned versions of both controllers, from e2e/versions.env."""
    pinned: dict[str, str] = {}
    for line in (REPO / "e2e" / "versions.env").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            pinned[key.strip()] = value.strip()
    return {name: pinned[key] for name, (_, key) in MODULES.items()}


def build() -> None:
    """`e2e/build-tools.sh flux`: builds both on the first run, only re-links afterwards."""
    subprocess.run(["bash", str(REPO / "e2e" / "build-tools.sh"), "flux"], check=True)


def module_dir(module: str, version: str, workdir: Path) -> Path:
    """The module's source in the Go module cache build-tools.sh uses (downloaded if the
    cache was cleaned since the build)."""
    env = {**os.environ, "GOMODCACHE": str(CACHE / "go" / "mod"), "GOFLAGS": "-mod=mod"}
    workdir.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        cwd=workdir,  # outside any module
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return Path(json.loads(out)["Dir"])


def crd_files(workdir: Path) -> list[Path]:
    """Both modules' CRDs (HelmRelease; OCIRepository and the other sources helm-controller
    watches) at the pinned versions."""
    pinned = versions()
    files: list[Path] = []
    for name, (module, _) in MODULES.items():
        bases = module_dir(module, pinned[name], workdir) / "config" / "crd" / "bases"
        files += sorted(bases.glob("*.yaml"))
    return files


def _rbac() -> dict[str, Any]:
    items: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    ]
    for name in CONTROLLERS:
        items.append(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": name, "namespace": NAMESPACE},
            }
        )
        items.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": f"bench-flux-{name}"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "cluster-admin",
                },
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}],
            }
        )
    return {"apiVersion": "v1", "kind": "List", "items": items}


def install(kubectl: Sequence[str], admin_kubeconfig: Path, workdir: Path) -> dict[str, Path]:
    """Apply Flux's CRDs and the controllers' ServiceAccounts; a kubeconfig for each."""

    def run(*args: str, input: str | None = None) -> None:
        subprocess.run([*kubectl, *args], input=input, check=True, capture_output=True, text=True)

    crds = crd_files(workdir / "go")
    for path in crds:
        run("apply", "--server-side", "--force-conflicts", f"--filename={path}")
    names = [f"crd/{yaml.safe_load(path.read_text())['metadata']['name']}" for path in crds]
    run("wait", "--for=condition=Established", "--timeout=60s", *names)
    run("apply", "--server-side", "-f", "-", input=json.dumps(_rbac()))
    return {
        name: service_account_kubeconfig(
            kubectl, admin_kubeconfig, workdir / f"{name}.kubeconfig", (NAMESPACE, name)
        )
        for name in CONTROLLERS
    }


class FluxControllers:
    """Both controllers as local processes, out of cluster (KUBECONFIG), logs in `workdir`."""

    def __init__(
        self,
        workdir: Path,
        kubeconfigs: dict[str, Path],
        helm_concurrent: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.kubeconfigs = kubeconfigs
        self.storage = workdir / "source-controller-storage"
        storage_addr = f"127.0.0.1:{free_port()}"
        self.health_ports = {name: free_port() for name in CONTROLLERS}
        self.args: dict[str, list[str]] = {
            name: [
                *COMMON_ARGS,
                f"--metrics-addr=127.0.0.1:{free_port()}",
                f"--health-addr=127.0.0.1:{self.health_ports[name]}",
            ]
            for name in CONTROLLERS
        }
        # The artifact server: helm-controller downloads each chart from the URL it advertises.
        self.args["source-controller"] += [
            f"--storage-path={self.storage}",
            f"--storage-addr={storage_addr}",
            f"--storage-adv-addr={storage_addr}",
        ]
        if helm_concurrent is not None:
            self.args["helm-controller"].append(f"--concurrent={helm_concurrent}")
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def log_path(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    @property
    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.processes.items()}

    def start(self, timeout: float = 60) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.storage.mkdir(parents=True, exist_ok=True)
        for name in CONTROLLERS:
            env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
            # RUNTIME_NAMESPACE is what Flux's Deployments set from the pod's namespace.
            env.update(KUBECONFIG=str(self.kubeconfigs[name]), RUNTIME_NAMESPACE=NAMESPACE)
            with self.log_path(name).open("ab") as log:
                self.processes[name] = subprocess.Popen(
                    [str(TOOLS / name), *self.args[name]],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    cwd=self.workdir,
                    start_new_session=True,
                )
        deadline = time.monotonic() + timeout
        for name in CONTROLLERS:
            self._wait_ready(name, deadline)

    def _wait_ready(self, name: str, deadline: float) -> None:
        url = f"http://127.0.0.1:{self.health_ports[name]}/readyz"
        while time.monotonic() < deadline:
            if self.processes[name].poll() is not None:
                raise RuntimeError(f"{name} exited:\n{self.tail(name)}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(url, timeout=1) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{name} not ready:\n{self.tail(name)}")

    def stop(self, timeout: float = 15) -> None:
        for proc in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.processes.values():
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.processes.clear()

    def tail(self, name: str, lines: int = 30) -> str:
        try:
            text = self.log_path(name).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def ocirepository(name: str, namespace: str, labels: dict[str, str], chart_ref: str,
                  interval: int) -> dict[str, Any]:  # fmt: skip
    """The chart `oci://host/repo/chart@sha256:...` as an OCIRepository pinned by digest."""
    url, _, digest = chart_ref.partition("@")
    return {
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "OCIRepository",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "interval": f"{interval}s",
            "url": url,
            "ref": {"digest": digest},
            "insecure": True,  # the local registry speaks plain HTTP
            "layerSelector": {"mediaType": CHART_LAYER, "operation": "copy"},
        },
    }


def helmrelease(name: str, namespace: str, labels: dict[str, str], values: dict[str, Any],
                interval: int) -> dict[str, Any]:  # fmt: skip
    """A HelmRelease of the chart in the OCIRepository of the same name."""
    return {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "interval": f"{interval}s",
            "timeout": "5m",
            "chartRef": {"kind": "OCIRepository", "name": name},
            "values": values,
        },
    }

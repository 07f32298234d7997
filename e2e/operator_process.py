"""Run rudder as a real process against the local control plane, as its own ServiceAccount.

The CRD and deploy/'s namespace, ServiceAccount and RBAC are applied with kubectl; the
operator authenticates with a TokenRequest token of `rudder-system/rudder`, never as
cluster admin, so every e2e test also proves deploy/'s RBAC is enough.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import yaml

from localcluster import TOOLS, free_port

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
# Everything in deploy/ but the in-cluster Deployment and Service: here the operator is a
# local process (no container image can be built on the test machine).
RBAC_MANIFESTS = [
    "00-namespace.yaml",
    "01-crd.yaml",
    "02-serviceaccount.yaml",
    "03-rbac.yaml",
    "03-rbac-apply-any.yaml",
]
SERVICE_ACCOUNT = ("rudder-system", "rudder")
# Leader election with a short lease, so a takeover fits in a test.
LEASE_SECONDS = 6
ELECTION = [
    "--leader-elect",
    f"--lease-duration={LEASE_SECONDS}s",
    "--renew-deadline=4s",
    "--retry-period=1s",
]


def install_prerequisites(kubectl: Sequence[str]) -> None:
    for name in RBAC_MANIFESTS:
        subprocess.run(
            [*kubectl, "apply", "--server-side", "--force-conflicts", "-f", str(DEPLOY / name)],
            check=True,
            capture_output=True,
            text=True,
        )
    subprocess.run(
        [
            *kubectl,
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/helmreleases.rudder.dev",
        ],
        check=True,
        capture_output=True,
        text=True,
    )


def service_account_kubeconfig(
    kubectl: Sequence[str],
    admin_kubeconfig: Path,
    out: Path,
    account: tuple[str, str] = SERVICE_ACCOUNT,
) -> Path:
    """A kubeconfig that authenticates as a ServiceAccount (TokenRequest API), by default
    rudder's: `account` is (namespace, name)."""
    namespace, name = account
    token = subprocess.run(
        [*kubectl, "create", "token", name, "-n", namespace, "--duration=24h"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    out.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "local", "cluster": cluster}],
                "users": [{"name": name, "user": {"token": token}}],
                "contexts": [{"name": name, "context": {"cluster": "local", "user": name}}],
                "current-context": name,
            }
        )
    )
    out.chmod(0o600)
    return out


def ca_bytes(admin_kubeconfig: Path) -> bytes:
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    return base64.b64decode(admin["clusters"][0]["cluster"]["certificate-authority-data"])


class OperatorProcess:
    """`python -m rudder run` with its log in `log_path`; start/stop/kill for chaos tests."""

    def __init__(self, kubeconfig: Path, workdir: Path, extra_args: Sequence[str] = ()) -> None:
        self.kubeconfig = kubeconfig
        self.workdir = workdir
        self.extra_args = list(extra_args)
        self.log_path = workdir / "operator.log"
        self.health_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "rudder",
            "run",
            f"--kubeconfig={self.kubeconfig}",
            f"--chart-cache-dir={self.workdir / 'chart-cache'}",
            f"--metrics-addr=127.0.0.1:{self.health_port}",
            "--log-level=debug",
            # Built by e2e/build-tools.sh (component kustomize-wasm).
            f"--kustomize-module={TOOLS / 'kustomize.wasm'}",
            *self.extra_args,
        ]

    def start(self, timeout: float = 30) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        self.process = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=self.workdir,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"rudder exited with {self.process.returncode}:\n{self.tail()}")
            with contextlib.suppress(OSError):
                url = f"http://127.0.0.1:{self.health_port}/healthz"
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return
            time.sleep(0.2)
        raise RuntimeError(f"rudder not healthy after {timeout}s:\n{self.tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def kill(self) -> None:
        """kill -9: what a crash looks like."""
        self.stop(signal.SIGKILL)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

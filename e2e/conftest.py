"""Session fixtures for the end-to-end tests: one real local control plane per test session.

Set RUDDER_E2E_REUSE=1 to run against the cluster `make cluster-up` started (faster while
developing); otherwise the session starts its own in a temporary directory and stops it at
the end. Component logs of a failing test's cluster are attached to its report.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from localcluster import (
    DEFAULT_DIR,
    REGISTRY_PASSWORD,
    REGISTRY_USER,
    TOOLS,
    ClusterState,
    LocalCluster,
    load_state,
)
from operator_process import OperatorProcess, install_prerequisites, service_account_kubeconfig

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
STARTUP_SECONDS: list[float] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for seconds in STARTUP_SECONDS:
        terminalreporter.write_line(f"local control plane started in {seconds:.1f}s")


@dataclass
class Cluster:
    """What a test needs of the running control plane."""

    state: ClusterState
    tools: Path = TOOLS
    auth_user: str = REGISTRY_USER
    auth_password: str = REGISTRY_PASSWORD

    @property
    def kubeconfig(self) -> Path:
        return Path(self.state.kubeconfig)

    @property
    def registry(self) -> str:
        return self.state.registry

    @property
    def auth_registry(self) -> str:
        return self.state.auth_registry

    @property
    def registry_log(self) -> Path:
        return Path(self.state.registry_log)

    @property
    def audit_log(self) -> Path:
        return Path(self.state.audit_log)

    @property
    def logs(self) -> Path:
        return Path(self.state.directory) / "logs"

    def env(self) -> dict[str, str]:
        """Environment for CLIs (kubectl, helm, cosign) aimed at this cluster."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{self.tools}:{env.get('PATH', '')}"
        # Helm and cosign keep state under HOME-derived dirs; keep tests off the user's.
        env.setdefault("HELM_CACHE_HOME", str(Path(self.state.directory) / "helm-cache"))
        env.setdefault("HELM_CONFIG_HOME", str(Path(self.state.directory) / "helm-config"))
        env.setdefault("HELM_DATA_HOME", str(Path(self.state.directory) / "helm-data"))
        return env

    def run(
        self, *argv: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run a tool from the tools directory (or PATH) against this cluster."""
        program = str(self.tools / argv[0]) if (self.tools / argv[0]).exists() else argv[0]
        result = subprocess.run(
            [program, *argv[1:]],
            input=input,
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.run("kubectl", *args, input=input, check=check)

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("helm", *args, check=check)

    def helm3(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("helm3", *args, check=check)


def _alive(state: ClusterState) -> bool:
    try:
        for pid in state.pids.values():
            os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    if os.environ.get("RUDDER_E2E_REUSE") == "1":
        state = load_state(DEFAULT_DIR)
        if state is None or not _alive(state):
            pytest.fail("RUDDER_E2E_REUSE=1 but no running cluster: run `make cluster-up`")
        yield Cluster(state)
        return
    directory = Path(tempfile.mkdtemp(prefix="rudder-e2e-"))
    local = LocalCluster(directory)
    started = time.monotonic()
    state = local.start()
    STARTUP_SECONDS.append(time.monotonic() - started)
    try:
        yield Cluster(state)
    finally:
        local.stop()
        # Keep the component logs as an artifact; drop the rest (etcd data, registry blobs).
        ARTIFACTS.mkdir(exist_ok=True)
        kept = ARTIFACTS / "cluster-logs"
        shutil.rmtree(kept, ignore_errors=True)
        shutil.copytree(local.logs, kept, dirs_exist_ok=True)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def rudder(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """The operator, running for the whole session as its own ServiceAccount."""
    kubectl = [str(cluster.tools / "kubectl"), f"--kubeconfig={cluster.kubeconfig}"]
    install_prerequisites(kubectl)
    workdir = tmp_path_factory.mktemp("rudder")
    kubeconfig = service_account_kubeconfig(kubectl, cluster.kubeconfig, workdir / "kubeconfig")
    process = OperatorProcess(kubeconfig, workdir)
    process.start()
    try:
        yield process
    finally:
        process.stop()
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(process.log_path, ARTIFACTS / "operator.log")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.failed and "cluster" in getattr(item, "fixturenames", ()):
        fixture = item.funcargs.get("cluster") if hasattr(item, "funcargs") else None
        if isinstance(fixture, Cluster):
            report.sections.append(("cluster logs", f"component logs in {fixture.logs}"))
        operator = item.funcargs.get("rudder") if hasattr(item, "funcargs") else None
        if isinstance(operator, OperatorProcess):
            report.sections.append(("operator log (last lines)", operator.tail(60)))
    return report

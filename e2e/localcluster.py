"""A real Kubernetes control plane on loopback, for rudder's tests and demo.

etcd, kube-apiserver (RBAC, service-account keys, client-certificate auth, audit log),
kube-controller-manager, kube-scheduler and kwok with a few fake nodes, plus two OCI
registries (Debian's docker-registry: one open, one behind htpasswd basic auth).
Binaries come from e2e/build-tools.sh ($RUDDER_CACHE/tools).

    python e2e/localcluster.py up [--dir DIR]     # start, print the kubeconfig path, return
    python e2e/localcluster.py down [--dir DIR]   # stop everything started by `up`

Every port is picked free at start and bound to 127.0.0.1. Component logs stay in
DIR/logs so a failing test can show them.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from pki import Pki

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("RUDDER_CACHE", Path.home() / ".cache" / "rudder"))
TOOLS = CACHE / "tools"
DEFAULT_DIR = REPO / ".cluster"
STATE_FILE = "state.json"
FAKE_NODES = 3
REGISTRY_USER = "rudder"
REGISTRY_PASSWORD = "local-registry-password"

# Metadata level records user, verb, resource, name and (as a request URI) dryRun, which is
# what tests and benchmarks count. Reads of leases and events are dropped as noise.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {
            "level": "None",
            "verbs": ["get", "list", "watch"],
            "resources": [{"group": "coordination.k8s.io", "resources": ["leases"]}],
        },
        {"level": "Metadata"},
    ],
}


class ClusterError(RuntimeError):
    """The control plane failed to start; the message names the component and its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tool(name: str) -> Path:
    path = TOOLS / name
    if not path.exists():
        raise ClusterError(f"{path} is missing: run e2e/build-tools.sh first")
    return path


@dataclass
class ClusterState:
    """What `down` and the test fixture need to find a running cluster again."""

    directory: str
    kubeconfig: str
    server: str
    registry: str
    auth_registry: str
    audit_log: str
    registry_log: str
    pids: dict[str, int] = field(default_factory=dict)


def _kubeconfig(server: str, ca: Path, cert: Path, key: Path, user: str) -> str:
    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {"server": server, "certificate-authority-data": b64(ca)},
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)},
                }
            ],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
            "current-context": "local",
        }
    )


@dataclass(frozen=True)
class _Probe:
    """How to tell a component is ready: an HTTP(S) endpoint answering one of `accept_status`."""

    url: str
    context: ssl.SSLContext | None = None
    timeout: float = 30
    accept_status: tuple[int, ...] = (200,)


class LocalCluster:
    """Starts and stops the whole control plane in one directory; `restart` stops and starts
    one component (same ports and flags) for fault-injection tests."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory.resolve()
        self.logs = self.dir / "logs"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.state: ClusterState | None = None
        # What `restart` needs to bring one component back exactly as it was started.
        self._argv: dict[str, list[str]] = {}
        self._probes: dict[str, _Probe] = {}

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> ClusterState:
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.logs.mkdir(parents=True)
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> ClusterState:
        pki = Pki(self.dir / "pki")
        serving = pki.issue("apiserver", "kube-apiserver", server=True)
        admin = pki.issue("admin", "rudder-admin", organization="system:masters")
        manager = pki.issue("controller-manager", "system:kube-controller-manager")
        scheduler = pki.issue("scheduler", "system:kube-scheduler")
        sa = pki.service_account_keys()

        etcd_port, etcd_peer, api_port = free_port(), free_port(), free_port()
        server = f"https://127.0.0.1:{api_port}"
        kubeconfig = self.dir / "admin.kubeconfig"
        kubeconfig.write_text(_kubeconfig(server, pki.ca_cert, admin.cert, admin.key, "admin"))
        for name, pair in (("controller-manager", manager), ("scheduler", scheduler)):
            (self.dir / f"{name}.kubeconfig").write_text(
                _kubeconfig(server, pki.ca_cert, pair.cert, pair.key, name)
            )

        # Registries start first: they need nothing and the apiserver takes longest.
        registry = self._start_registry("registry", htpasswd=False)
        auth_registry = self._start_registry("auth-registry", htpasswd=True)

        self._spawn(
            "etcd",
            [
                str(tool("etcd")),
                "--name=local",
                f"--data-dir={self.dir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-cluster=local=http://127.0.0.1:{etcd_peer}",
                "--listen-metrics-urls=",
                # Tests never need durability; fsync dominates latency on shared disks.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self._probes["etcd"] = _Probe(f"http://127.0.0.1:{etcd_port}/health")
        self._wait_ready("etcd")

        audit_policy = self.dir / "audit-policy.yaml"
        audit_policy.write_text(yaml.safe_dump(AUDIT_POLICY))
        audit_log = self.dir / "audit.log"
        self._spawn(
            "kube-apiserver",
            [
                str(tool("kube-apiserver")),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--tls-cert-file={serving.cert}",
                f"--tls-private-key-file={serving.key}",
                f"--client-ca-file={pki.ca_cert}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={sa.cert}",
                f"--service-account-signing-key-file={sa.key}",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--allow-privileged=true",
                f"--audit-policy-file={audit_policy}",
                f"--audit-log-path={audit_log}",
                "--audit-log-format=json",
                "--audit-log-maxbackup=0",
                "--audit-log-maxsize=0",
                "--audit-log-mode=batch",
                "--audit-log-batch-max-wait=1s",
                "--audit-log-batch-buffer-size=100000",
                "--profiling=false",
                "--v=1",
            ],
        )
        ssl_context = ssl.create_default_context(cafile=str(pki.ca_cert))
        ssl_context.load_cert_chain(str(admin.cert), str(admin.key))
        self._probes["kube-apiserver"] = _Probe(f"{server}/readyz", ssl_context, timeout=90)
        self._wait_ready("kube-apiserver")

        self._spawn(
            "kube-controller-manager",
            [
                str(tool("kube-controller-manager")),
                f"--kubeconfig={self.dir / 'controller-manager.kubeconfig'}",
                f"--authentication-kubeconfig={self.dir / 'controller-manager.kubeconfig'}",
                f"--authorization-kubeconfig={self.dir / 'controller-manager.kubeconfig'}",
                f"--service-account-private-key-file={sa.key}",
                f"--root-ca-file={pki.ca_cert}",
                "--use-service-account-credentials=true",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--cluster-cidr=10.244.0.0/16",
                "--service-cluster-ip-range=10.96.0.0/16",
                # The default client limit (20 requests/s per controller) caps the
                # Deployment controller at ~5 Deployments/s, which every wave of the scale
                # benchmark (rudder's and the helm CLI's alike) waits on; large clusters
                # raise it the same way.
                "--kube-api-qps=200",
                "--kube-api-burst=400",
                "--v=1",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(tool("kube-scheduler")),
                f"--kubeconfig={self.dir / 'scheduler.kubeconfig'}",
                f"--authentication-kubeconfig={self.dir / 'scheduler.kubeconfig'}",
                f"--authorization-kubeconfig={self.dir / 'scheduler.kubeconfig'}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--v=1",
            ],
        )
        self._spawn(
            "kwok",
            [
                str(tool("kwok")),
                f"--kubeconfig={kubeconfig}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--cidr=10.0.0.1/16",
                "--node-ip=10.0.0.1",
                "--node-lease-duration-seconds=40",
                "--server-address=127.0.0.1:0",
                f"--config={REPO / 'e2e' / 'kwok-stages.yaml'}",
            ],
        )

        state = ClusterState(
            directory=str(self.dir),
            kubeconfig=str(kubeconfig),
            server=server,
            registry=registry,
            auth_registry=auth_registry,
            audit_log=str(audit_log),
            registry_log=str(self.logs / "registry.log"),
            pids={name: proc.pid for name, proc in self.processes.items()},
        )
        self.state = state
        (self.dir / STATE_FILE).write_text(json.dumps(asdict(state), indent=2))
        self._create_fake_nodes()
        self._wait_for_default_service_account()
        return state

    def start_registry_only(self) -> str:
        """Just the open registry (for the demo against an existing cluster)."""
        self.logs.mkdir(parents=True, exist_ok=True)
        return self._start_registry("registry", htpasswd=False)

    def stop(self) -> None:
        stop_pids({name: proc.pid for name, proc in self.processes.items()})
        for proc in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.processes.clear()

    # -- one component at a time (fault injection) ---------------------------------------

    def stop_component(self, name: str, sig: int = signal.SIGTERM, grace: float = 10.0) -> None:
        """Stop one component (its whole process group), SIGKILL after `grace` seconds;
        `start_component` brings it back. (kube-apiserver closes its port within a second of
        SIGTERM but its process can linger for longer than that.)"""
        proc = self.processes.pop(name)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def start_component(self, name: str) -> None:
        """Start a stopped component again with the same argv (so the same ports, flags and
        data directory) and wait until it answers its readiness probe."""
        if name in self.processes:
            raise ClusterError(f"{name} is already running")
        self._spawn(name, self._argv[name])
        if name in self._probes:
            self._wait_ready(name)
        if self.state is not None:
            self.state.pids[name] = self.processes[name].pid
            (self.dir / STATE_FILE).write_text(json.dumps(asdict(self.state), indent=2))

    def restart(
        self,
        name: str,
        *,
        down_seconds: float = 0.0,
        sig: int = signal.SIGTERM,
        grace: float = 10.0,
    ) -> None:
        """Stop one component, leave it down for `down_seconds`, start it again."""
        self.stop_component(name, sig, grace)
        time.sleep(down_seconds)
        self.start_component(name)

    # -- pieces --------------------------------------------------------------------------

    def _spawn(self, name: str, argv: Sequence[str]) -> None:
        self._argv[name] = list(argv)
        log = (self.logs / f"{name}.log").open("ab")
        # A session of its own: `down` (another process) can signal the whole group.
        self.processes[name] = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=self.dir,
        )
        log.close()

    def _start_registry(self, name: str, *, htpasswd: bool) -> str:
        port = free_port()
        config: dict[str, object] = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.dir / name)},
                "delete": {"enabled": True},
            },
            "http": {
                "addr": f"127.0.0.1:{port}",
                "headers": {"X-Content-Type-Options": ["nosniff"]},
            },
        }
        if htpasswd:
            password_file = self.dir / f"{name}.htpasswd"
            hashed = subprocess.run(
                ["htpasswd", "-Bbn", REGISTRY_USER, REGISTRY_PASSWORD],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            password_file.write_text(hashed)
            config["auth"] = {"htpasswd": {"realm": "rudder-local", "path": str(password_file)}}
        config_file = self.dir / f"{name}.yaml"
        config_file.write_text(yaml.safe_dump(config))
        self._spawn(name, ["docker-registry", "serve", str(config_file)])
        self._probes[name] = _Probe(f"http://127.0.0.1:{port}/v2/", accept_status=(200, 401))
        self._wait_ready(name)
        return f"127.0.0.1:{port}"

    def _wait_ready(self, component: str) -> None:
        probe = self._probes[component]
        self._wait_http(
            probe.url,
            component,
            probe.context,
            timeout=probe.timeout,
            accept_status=probe.accept_status,
        )

    def _wait_http(
        self,
        url: str,
        component: str,
        context: ssl.SSLContext | None = None,
        *,
        timeout: float = 30,
        accept_status: tuple[int, ...] = (200,),
    ) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            proc = self.processes[component]
            if proc.poll() is not None:
                raise ClusterError(
                    f"{component} exited with {proc.returncode}; see {self.logs / component}.log:\n"
                    + tail(self.logs / f"{component}.log")
                )
            try:
                with urllib.request.urlopen(url, context=context, timeout=2) as response:  # noqa: S310
                    if response.status in accept_status:
                        return
            except urllib.error.HTTPError as error:
                if error.code in accept_status:
                    return
                last = f"HTTP {error.code}"
            except OSError as error:
                last = str(error)
            time.sleep(0.2)
        raise ClusterError(f"{component} not ready after {timeout}s ({last}); see its log")

    def kubectl(self, *args: str, input: str | None = None) -> str:
        assert self.state is not None
        result = subprocess.run(
            [str(tool("kubectl")), f"--kubeconfig={self.state.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def _create_fake_nodes(self) -> None:
        nodes = [
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": f"kwok-node-{index}",
                    "annotations": {
                        "kwok.x-k8s.io/node": "fake",
                        "node.alpha.kubernetes.io/ttl": "0",
                    },
                    "labels": {
                        "type": "kwok",
                        "kubernetes.io/hostname": f"kwok-node-{index}",
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                    },
                },
                "status": {
                    "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "1000"},
                    "capacity": {"cpu": "32", "memory": "256Gi", "pods": "1000"},
                },
            }
            for index in range(FAKE_NODES)
        ]
        self.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes}),
        )

    def _wait_for_default_service_account(self, timeout: float = 60) -> None:
        """Pods cannot be created before the controller-manager made the `default` SA."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(ClusterError):
                self.kubectl("get", "serviceaccount", "default", "-n", "default")
                return
            time.sleep(0.5)
        raise ClusterError(
            "the default ServiceAccount never appeared; see kube-controller-manager.log"
        )


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop_pids(pids: dict[str, int]) -> None:
    """SIGTERM each component's process group, then SIGKILL what is left after 10 s."""
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for pid in pids.values():
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours still answers kill(0); reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def load_state(directory: Path) -> ClusterState | None:
    path = directory / STATE_FILE
    if not path.exists():
        return None
    return ClusterState(**json.loads(path.read_text()))


@contextlib.contextmanager
def running_cluster(directory: Path | None = None) -> Iterator[LocalCluster]:
    """Start a cluster for the duration of a with-block (the pytest fixture uses this)."""
    directory = directory or Path(tempfile.mkdtemp(prefix="rudder-cluster-"))
    cluster = LocalCluster(directory)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help="state directory (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    directory: Path = args.dir.resolve()

    if args.command == "up":
        existing = load_state(directory)
        if existing and all(_alive(pid) for pid in existing.pids.values()):
            print(existing.kubeconfig)
            return 0
        started = time.monotonic()
        cluster = LocalCluster(directory)
        try:
            state = cluster.start()
        except ClusterError as error:
            print(f"localcluster: {error}", file=sys.stderr)
            return 1
        # The processes live on in their own sessions after this command returns.
        print(f"control plane up in {time.monotonic() - started:.1f}s", file=sys.stderr)
        print(
            f"  registry {state.registry}, auth registry {state.auth_registry} "
            f"(user {REGISTRY_USER})",
            file=sys.stderr,
        )
        print(state.kubeconfig)
        return 0
    state = load_state(directory)
    if args.command == "status":
        if state is None:
            print("not running")
            return 1
        alive = {name: _alive(pid) for name, pid in state.pids.items()}
        print(json.dumps({"kubeconfig": state.kubeconfig, "alive": alive}, indent=2))
        return 0 if all(alive.values()) else 1
    if state is not None:
        stop_pids(state.pids)
        (directory / STATE_FILE).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`make demo`: rudder installing a chart from an OCI registry, start to finish.

1. Use the current kubeconfig context if there is one; otherwise start the local control
   plane (e2e/localcluster.py; it stays up afterwards, `make cluster-down` stops it).
2. Push a sample chart to a local OCI registry and pin it by digest.
3. Install the CRD, namespace, ServiceAccount and RBAC from deploy/.
4. Run the operator as its own ServiceAccount, apply a sample HelmRelease, wait until it is
   Ready, show `kubectl get rhr` and what the Helm CLI sees, and leave the operator running
   with what to try next. `make demo-stop` (this script with `stop`) stops it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from charts import app_chart, push
from localcluster import DEFAULT_DIR, TOOLS, LocalCluster, load_state
from operator_process import OperatorProcess, install_prerequisites, service_account_kubeconfig

NAMESPACE = "demo"
PID_FILE = Path(__file__).resolve().parent.parent / ".cluster" / "rudder-demo.pid"


def run(*argv: str, env: dict[str, str] | None = None) -> str:
    print(f"$ {' '.join(argv)}", flush=True)
    result = subprocess.run(argv, capture_output=True, text=True, env=env)
    output = (result.stdout + result.stderr).rstrip()
    if output:
        print(output, flush=True)
    if result.returncode != 0:
        raise SystemExit(f"demo: {argv[0]} failed")
    return result.stdout


def current_context() -> str | None:
    result = subprocess.run(
        [str(TOOLS / "kubectl"), "config", "current-context"], capture_output=True, text=True
    )
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else None


def main() -> int:
    context = current_context()
    work = Path(tempfile.mkdtemp(prefix="rudder-demo-"))
    if context:
        print(f"Using kubeconfig context {context!r}; starting only a local registry.")
        registry_cluster = LocalCluster(work / "registry")
        registry = registry_cluster.start_registry_only()
        kubeconfig = Path(os.environ.get("KUBECONFIG", Path.home() / ".kube" / "config"))
    else:
        state = load_state(DEFAULT_DIR)
        if state is None:
            subprocess.run(
                [sys.executable, str(Path(__file__).parent / "localcluster.py"), "up"], check=True
            )
            state = load_state(DEFAULT_DIR)
        assert state is not None
        registry, kubeconfig = state.registry, Path(state.kubeconfig)
        print(f"Local control plane: KUBECONFIG={kubeconfig}")

    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PATH": f"{TOOLS}:{os.environ['PATH']}"}
    kubectl = [str(TOOLS / "kubectl"), f"--kubeconfig={kubeconfig}"]

    ref = push(registry, app_chart(work / "chart", "1.0.0"))
    print(f"Pushed the sample chart: {ref}")
    install_prerequisites(kubectl)
    operator = OperatorProcess(
        service_account_kubeconfig(kubectl, kubeconfig, work / "rudder.kubeconfig"), work
    )
    stop_running_demo()
    operator.start()
    assert operator.process is not None
    PID_FILE.parent.mkdir(parents=True, exist_ok=True)
    PID_FILE.write_text(str(operator.process.pid))
    print(f"rudder runs as its ServiceAccount rudder-system/rudder (log: {operator.log_path})")
    try:
        manifest = {
            "apiVersion": "rudder.dev/v1alpha1",
            "kind": "HelmRelease",
            "metadata": {"name": "hello", "namespace": NAMESPACE},
            "spec": {
                "chart": {"ref": ref, "insecure": True},
                "install": {"createNamespace": True},
                "values": {"greeting": "hello from rudder", "replicas": 2},
            },
        }
        subprocess.run([*kubectl, "create", "namespace", NAMESPACE], capture_output=True)
        sample = work / "helmrelease.yaml"
        sample.write_text(yaml.safe_dump(manifest))
        run(*kubectl, "apply", "-f", str(sample))
        run(
            *kubectl,
            "wait",
            "--for=condition=Ready",
            "rhr/hello",
            "-n",
            NAMESPACE,
            "--timeout=120s",
        )
        time.sleep(1)
        run(*kubectl, "get", "rhr", "-A")
        run(str(TOOLS / "helm"), "list", "-n", NAMESPACE, env=env)
        run(*kubectl, "get", "deployments,services,configmaps,ingresses", "-n", NAMESPACE)
    except BaseException:
        operator.stop()
        PID_FILE.unlink(missing_ok=True)
        raise
    if context:  # someone's own cluster: no rudder of ours left watching all of it
        operator.stop()
        PID_FILE.unlink(missing_ok=True)
        print("\nDone (rudder stopped: it ran against your current context).")
        return 0
    second = work / "second.yaml"
    manifest["metadata"]["name"] = "second"
    manifest["spec"]["values"] = {"greeting": "a second release", "replicas": 1}
    second.write_text(yaml.safe_dump(manifest))
    print(
        f"""
rudder keeps running (pid {operator.process.pid}, log {operator.log_path}). Try:
  status page:  http://127.0.0.1:{operator.health_port}/
  export KUBECONFIG={kubeconfig}
  {sys.executable} -m rudder get -A
  kubectl apply -f {second}        # a second HelmRelease
  {sys.executable} -m rudder history hello -n {NAMESPACE}
`make demo-stop` stops rudder; `make cluster-down` stops the local control plane."""
    )
    return 0


def stop_running_demo() -> bool:
    """Stop the rudder an earlier `make demo` left running; False when there was none. The
    pid is signalled only while it is still that rudder (a pid may be reused)."""
    try:
        pid = int(PID_FILE.read_text())
    except (OSError, ValueError):
        return False
    if not _is_demo_rudder(pid):
        PID_FILE.unlink(missing_ok=True)
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)  # the operator runs in a session of its own
        for _ in range(150):
            if not _is_demo_rudder(pid):
                break
            time.sleep(0.1)
        else:
            os.killpg(pid, signal.SIGKILL)
    PID_FILE.unlink(missing_ok=True)
    return True


def _is_demo_rudder(pid: int) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z" and b"rudder" in argv and b"run" in argv


if __name__ == "__main__":
    if sys.argv[1:] == ["stop"]:
        print("rudder stopped" if stop_running_demo() else "no demo rudder was running")
        sys.exit(0)
    sys.exit(main())

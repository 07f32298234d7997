"""Scale benchmark: N HelmReleases of one small chart, reconciled by rudder on the local
control plane, against the Helm v4 CLI installing the same releases and, with --flux, against
Flux's helm-controller and source-controller reconciling them.

    .venv/bin/python e2e/bench/bench_releases.py [--n 200] [--replicas 0,1] [--concurrency C]
        [--qps Q] [--burst B] [--steady-seconds 180] [--no-upgrade] [--sweep]
        [--helm-baseline] [--flux] [--profile] [--out artifacts/bench]
    .venv/bin/python e2e/bench/bench_releases.py --smoke      # CI: N=20, steady 20 s

The chart is shaped like the podinfo chart of Flux's public benchmarks (Deployment,
ServiceAccount, Service, Ingress) and pushed once to the local registry; every HelmRelease
pins it by digest and carries values of its own. Each scenario (one replica count, one
operator setting) gets fresh namespaces and an operator process of its own that serves only
that scenario's HelmReleases (`--selector`), running as rudder's ServiceAccount.

Per scenario it measures:
  install   time from applying all N HelmReleases (`kubectl apply --server-side`, one list)
            to all Ready; per-release p50/p95 (from the wave's start and from each one's
            own creation); rudder's API requests by verb and resource from the audit log,
            dry-runs apart, per installed release; operator CPU seconds and peak RSS
  upgrade   the same after one value (`ui.message`) changes in all N
  steady    `--steady-seconds` idle with `interval: 30s`: rudder's writes (target 0)
With --flux, the install and upgrade waves again for Flux (flux.py) after rudder's
scenarios, measured the same way, and the ratios of the two.

Ready is followed with one `kubectl get rhr --watch` (exact times, no polling load).
Results go to OUT/<run>/: results.json, table.md and ready-over-time PNGs. The exit status
is non-zero when a hard invariant fails (not all Ready, or a write in the steady state).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "e2e"), str(Path(__file__).resolve().parent)]

import flux  # noqa: E402
from floor import FloorRelease, run_floor  # noqa: E402
from helm_baseline import HelmRelease, helm_env, percentile, run_helm_baseline  # noqa: E402

from audit import RUDDER_USER, WRITE_VERBS  # noqa: E402
from charts import push, write_chart  # noqa: E402
from localcluster import TOOLS, ClusterState, LocalCluster  # noqa: E402
from operator_process import (  # noqa: E402
    OperatorProcess,
    install_prerequisites,
    service_account_kubeconfig,
)
from wasm_plugins import push_plugin  # noqa: E402

ADMIN_USER = "rudder-admin"  # the CN of the local control plane's admin certificate
RUN_LABEL = "bench.rudder.dev/run"
INTERVAL_SECONDS = 30
MiB = 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")
SETTLE = 2.5  # the audit log is written in batches of at most a second
STALL_GRACE = 20.0  # seconds all remaining HelmReleases stay Stalled before a wave gives up

# -- the chart -----------------------------------------------------------------------------

# helm.sh/chart as `helm create` and podinfo write it: a label value cannot hold the `+` of a
# version's build metadata, which Flux adds (`6.7.0+<digest>`) to charts from an OCIRepository.
HELPERS = """{{- define "podinfo.selectorLabels" -}}
app.kubernetes.io/name: podinfo
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
{{- define "podinfo.labels" -}}
{{ include "podinfo.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}
"""

TEMPLATES = {
    "_helpers.tpl": HELPERS,
    "serviceaccount.yaml": """apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ .Release.Name }}
  labels:
    {{- include "podinfo.labels" . | nindent 4 }}
""",
    "deployment.yaml": """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
  labels:
    {{- include "podinfo.labels" . | nindent 4 }}
spec:
  replicas: {{ .Values.replicaCount }}
  selector:
    matchLabels:
      {{- include "podinfo.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "podinfo.selectorLabels" . | nindent 8 }}
    spec:
      serviceAccountName: {{ .Release.Name }}
      containers:
        - name: podinfod
          image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
          command:
            - ./podinfo
            - --port={{ .Values.service.targetPort }}
            - --level={{ .Values.logLevel }}
          env:
            - name: PODINFO_UI_MESSAGE
              value: {{ .Values.ui.message | quote }}
            - name: PODINFO_UI_COLOR
              value: {{ .Values.ui.color | quote }}
          ports:
            - name: http
              containerPort: {{ .Values.service.targetPort }}
              protocol: TCP
          readinessProbe:
            httpGet: {path: /readyz, port: http}
          resources:
            {{- toYaml .Values.resources | nindent 12 }}
""",
    "service.yaml": """apiVersion: v1
kind: Service
metadata:
  name: {{ .Release.Name }}
  labels:
    {{- include "podinfo.labels" . | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "podinfo.selectorLabels" . | nindent 4 }}
  ports:
    - name: http
      port: {{ .Values.service.port }}
      targetPort: http
      protocol: TCP
""",
    "ingress.yaml": """apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {{ .Release.Name }}
  labels:
    {{- include "podinfo.labels" . | nindent 4 }}
spec:
  rules:
    - host: {{ .Values.ingress.host | quote }}
      http:
        paths:
          - path: /
            pathType: ImplementationSpecific
            backend:
              service:
                name: {{ .Release.Name }}
                port: {number: {{ .Values.service.port }}}
""",
    "NOTES.txt": "podinfo {{ .Release.Name }} on {{ .Values.ingress.host }}\n",
}

CHART_VALUES: dict[str, Any] = {
    "replicaCount": 1,
    "logLevel": "info",
    "image": {"repository": "ghcr.io/stefanprodan/podinfo", "tag": "6.7.0"},
    "ui": {"message": "", "color": "#34577c"},
    "service": {"port": 9898, "targetPort": 9898},
    "ingress": {"host": "podinfo.local"},
    "resources": {"requests": {"cpu": "1m", "memory": "16Mi"}},
}


def release_values(index: int, replicas: int, wave: int) -> dict[str, Any]:
    """Each release's own values; `wave` changes one value (the upgrade wave)."""
    message = f"podinfo {index}" + (f" wave {wave}" if wave else "")
    return {
        "replicaCount": replicas,
        "ui": {"message": message},
        "ingress": {"host": f"podinfo-{index}.bench.test"},
    }


# -- measuring -----------------------------------------------------------------------------


def machine_usage() -> tuple[int, float]:
    """(0, busy CPU seconds of the whole machine, all cores) from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(x) for x in fields]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return 0, (sum(ticks[:8]) - idle) / CLK_TCK


def proc_usage(pid: int) -> tuple[int, float] | None:
    """(RSS bytes, CPU seconds) of one process, or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    rss = 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return rss, cpu


class ProcSampler(threading.Thread):
    """Samples RSS and CPU of a few processes every `interval` seconds."""

    def __init__(self, pids: dict[str, int], interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pids = dict(pids)
        self.interval = interval
        self.samples: list[tuple[float, dict[str, tuple[int, float]]]] = []
        self._stop_event = threading.Event()
        self._lock = threading.Lock()

    def sample(self) -> dict[str, tuple[int, float]]:
        now = time.time()
        taken = {}
        for name, pid in self.pids.items():
            usage = proc_usage(pid)
            if usage is not None:
                taken[name] = usage
        taken["machine"] = machine_usage()
        with self._lock:
            self.samples.append((now, taken))
        return taken

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)

    def window(self, name: str | Sequence[str], start: float, end: float) -> dict[str, Any]:
        """CPU seconds used and peak RSS of `name` between two epoch times; of several
        processes together when given several names (CPU summed, RSS summed per sample)."""
        names = [name] if isinstance(name, str) else list(name)
        with self._lock:
            inside = [(t, s) for t, s in self.samples if start <= t <= end]
            before = [s for t, s in self.samples if t < start]
        if not any(one in s for _, s in inside for one in names):
            return {"cpu_s": 0.0, "peak_rss_mib": 0.0}
        cpu = 0.0
        for one in names:
            seen = [s[one] for _, s in inside if one in s]
            earlier = [s[one] for s in before if one in s]
            if seen:
                cpu += seen[-1][1] - (earlier[-1][1] if earlier else seen[0][1])
        rss = max(sum(s[one][0] for one in names if one in s) for _, s in inside)
        return {"cpu_s": round(cpu, 2), "peak_rss_mib": round(rss / MiB, 1)}

    def series(self, name: str | Sequence[str], start: float) -> list[tuple[float, float, float]]:
        """(seconds since start, RSS MiB, CPU seconds since start) for plotting; summed over
        several processes when given several names."""
        names = [name] if isinstance(name, str) else list(name)
        with self._lock:
            points = [(t, s) for t, s in self.samples if t >= start and any(n in s for n in names)]
        if not points:
            return []

        def total(sample: dict[str, tuple[int, float]], index: int) -> float:
            return float(sum(sample[n][index] for n in names if n in sample))

        cpu0 = total(points[0][1], 1)
        return [(t - start, total(s, 0) / MiB, total(s, 1) - cpu0) for t, s in points]


def peak_rss_mib(pid: int) -> float:
    """The kernel's high-water mark of the process's RSS (VmHWM)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


Key = tuple[str, str]

WATCH_TEMPLATE = (
    "{.metadata.namespace}|{.metadata.name}|{.metadata.generation}|"
    '{.status.observedGeneration}|{.status.conditions[?(@.type=="Ready")].status}|'
    '{.status.conditions[?(@.type=="Ready")].reason}|'
    '{.status.conditions[?(@.type=="Stalled")].status}{"\\n"}'
)


class ReadyWatch(threading.Thread):
    """`kubectl get rhr --watch` for one scenario's HelmReleases (or Flux's, by `resource`):
    when each one was first seen at a generation, and when it was first Ready for it."""

    def __init__(
        self, kubectl: Sequence[str], selector: str, resource: str = "helmreleases.rudder.dev"
    ) -> None:
        super().__init__(daemon=True)
        self.argv = [
            *kubectl,
            "get",
            resource,
            "--all-namespaces",
            f"--selector={selector}",
            "--watch",
            f"--output=jsonpath={WATCH_TEMPLATE}",
        ]
        self.first_seen: dict[tuple[Key, int], float] = {}
        self.ready_at: dict[tuple[Key, int], float] = {}
        self.reasons: dict[Key, str] = {}
        self.stalled: dict[tuple[Key, int], bool] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._process: subprocess.Popen[str] | None = None

    def run(self) -> None:
        while not self._stopping.is_set():
            self._process = subprocess.Popen(
                self.argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
            )
            assert self._process.stdout is not None
            for line in self._process.stdout:
                self._line(line, time.time())
            self._process.wait()
            if not self._stopping.is_set():
                time.sleep(0.5)  # the watch ended (server timeout): start it again

    def _line(self, line: str, now: float) -> None:
        parts = line.rstrip("\n").split("|")
        if len(parts) != 7 or not parts[2]:
            return
        namespace, name, generation, observed, ready, reason, stalled = parts
        key = (namespace, name)
        gen = int(generation)
        with self._lock:
            self.first_seen.setdefault((key, gen), now)
            self.reasons[key] = f"{ready or '-'} {reason or '-'}"
            if ready == "True" and observed == generation:
                self.ready_at.setdefault((key, gen), now)
            self.stalled[(key, gen)] = stalled == "True" and observed == generation

    def ready_count(self, keys: Sequence[Key], generation: int) -> int:
        with self._lock:
            return sum((key, generation) in self.ready_at for key in keys)

    def all_stalled(self, keys: Sequence[Key], generation: int) -> bool:
        """Every HelmRelease not Ready at `generation` is Stalled: waiting is pointless."""
        with self._lock:
            waiting = [k for k in keys if (k, generation) not in self.ready_at]
            return bool(waiting) and all(self.stalled.get((k, generation)) for k in waiting)

    def not_ready(self, keys: Sequence[Key], generation: int) -> dict[str, str]:
        with self._lock:
            return {
                f"{ns}/{name}": self.reasons.get((ns, name), "unseen")
                for ns, name in keys
                if ((ns, name), generation) not in self.ready_at
            }

    def stop(self) -> None:
        self._stopping.set()
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                self._process.terminate()
        self.join(timeout=5)


@dataclass(frozen=True)
class ApiRequest:
    verb: str
    resource: str
    dry_run: bool
    at: float


class AuditLog:
    """Reads the API server's audit log forward from an offset; keeps only one user's
    requests (cheap substring test before parsing each line), each counted once."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def offset(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def requests(self, user: str, since_offset: int, start: float, end: float) -> list[ApiRequest]:
        needle = f'"username":"{user}"'
        found = []
        with self.path.open("rb") as log:
            log.seek(since_offset)
            for raw in log:
                line = raw.decode(errors="replace")
                if needle not in line:
                    continue
                event = json.loads(line)
                if event.get("user", {}).get("username") != user:
                    continue
                # A watch is logged when its response starts (and again when it ends,
                # possibly much later); every other request once, when complete.
                stage = "ResponseStarted" if event.get("verb") == "watch" else "ResponseComplete"
                if event.get("stage") != stage:
                    continue
                at = datetime.datetime.fromisoformat(
                    event["requestReceivedTimestamp"].replace("Z", "+00:00")
                ).timestamp()
                if not start <= at <= end:
                    continue
                ref = event.get("objectRef") or {}
                resource = ref.get("resource", "") or event.get("requestURI", "?").split("?")[0]
                if ref.get("subresource"):
                    resource += "/" + ref["subresource"]
                found.append(
                    ApiRequest(
                        verb=event.get("verb", ""),
                        resource=resource,
                        dry_run="dryRun=" in event.get("requestURI", ""),
                        at=at,
                    )
                )
        return found


def summarise_requests(found: Sequence[ApiRequest], releases: int) -> dict[str, Any]:
    """Totals, writes (dry-runs apart), and counts by verb and resource, also per release."""
    by_key = Counter(("dry-run " if r.dry_run else "") + f"{r.verb} {r.resource}" for r in found)
    writes = [r for r in found if r.verb in WRITE_VERBS and not r.dry_run]
    dry_runs = [r for r in found if r.dry_run]
    writes_no_events = [r for r in writes if r.resource != "events"]
    per = max(1, releases)
    return {
        "total": len(found),
        "writes": len(writes),
        "writes_without_events": len(writes_no_events),
        "dry_runs": len(dry_runs),
        "reads": len(found) - len(writes) - len(dry_runs),
        "per_release": {
            "total": round(len(found) / per, 2),
            "writes": round(len(writes) / per, 2),
            "writes_without_events": round(len(writes_no_events) / per, 2),
            "dry_runs": round(len(dry_runs) / per, 2),
            "reads": round((len(found) - len(writes) - len(dry_runs)) / per, 2),
        },
        "by_verb_resource": dict(sorted(by_key.items(), key=lambda kv: (-kv[1], kv[0]))),
        "by_verb_resource_per_release": {
            key: round(count / per, 2)
            for key, count in sorted(by_key.items(), key=lambda kv: (-kv[1], kv[0]))
        },
    }


# -- the run -------------------------------------------------------------------------------


@dataclass
class Scenario:
    """One operator setting and replica count: install, upgrade wave, steady state."""

    label: str
    n: int
    replicas: int
    concurrency: int | None = None
    qps: float | None = None
    burst: int | None = None
    upgrade: bool = True
    steady_seconds: float = 0.0
    namespaces: int = 10
    profile: bool = False
    interval: int = INTERVAL_SECONDS
    wave_timeout: float | None = None
    # A Wasm post-renderer every HelmRelease runs (its pinned ref), or none.
    post_renderer: str | None = None

    def operator_args(self, run: str) -> list[str]:
        args = ["--log-level=info", f"--selector={RUN_LABEL}={run}"]
        if self.concurrency is not None:
            args.append(f"--concurrency={self.concurrency}")
        if self.qps is not None:
            args.append(f"--kube-api-qps={self.qps:g}")
        if self.burst is not None:
            args.append(f"--kube-api-burst={self.burst}")
        return args


@dataclass
class Bench:
    """The control plane, the pushed chart and where results go."""

    state: ClusterState
    chart_ref: str
    out: Path
    workdir: Path
    sa_kubeconfig: Path
    chart_dir: Path | None = None  # the chart, for rendering the floor's objects
    results: list[dict[str, Any]] = field(default_factory=list)
    series: dict[str, Any] = field(default_factory=dict)

    @property
    def kubectl(self) -> list[str]:
        return [str(TOOLS / "kubectl"), f"--kubeconfig={self.state.kubeconfig}"]

    def run_kubectl(self, *args: str, input: str | None = None, timeout: float = 600) -> str:
        result = subprocess.run(
            [*self.kubectl, *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args[:3])}: {result.stderr.strip()[-2000:]}")
        return result.stdout

    @property
    def audit(self) -> AuditLog:
        return AuditLog(Path(self.state.audit_log))


@dataclass(frozen=True)
class Measured:
    """Whose work a wave measures: processes by their names in the sampler (CPU and RSS
    summed over them) and the API users whose requests are counted."""

    pids: dict[str, int]
    users: tuple[str, ...]
    profile_pid: int | None = None  # what --profile records (py-spy: rudder only)


def namespace_list(names: Sequence[str]) -> str:
    """A `kubectl apply -f -` input creating these namespaces."""
    items = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in names]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def helmrelease(
    name: str,
    namespace: str,
    run: str,
    ref: str,
    values: dict[str, Any],
    interval: int,
    post_renderer: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "chart": {"ref": ref, "insecure": True},
        "interval": f"{interval}s",
        "timeout": "5m",
        "values": values,
    }
    if post_renderer:
        wasm = {"ref": post_renderer, "insecure": True, "args": ["--label", "bench=wasm"]}
        spec["postRenderers"] = [{"wasm": wasm}]
    return {
        "apiVersion": "rudder.dev/v1alpha1",
        "kind": "HelmRelease",
        "metadata": {"name": name, "namespace": namespace, "labels": {RUN_LABEL: run}},
        "spec": spec,
    }


def apply_list(bench: Bench, items: Sequence[dict[str, Any]], path: Path) -> None:
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": list(items)}))
    bench.run_kubectl(
        "apply", "--server-side", "--field-manager=bench", f"--filename={path}", timeout=900
    )


def wait_ready(
    watch: ReadyWatch, keys: Sequence[Key], generation: int, timeout: float, what: str
) -> float | None:
    """Epoch time all `keys` were Ready at `generation`, or None after `timeout`."""
    deadline = time.monotonic() + timeout
    last_report = time.monotonic()
    stalled_since: float | None = None
    while time.monotonic() < deadline:
        if watch.ready_count(keys, generation) == len(keys):
            return max(watch.ready_at[(key, generation)] for key in keys)
        if watch.all_stalled(keys, generation):
            if stalled_since is None:
                stalled_since = time.monotonic()
            elif time.monotonic() - stalled_since > STALL_GRACE:
                log(f"  {what}: every HelmRelease not Ready is Stalled; giving up")
                return None
        else:
            stalled_since = None
        if time.monotonic() - last_report > 15:
            last_report = time.monotonic()
            log(f"  {what}: {watch.ready_count(keys, generation)}/{len(keys)} Ready")
        time.sleep(0.2)
    return None


def timeline(times: Sequence[float], start: float) -> list[tuple[float, int]]:
    """Ready count over time as steps: (seconds since start, count)."""
    return [(round(t - start, 3), i + 1) for i, t in enumerate(sorted(times))]


@contextlib.contextmanager
def profiling(enabled: bool, pid: int, out: Path) -> Iterator[None]:
    """py-spy record (collapsed stacks) of the operator for the duration of the block; a
    summary of the hottest functions is written beside them."""
    if not enabled:
        yield
        return
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    raw = out.with_suffix(".txt")
    argv = [py_spy, "record", "--pid", str(pid), "--rate", "50", "--format", "raw"]
    proc = subprocess.Popen(
        [*argv, "--output", str(raw), "--nonblocking", "--threads"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        if raw.exists():
            out.with_suffix(".summary.txt").write_text(profile_summary(raw))


def profile_summary(raw: Path, top: int = 40) -> str:
    """Self and inclusive sample counts per function from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if not f.startswith("thread ")]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples (50 Hz, idle excluded)", "", "self %  function"]
    lines += [f"{100 * c / max(1, total):6.1f}  {f}" for f, c in own.most_common(top)]
    lines += ["", "inclusive %  function"]
    lines += [f"{100 * c / max(1, total):6.1f}  {f}" for f, c in inclusive.most_common(top)]
    return "\n".join(lines) + "\n"


def wave(
    bench: Bench,
    scenario: Scenario,
    *,
    phase: str,
    run: str,
    keys: Sequence[Key],
    items: Sequence[dict[str, Any]],
    generation: int,
    watch: ReadyWatch,
    sampler: ProcSampler,
    measured: Measured,
) -> dict[str, Any]:
    """Apply `items` at once and measure until every HelmRelease is Ready at `generation`."""
    offset = bench.audit.offset()
    sampler.sample()
    start = time.time()
    profile_out = bench.out / f"profile-{scenario.label}-{phase}"
    profile = scenario.profile and measured.profile_pid is not None
    with profiling(profile, measured.profile_pid or 0, profile_out):
        apply_list(bench, items, bench.workdir / f"{run}-{phase}.json")
        applied = time.time()
        timeout = scenario.wave_timeout or max(300.0, 1.5 * scenario.n)
        all_ready = wait_ready(watch, keys, generation, timeout, f"{scenario.label} {phase}")
    end = time.time()
    sampler.sample()
    time.sleep(SETTLE)
    by_user = {user: bench.audit.requests(user, offset, start, end) for user in measured.users}
    found = [request for requests in by_user.values() for request in requests]
    ready_times = [
        watch.ready_at[(k, generation)] for k in keys if (k, generation) in watch.ready_at
    ]
    since_start = [t - start for t in ready_times]
    own = [
        watch.ready_at[(k, generation)] - watch.first_seen.get((k, generation), start)
        for k in keys
        if (k, generation) in watch.ready_at
    ]
    total = (all_ready - start) if all_ready is not None else None
    result: dict[str, Any] = {
        "phase": phase,
        "n": len(keys),
        "ready": len(ready_times),
        "apply_s": round(applied - start, 2),
        "total_s": round(total, 2) if total is not None else None,
        "throughput_per_s": round(len(keys) / total, 2) if total else None,
        "p50_s": round(percentile(since_start, 0.5), 2),
        "p95_s": round(percentile(since_start, 0.95), 2),
        "max_s": round(max(since_start, default=0.0), 2),
        "own_p50_s": round(percentile(own, 0.5), 2),
        "own_p95_s": round(percentile(own, 0.95), 2),
        "operator": {
            **sampler.window(list(measured.pids), start, end),
            "vm_hwm_mib": round(sum(peak_rss_mib(pid) for pid in measured.pids.values()), 1),
        },
        "apiserver_cpu_s": sampler.window("kube-apiserver", start, end)["cpu_s"],
        "etcd_cpu_s": sampler.window("etcd", start, end)["cpu_s"],
        # Busy CPU seconds of the whole machine (every process, other users' too) over the
        # cores available in the wave: near 1.0 means the wave was CPU-bound.
        "machine_cpu_busy": round(
            sampler.window("machine", start, end)["cpu_s"]
            / max(0.001, (end - start) * (os.cpu_count() or 1)),
            2,
        ),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "requests": summarise_requests(found, len(keys)),
    }
    if len(by_user) > 1:  # each process's own share (Flux's two controllers)
        result["requests_by_user"] = {
            user: summarise_requests(requests, len(keys))["per_release"]
            for user, requests in by_user.items()
        }
    if all_ready is None:
        missing = watch.not_ready(keys, generation)
        result["not_ready"] = dict(list(missing.items())[:20])
        stalled = watch.all_stalled(keys, generation)
        result["gave_up"] = "all remaining Stalled" if stalled else f"timeout {timeout:.0f}s"
        log(f"  {phase}: NOT all Ready ({result['gave_up']}); e.g. {result['not_ready']}")
    bench.series[f"{scenario.label} {phase}"] = {
        "ready": timeline(ready_times, start),
        "operator": sampler.series(list(measured.pids), start),
    }
    if scenario.profile:
        result["profile"] = str(profile_out.with_suffix(".summary.txt"))
    return result


def steady(
    bench: Bench,
    seconds: float,
    keys: Sequence[Key],
    sampler: ProcSampler,
    operator: OperatorProcess,
    interval: int,
) -> dict[str, Any]:
    """Idle for `seconds` with `interval`: what does rudder still ask and write? Reconciles
    are counted by the operator's own metric: an idle one makes no request to count."""
    offset = bench.audit.offset()
    sampler.sample()
    before = operator_metrics(operator).get("rudder_reconcile_total", 0.0)
    start = time.time()
    time.sleep(seconds)
    end = time.time()
    reconciles = int(operator_metrics(operator).get("rudder_reconcile_total", 0.0) - before)
    sampler.sample()
    time.sleep(SETTLE)
    found = bench.audit.requests(RUDDER_USER, offset, start, end)
    summary = summarise_requests(found, len(keys))
    names = {name for _, name in keys}
    return {
        "phase": "steady",
        "seconds": round(end - start, 1),
        "interval_s": interval,
        "reconciles": reconciles,
        "expected_reconciles": int(len(names) * (end - start) // interval),
        "writes": summary["writes"],
        "written": {k: v for k, v in summary["by_verb_resource"].items() if _is_write_key(k)},
        "requests": summary,
        "operator": {
            **sampler.window("rudder", start, end),
            "vm_hwm_mib": peak_rss_mib(operator.process.pid if operator.process else 0),
        },
    }


def _is_write_key(key: str) -> bool:
    return not key.startswith("dry-run ") and key.split(" ")[0] in WRITE_VERBS


def run_scenario(bench: Bench, scenario: Scenario, run: str) -> dict[str, Any]:
    log(f"scenario {scenario.label}: N={scenario.n} replicas={scenario.replicas}")
    namespaces = [f"bench-{run}-{k:02d}" for k in range(max(1, scenario.namespaces))]
    bench.run_kubectl(
        "apply",
        "--server-side",
        "-f",
        "-",
        input=namespace_list(namespaces),
    )
    names = [f"podinfo-{i:04d}" for i in range(scenario.n)]
    keys: list[Key] = [(namespaces[i % len(namespaces)], names[i]) for i in range(scenario.n)]

    operator = OperatorProcess(
        bench.sa_kubeconfig, bench.workdir / f"operator-{run}", scenario.operator_args(run)
    )
    watch = ReadyWatch(bench.kubectl, f"{RUN_LABEL}={run}")
    watch.start()
    operator.start(timeout=60)
    assert operator.process is not None
    pid = operator.process.pid
    pids = {"rudder": pid, **{k: v for k, v in bench.state.pids.items() if k in PEERS}}
    sampler = ProcSampler(pids)
    sampler.start()
    time.sleep(2)  # let the operator's start-up requests (discovery, first list) pass
    started_cpu = (proc_usage(pid) or (0, 0.0))[1]
    result: dict[str, Any] = {
        "kind": "rudder",
        "label": scenario.label,
        "n": scenario.n,
        "replicas": scenario.replicas,
        "concurrency": scenario.concurrency,
        "qps": scenario.qps,
        "burst": scenario.burst,
        "operator_args": scenario.operator_args(run),
        "phases": {},
    }
    try:
        items = [
            helmrelease(
                name,
                ns,
                run,
                bench.chart_ref,
                release_values(i, scenario.replicas, 0),
                scenario.interval,
                scenario.post_renderer,
            )
            for i, (ns, name) in enumerate(keys)
        ]
        common: dict[str, Any] = {
            "run": run,
            "keys": keys,
            "watch": watch,
            "sampler": sampler,
            "measured": Measured({"rudder": pid}, (RUDDER_USER,), profile_pid=pid),
        }
        install = wave(bench, scenario, phase="install", items=items, generation=1, **common)
        result["phases"]["install"] = install
        log(f"  install: {_brief(install)}")
        if scenario.upgrade and install["total_s"] is not None:
            items = [
                helmrelease(
                    name,
                    ns,
                    run,
                    bench.chart_ref,
                    release_values(i, scenario.replicas, 1),
                    scenario.interval,
                    scenario.post_renderer,
                )
                for i, (ns, name) in enumerate(keys)
            ]
            upgrade = wave(bench, scenario, phase="upgrade", items=items, generation=2, **common)
            result["phases"]["upgrade"] = upgrade
            log(f"  upgrade: {_brief(upgrade)}")
        if scenario.steady_seconds > 0 and install["total_s"] is not None:
            log(f"  steady state: {scenario.steady_seconds:.0f}s idle")
            idle = steady(
                bench, scenario.steady_seconds, keys, sampler, operator, scenario.interval
            )
            result["phases"]["steady"] = idle
            log(
                f"  steady: {idle['reconciles']} reconciles, {idle['requests']['total']} "
                f"requests, {idle['writes']} writes {idle['written'] or ''}"
            )
        result["operator_peak_rss_mib"] = peak_rss_mib(pid)
        # The process's whole life, beside the waves' own figures: a CPU figure taken from
        # `ps` at the end counts start-up (imports, Helm's Go runtime) and every wave.
        lifetime_cpu = (proc_usage(pid) or (0, 0.0))[1]
        result["operator_cpu_s"] = {
            "start_up": round(started_cpu, 2),
            "lifetime": round(lifetime_cpu, 2),
            "lifetime_per_release_ms": round(1000 * lifetime_cpu / max(1, scenario.n), 1),
        }
        log(f"  operator CPU: {result['operator_cpu_s']}")
        if scenario.post_renderer:
            result["post_render"] = post_render_metrics(operator)
            log(f"  post-render: {result['post_render']}")
    finally:
        sampler.stop()
        watch.stop()
        operator.stop()
        with contextlib.suppress(OSError):
            shutil.copy(operator.log_path, bench.out / f"operator-{scenario.label}.log")
    return result


POST_RENDER_METRICS = {
    "rudder_post_render_compiles_total": "compiles",
    "rudder_post_render_compile_seconds_sum": "compile_s",
    "rudder_post_render_duration_seconds_count": "runs",
    "rudder_post_render_duration_seconds_sum": "run_s",
}


def post_render_metrics(operator: OperatorProcess) -> dict[str, float]:
    """What the operator's metrics say of its Wasm post-renderers: compiles (one per module
    and limits, whatever N is), compile seconds, runs and their seconds."""
    found = operator_metrics(operator)
    return {key: found[name] for name, key in POST_RENDER_METRICS.items() if name in found}


def operator_metrics(operator: OperatorProcess) -> dict[str, float]:
    """The operator's metrics, each summed over its labels."""
    url = f"http://127.0.0.1:{operator.health_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        totals[name] = round(totals.get(name, 0.0) + float(line.rsplit(" ", 1)[1]), 3)
    return totals


PEERS = ("kube-apiserver", "etcd")
# The concurrency sweep: 1, 4, 16, 64 with the client-side rate limit off (the burst
# only sizes the connection pool), then 16 at the default and at 4x the default QPS.
DEFAULT_SWEEP = "1@0:1000,4@0:1000,16@0:1000,64@0:1000,16@50:100,16@200:400"


def _brief(phase: dict[str, Any], who: str = "rudder") -> str:
    req = phase["requests"]["per_release"]
    return (
        f"{phase['ready']}/{phase['n']} Ready in {phase['total_s']}s "
        f"(apply {phase['apply_s']}s, p50 {phase['p50_s']}s, p95 {phase['p95_s']}s); "
        f"per release {req['total']} requests, {req['writes']} writes, "
        f"{req['dry_runs']} dry-runs; {who} {phase['operator']['cpu_s']} CPU s, "
        f"{phase['operator']['peak_rss_mib']} MiB"
    )


def helm_scenario(bench: Bench, n: int, replicas: int, parallel: int, run: str) -> dict[str, Any]:
    log(f"helm baseline: N={n} xargs -P {parallel}")
    namespaces = [f"helm-{run}-{k:02d}" for k in range(10)]
    for ns in namespaces:
        bench.run_kubectl("create", "namespace", ns)
    releases = [
        HelmRelease(
            f"podinfo-{i:04d}", namespaces[i % len(namespaces)], release_values(i, replicas, 0)
        )
        for i in range(n)
    ]
    offset = bench.audit.offset()
    audit = bench.audit

    def count(start: float, end: float) -> dict[str, Any]:
        time.sleep(SETTLE)
        return summarise_requests(audit.requests(ADMIN_USER, offset, start, end), n)

    summary = run_helm_baseline(
        helm=TOOLS / "helm",
        chart_ref=bench.chart_ref,
        releases=releases,
        parallel=parallel,
        workdir=bench.workdir / f"helm-{run}",
        env=helm_env(os.environ, Path(bench.state.kubeconfig), bench.workdir / "helm-home"),
        count_requests=count,
    )
    summary["replicas"] = replicas
    log(
        f"  helm -P {parallel}: {summary['ready']}/{n} in {summary['total_s']}s "
        f"({summary['throughput_per_s']}/s, install p50 {summary['install_p50_s']}s); "
        f"{summary['requests']['per_release']['total']} requests/release"
    )
    return summary


def floor_scenario(bench: Bench, n: int, replicas: int, run: str) -> dict[str, Any]:
    """The API server's floor (floor.py) for the same N, values and namespaces layout."""
    import helm_python
    import yaml

    log(f"floor: N={n}, only the writes a release must cost, as rudder's ServiceAccount")
    assert bench.chart_dir is not None
    namespaces = [f"floor-{run}-{k:02d}" for k in range(10)]
    bench.run_kubectl("apply", "--server-side", "-f", "-", input=namespace_list(namespaces))
    chart = helm_python.Chart.load(str(bench.chart_dir))
    releases, items = [], []
    for i in range(n):
        name, ns = f"podinfo-{i:04d}", namespaces[i % len(namespaces)]
        values = release_values(i, replicas, 0)
        files = chart.render(values, name=name, namespace=ns, is_install=True)
        objects = [
            {**doc, "metadata": {**doc["metadata"], "namespace": ns}}
            for path, text in files.items()
            if path.endswith(".yaml")
            for doc in yaml.safe_load_all(text)
            if doc
        ]
        releases.append(FloorRelease(name, ns, objects))
        # Served by no operator: the floor client is the only one acting on them.
        items.append(helmrelease(name, ns, f"floor-{run}", bench.chart_ref, values, 600))
    offset = bench.audit.offset()
    started = time.time()
    timing = run_floor(
        bench.sa_kubeconfig,
        releases,
        lambda: apply_list(bench, items, bench.workdir / f"floor-{run}.json"),
    )
    ended = started + (timing["end"] - timing["start"])
    time.sleep(SETTLE)
    requests = summarise_requests(bench.audit.requests(RUDDER_USER, offset, started, ended), n)
    result = {
        "kind": "floor",
        "label": "floor",
        "n": n,
        "replicas": replicas,
        "total_s": timing["total_s"],
        "apply_s": timing["apply_s"],
        "writes_s": timing["writes_s"],
        "observed_s": timing["observed_s"],
        "throughput_per_s": round(n / timing["total_s"], 1) if timing["total_s"] else None,
        "requests": requests,
    }
    log(
        f"  floor: {n} releases in {timing['total_s']}s (kubectl apply {timing['apply_s']}s, "
        f"writes {timing['writes_s']}s; every Deployment observed by its controller at "
        f"{timing['observed_s']}s); {requests['per_release']['total']} requests/release"
    )
    return result


def floor_ratios(results: Sequence[dict[str, Any]]) -> list[str]:
    """rudder's install time over the floor's, for each N both measured."""
    floors = {r["n"]: r for r in results if r["kind"] == "floor"}
    lines = []
    for result in results:
        install = result.get("phases", {}).get("install") if result["kind"] == "rudder" else None
        floor = floors.get(result["n"])
        if install and floor and floor["total_s"]:
            ratio = install["total_s"] / floor["total_s"]
            observed = floor.get("observed_s")
            waited = f", {install['total_s'] / observed:.2f}x" if observed else ""
            lines.append(
                f"{result['label']}: install {install['total_s']}s = {ratio:.2f}x the floor "
                f"({floor['total_s']}s){waited} the floor until its Deployments were "
                f"observed ({observed}s)"
            )
    return lines


def flux_scenario(
    bench: Bench,
    scenario: Scenario,
    run: str,
    kubeconfigs: dict[str, Path],
    helm_concurrent: int | None,
) -> dict[str, Any]:
    """The same releases by Flux (flux.py) in namespaces of their own, after rudder's
    scenarios: each an OCIRepository and a HelmRelease, applied together in one install
    wave; the upgrade wave re-applies the HelmReleases with the value rudder's changes. Ready,
    requests (both controllers' users), CPU and RSS (both processes) measured as for rudder."""
    log(f"flux: N={scenario.n} replicas={scenario.replicas}")
    namespaces = [f"flux-{run}-{k:02d}" for k in range(max(1, scenario.namespaces))]
    bench.run_kubectl("apply", "--server-side", "-f", "-", input=namespace_list(namespaces))
    keys: list[Key] = [
        (namespaces[i % len(namespaces)], f"podinfo-{i:04d}") for i in range(scenario.n)
    ]
    labels = {RUN_LABEL: run}

    def releases(wave_number: int) -> list[dict[str, Any]]:
        return [
            flux.helmrelease(
                name,
                ns,
                labels,
                release_values(i, scenario.replicas, wave_number),
                scenario.interval,
            )
            for i, (ns, name) in enumerate(keys)
        ]

    controllers = flux.FluxControllers(bench.workdir / f"flux-{run}", kubeconfigs, helm_concurrent)
    watch = ReadyWatch(bench.kubectl, f"{RUN_LABEL}={run}", flux.HELMRELEASE_RESOURCE)
    watch.start()
    result: dict[str, Any] = {
        "kind": "flux",
        "label": scenario.label,
        "n": scenario.n,
        "replicas": scenario.replicas,
        "concurrency": helm_concurrent,
        "qps": None,
        "burst": None,
        "versions": flux.versions(),
        "phases": {},
    }
    sampler: ProcSampler | None = None
    try:
        controllers.start()
        result["controller_args"] = controllers.args
        peers = {k: v for k, v in bench.state.pids.items() if k in PEERS}
        sampler = ProcSampler({**controllers.pids, **peers})
        sampler.start()
        time.sleep(2)  # let the controllers' start-up requests (discovery, lists) pass
        common: dict[str, Any] = {
            "run": run,
            "keys": keys,
            "watch": watch,
            "sampler": sampler,
            "measured": Measured(controllers.pids, tuple(flux.USERS.values())),
        }
        sources = [
            flux.ocirepository(name, ns, labels, bench.chart_ref, scenario.interval)
            for ns, name in keys
        ]
        items = [obj for pair in zip(sources, releases(0), strict=True) for obj in pair]
        install = wave(bench, scenario, phase="install", items=items, generation=1, **common)
        result["phases"]["install"] = install
        log(f"  install: {_brief(install, 'Flux')}")
        if scenario.upgrade and install["total_s"] is not None:
            upgrade = wave(
                bench, scenario, phase="upgrade", items=releases(1), generation=2, **common
            )
            result["phases"]["upgrade"] = upgrade
            log(f"  upgrade: {_brief(upgrade, 'Flux')}")
        result["operator_peak_rss_mib"] = round(
            sum(peak_rss_mib(pid) for pid in controllers.pids.values()), 1
        )
    finally:
        if sampler is not None:
            sampler.stop()
        watch.stop()
        controllers.stop()
        for name in flux.CONTROLLERS:
            with contextlib.suppress(OSError):
                shutil.copy(controllers.log_path(name), bench.out / f"{name}-{scenario.label}.log")
    return result


def _over(a: float, b: float) -> float | None:
    return round(a / b, 2) if b else None


def flux_ratios(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """rudder over Flux per wave, for the rudder scenario of the same N and replica count:
    throughput (above 1: rudder faster), and Flux's CPU, requests and writes per release
    over rudder's (above 1: Flux spends more)."""
    ratios = []
    for fluxed in (r for r in results if r["kind"] == "flux"):
        label = f"n{fluxed['n']}-r{fluxed['replicas']}"
        rudder = next((r for r in results if r["kind"] == "rudder" and r["label"] == label), None)
        if rudder is None:
            continue
        for phase_name, theirs in fluxed["phases"].items():
            ours = rudder["phases"].get(phase_name)
            if not ours or not ours.get("throughput_per_s") or not theirs.get("throughput_per_s"):
                continue
            ours_req = ours["requests"]["per_release"]
            theirs_req = theirs["requests"]["per_release"]
            ratios.append(
                {
                    "rudder": rudder["label"],
                    "flux": fluxed["label"],
                    "phase": phase_name,
                    "throughput_rudder_over_flux": _over(
                        ours["throughput_per_s"], theirs["throughput_per_s"]
                    ),
                    "cpu_flux_over_rudder": _over(
                        theirs["operator"]["cpu_s"], ours["operator"]["cpu_s"]
                    ),
                    "requests_flux_over_rudder": _over(theirs_req["total"], ours_req["total"]),
                    "writes_flux_over_rudder": _over(theirs_req["writes"], ours_req["writes"]),
                    "peak_rss_flux_over_rudder": _over(
                        theirs["operator"]["peak_rss_mib"], ours["operator"]["peak_rss_mib"]
                    ),
                }
            )
    return ratios


def flux_ratio_lines(ratios: Sequence[dict[str, Any]]) -> list[str]:
    return [
        f"{r['rudder']} vs {r['flux']} {r['phase']}: rudder/Flux throughput "
        f"{r['throughput_rudder_over_flux']}x; Flux/rudder CPU {r['cpu_flux_over_rudder']}x, "
        f"requests/release {r['requests_flux_over_rudder']}x, writes/release "
        f"{r['writes_flux_over_rudder']}x, peak RSS {r['peak_rss_flux_over_rudder']}x"
        for r in ratios
    ]


# -- reporting -----------------------------------------------------------------------------


def table(results: Sequence[dict[str, Any]]) -> str:
    rows = [
        "| run | N | repl | conc | qps/burst | phase | all Ready s | p50 s | p95 s | rel/s "
        "| req/rel | writes/rel | dry-runs/rel | CPU s | peak RSS MiB | machine busy |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        if result["kind"] == "floor":
            req = result["requests"]["per_release"]
            rows.append(
                f"| floor | {result['n']} | {result['replicas']} | all | - | install "
                f"| {result['total_s']} | - | - | {result['throughput_per_s']} | {req['total']} "
                f"| {req['writes']} | {req['dry_runs']} | - | - | - |"
            )
            continue
        if result["kind"] == "helm":
            req = result["requests"]["per_release"]
            rows.append(
                f"| helm CLI | {result['n']} | {result['replicas']} | -P {result['parallel']} "
                f"| - | install | {result['total_s']} | {result['p50_s']} | {result['p95_s']} "
                f"| {result['throughput_per_s']} | {req['total']} | {req['writes']} "
                f"| {req['dry_runs']} | {result['cli_cpu_s']} | - | - |"
            )
            continue
        qps = (
            "default"
            if result["qps"] is None and result["burst"] is None
            else f"{_num(result['qps'])}/{_num(result['burst'])}"
        )
        conc = "default" if result["concurrency"] is None else result["concurrency"]
        for name, phase in result["phases"].items():
            head = f"| {result['label']} | {result['n']} | {result['replicas']} | {conc} | {qps} "
            req = phase["requests"]["per_release"]
            if name == "steady":
                rows.append(
                    head + f"| steady {phase['seconds']:.0f}s ({phase['reconciles']} "
                    f"reconciles) | - | - | - | - | {req['total']} | **{phase['writes']} "
                    f"total** | {req['dry_runs']} | {phase['operator']['cpu_s']} "
                    f"| {phase['operator']['peak_rss_mib']} | - |"
                )
                continue
            rows.append(
                head + f"| {name} | {phase['total_s']} | {phase['p50_s']} | {phase['p95_s']} "
                f"| {phase['throughput_per_s']} | {req['total']} | {req['writes']} "
                f"| {req['dry_runs']} | {phase['operator']['cpu_s']} "
                f"| {phase['operator']['peak_rss_mib']} | {phase.get('machine_cpu_busy', '-')} |"
            )
    return "\n".join(rows) + "\n"


def _num(value: float | None) -> str:
    return "default" if value is None else f"{value:g}"


def requests_table(results: Sequence[dict[str, Any]]) -> str:
    """rudder's requests per installed release, by verb and resource, per install phase."""
    lines = []
    for result in results:
        for name, phase in result.get("phases", {}).items():
            if name == "steady":
                continue
            lines.append(f"\n{result['label']} {name} (per release):\n")
            for key, value in phase["requests"]["by_verb_resource_per_release"].items():
                lines.append(f"    {value:7.2f}  {key}\n")
    for result in results:
        if result["kind"] == "helm":
            lines.append(f"\n{result['label']} (per release):\n")
            for key, value in result["requests"]["by_verb_resource_per_release"].items():
                lines.append(f"    {value:7.2f}  {key}\n")
    return "".join(lines)


def targets(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets for this machine, checked where this run measured them."""
    checks: list[dict[str, Any]] = []
    rudder = [r for r in results if r["kind"] == "rudder"]
    helm = [r for r in results if r["kind"] == "helm" and r["ready"] == r["n"]]
    for r in rudder:
        install = r["phases"].get("install", {})
        if r["replicas"] == 0 and r["n"] >= 1000 and install:
            total = install.get("total_s")
            checks.append(
                {
                    "target": f"{r['n']} HelmReleases Ready in < 60 s at replicas 0",
                    "run": r["label"],
                    "value": total,
                    "met": total is not None and total < 60,
                }
            )
        for phase_name in ("install", "upgrade"):
            phase = r["phases"].get(phase_name)
            if phase:
                writes = phase["requests"]["per_release"]["writes"]
                checks.append(
                    {
                        "target": f"< 10 requests written per release ({phase_name})",
                        "run": r["label"],
                        "value": writes,
                        "met": writes < 10,
                    }
                )
        if install:
            checks += install_cost_targets(r, install, results)
        if "steady" in r["phases"]:
            writes = r["phases"]["steady"]["writes"]
            checks.append(
                {"target": "0 writes in steady state", "run": r["label"], "value": writes,
                 "met": writes == 0}
            )  # fmt: skip
        if r["n"] >= 1000:
            rss = r.get("operator_peak_rss_mib", 0)
            checks.append(
                {"target": f"< 300 MiB RSS at {r['n']} releases", "run": r["label"],
                 "value": rss, "met": rss < 300}
            )  # fmt: skip
        if helm and install.get("throughput_per_s") and r["replicas"] == 0:
            best = max(h["throughput_per_s"] for h in helm if h["replicas"] == r["replicas"])
            ratio = install["throughput_per_s"] / best if best else 0
            checks.append(
                {
                    "target": ">= 5x the helm CLI's best throughput",
                    "run": r["label"],
                    "value": round(ratio, 2),
                    "met": ratio >= 5,
                }
            )
    return checks


def install_cost_targets(
    r: dict[str, Any], install: dict[str, Any], results: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Issue 15's bounds on what one install costs: requests, rudder CPU at N=1000, and the
    install time over the API server's floor (when the floor was measured)."""
    per_release = install["requests"]["per_release"]
    checks = [
        {"target": "<= 13 requests per install", "run": r["label"],
         "value": per_release["total"], "met": per_release["total"] <= 13},
    ]  # fmt: skip
    if r["n"] >= 1000:
        cpu_ms = round(1000 * install["operator"]["cpu_s"] / r["n"], 1)
        checks.append(
            {"target": f"<= 25 ms rudder CPU per install at N={r['n']}", "run": r["label"],
             "value": cpu_ms, "met": cpu_ms <= 25}
        )  # fmt: skip
    floor = next((f for f in results if f["kind"] == "floor" and f["n"] == r["n"]), None)
    if floor and floor["total_s"] and install.get("total_s"):
        ratio = round(install["total_s"] / floor["total_s"], 2)
        checks.append(
            {"target": "within 1.5x of the API server's floor", "run": r["label"],
             "value": ratio, "met": ratio <= 1.5}
        )  # fmt: skip
    return checks


def plot(series: dict[str, Any], path: Path, title: str) -> bool:
    """Ready count over time per wave (left) and operator RSS (right); False without
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no plot (pip install matplotlib)")
        return False
    fig, (ready_ax, rss_ax) = plt.subplots(1, 2, figsize=(13, 5))
    for label, data in series.items():
        points = data["ready"]
        if not points:
            continue
        xs = [0.0] + [t for t, _ in points]
        ys = [0] + [c for _, c in points]
        ready_ax.step(xs, ys, where="post", label=label)
        op = data["operator"]
        if op:
            rss_ax.plot([t for t, _, _ in op], [r for _, r, _ in op], label=label)
    ready_ax.set_xlabel("seconds since the wave was applied")
    ready_ax.set_ylabel("HelmReleases Ready")
    ready_ax.set_title("Ready over time")
    ready_ax.grid(alpha=0.3)
    ready_ax.legend(fontsize=7)
    rss_ax.set_xlabel("seconds since the wave was applied")
    rss_ax.set_ylabel("operator RSS (MiB)")
    rss_ax.set_title("controller RSS (Flux: both controllers)")
    rss_ax.grid(alpha=0.3)
    rss_ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_mib": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


# -- main ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--n", type=int, default=200, help="HelmReleases per scenario")
    parser.add_argument(
        "--replicas", default="0", help="replica counts to run, comma-separated: 0, 1 or 0,1"
    )
    parser.add_argument("--concurrency", type=int, help="rudder --concurrency (default: its own)")
    parser.add_argument("--qps", type=float, help="rudder --kube-api-qps (0: unlimited)")
    parser.add_argument("--burst", type=int, help="rudder --kube-api-burst")
    parser.add_argument("--steady-seconds", type=float, default=180.0)
    parser.add_argument(
        "--interval", type=int, default=INTERVAL_SECONDS, help="spec.interval in seconds"
    )
    parser.add_argument("--no-upgrade", action="store_true", help="skip the upgrade wave")
    parser.add_argument(
        "--wave-timeout", type=float, help="give up on a wave after this (default: max(300, 1.5 N))"
    )
    parser.add_argument("--namespaces", type=int, default=10, help="spread releases over these")
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="concurrency sweep at N=200, replicas 0, install only (see --sweep-*)",
    )
    parser.add_argument("--sweep-n", type=int, default=200)
    parser.add_argument(
        "--sweep-timeout", type=float, default=180.0, help="give up on a sweep wave after this"
    )
    parser.add_argument(
        "--sweep-points",
        default=DEFAULT_SWEEP,
        help="CONCURRENCY@QPS:BURST,... (QPS 0: unlimited)",
    )
    parser.add_argument(
        "--only-sweep", action="store_true", help="run the sweep without the main scenarios"
    )
    parser.add_argument(
        "--helm-baseline",
        action="store_true",
        help="also install N releases with the helm v4 CLI: sequential and xargs -P cores",
    )
    parser.add_argument("--helm-n", type=int, help="releases for the helm baseline (default N)")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also time a minimal client making only the writes a release must cost "
        "(the API server's floor), and report rudder's ratio to it",
    )
    parser.add_argument(
        "--flux",
        action="store_true",
        help="also run the same releases by Flux (helm-controller and source-controller, "
        "built by `e2e/build-tools.sh flux`) after rudder's scenarios, and report the ratios",
    )
    parser.add_argument(
        "--flux-concurrent",
        type=int,
        help="helm-controller --concurrent (default: not passed, the controller's own)",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy record the operator")
    parser.add_argument(
        "--post-renderer",
        action="store_const",
        const="add-label",
        help="run each scenario again with the add-label Wasm post-renderer (e2e/wasm-plugins) "
        "on every HelmRelease, and report its cost",
    )
    parser.add_argument(
        "--source",
        default="worktree",
        help="operator code: 'worktree', or a git revision to snapshot (e.g. HEAD)",
    )
    parser.add_argument("--smoke", action="store_true", help="CI: N=20, steady 20 s, replicas 0")
    parser.add_argument("--out", type=Path, default=REPO / "artifacts" / "bench")
    parser.add_argument("--name", help="results sub-directory (default: a timestamp)")
    parser.add_argument(
        "--keep-cluster", action="store_true", help="leave the control plane running"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.n, args.replicas, args.steady_seconds, args.interval = 20, "0", 20.0, 8
        args.sweep = args.helm_baseline = args.only_sweep = args.floor = args.flux = False
        args.name = args.name or "smoke"
    return args


def build_scenarios(args: argparse.Namespace) -> list[Scenario]:
    scenarios = []
    if not args.only_sweep:
        for replicas in (int(r) for r in str(args.replicas).split(",")):
            scenarios.append(
                Scenario(
                    label=f"n{args.n}-r{replicas}",
                    n=args.n,
                    replicas=replicas,
                    concurrency=args.concurrency,
                    qps=args.qps,
                    burst=args.burst,
                    upgrade=not args.no_upgrade,
                    steady_seconds=args.steady_seconds,
                    namespaces=args.namespaces,
                    profile=args.profile,
                    interval=args.interval,
                    wave_timeout=args.wave_timeout,
                )
            )
    if args.post_renderer:
        scenarios += [
            dataclasses.replace(
                scenario, label=f"{scenario.label}-wasm", post_renderer=args.post_renderer
            )
            for scenario in scenarios
        ]
    if args.sweep or args.only_sweep:
        for point in args.sweep_points.split(","):
            concurrency, _, limits = point.partition("@")
            qps, _, burst = limits.partition(":")
            scenarios.append(
                Scenario(
                    label=f"sweep-c{concurrency}-q{qps}-b{burst}",
                    n=args.sweep_n,
                    replicas=0,
                    concurrency=int(concurrency),
                    qps=float(qps),
                    burst=int(burst),
                    upgrade=False,
                    steady_seconds=0,
                    namespaces=args.namespaces,
                    profile=args.profile,
                    wave_timeout=args.sweep_timeout,
                )
            )
    return scenarios


def operator_source(source: str, workdir: Path) -> dict[str, str]:
    """Run the operator from the working tree, or from a snapshot of one commit (`git
    archive`, read-only) so that edits landing during a long run do not change what is
    measured. Returns what to record."""

    def git(*argv: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPO), *argv], capture_output=True, text=True, check=True
        ).stdout.strip()

    if source == "worktree":
        dirty = bool(git("status", "--porcelain", "--", "operator"))
        return {"source": "worktree", "commit": git("rev-parse", "HEAD"), "dirty": str(dirty)}
    commit = git("rev-parse", "--verify", f"{source}^{{commit}}")
    dest = workdir / "src"
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit, "operator"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    # PYTHONPATH comes before the editable install's path: the operator imports this copy.
    os.environ["PYTHONPATH"] = str(dest / "operator")
    return {"source": source, "commit": commit, "dirty": "False"}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    name = args.name or time.strftime("%Y%m%d-%H%M%S")
    out: Path = (args.out / name).resolve()
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="rudder-bench-"))
    cluster = LocalCluster(workdir / "cluster")
    command = " ".join([Path(sys.executable).name, *sys.argv]) if argv is None else str(argv)
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": command,
        "machine": machine(),
        "results": [],
    }
    started = time.monotonic()
    try:
        if args.flux:
            log("building Flux's controllers (a warm run only re-links them)")
            flux.build()
        report["operator_source"] = operator_source(args.source, workdir)
        log(f"operator source: {report['operator_source']}")
        log(f"starting a local control plane in {workdir / 'cluster'}")
        state = cluster.start()
        log(f"control plane up in {time.monotonic() - started:.1f}s")
        chart_dir = write_chart(workdir / "chart", "podinfo", "6.7.0", TEMPLATES, CHART_VALUES)
        chart_ref = push(state.registry, chart_dir)
        kubectl = [str(TOOLS / "kubectl"), f"--kubeconfig={state.kubeconfig}"]
        install_prerequisites(kubectl)
        sa_kubeconfig = service_account_kubeconfig(
            kubectl, Path(state.kubeconfig), workdir / "rudder.kubeconfig"
        )
        bench = Bench(state, chart_ref, out, workdir, sa_kubeconfig, chart_dir)
        if args.post_renderer:
            args.post_renderer = push_plugin(state.registry, args.post_renderer)
            report["post_renderer"] = args.post_renderer
        report["chart"] = chart_ref
        for index, scenario in enumerate(build_scenarios(args)):
            result = run_scenario(bench, scenario, f"s{index}")
            bench.results.append(result)
            report["results"] = bench.results
            (out / "results.json").write_text(json.dumps(report, indent=2))
        if args.flux:
            replicas = int(str(args.replicas).split(",")[0])
            scenario = Scenario(
                label=f"flux-n{args.n}-r{replicas}",
                n=args.n,
                replicas=replicas,
                upgrade=not args.no_upgrade,
                namespaces=args.namespaces,
                interval=args.interval,
                wave_timeout=args.wave_timeout,
            )
            kubeconfigs = flux.install(kubectl, Path(state.kubeconfig), workdir / "flux")
            bench.results.append(
                flux_scenario(bench, scenario, "x0", kubeconfigs, args.flux_concurrent)
            )
            report["results"] = bench.results
            report["flux_ratios"] = flux_ratios(bench.results)
            (out / "results.json").write_text(json.dumps(report, indent=2))
        if args.helm_baseline:
            helm_n = args.helm_n or args.n
            replicas = int(str(args.replicas).split(",")[0])
            for index, parallel in enumerate(sorted({1, os.cpu_count() or 1})):
                bench.results.append(helm_scenario(bench, helm_n, replicas, parallel, f"h{index}"))
                report["results"] = bench.results
                (out / "results.json").write_text(json.dumps(report, indent=2))
        if args.floor:
            replicas = int(str(args.replicas).split(",")[0])
            bench.results.append(floor_scenario(bench, args.n, replicas, "f0"))
            report["results"] = bench.results
            report["floor_ratios"] = floor_ratios(bench.results)
        report["targets"] = targets(bench.results)
        report["wall_s"] = round(time.monotonic() - started, 1)
        (out / "results.json").write_text(json.dumps(report, indent=2))
        text = table(bench.results)
        (out / "table.md").write_text(
            f"{report['date']} — {report['machine']['cpu']}, {report['machine']['cores']} cores"
            f"\n\n{text}\n"
            + "".join(f"- {line}\n" for line in flux_ratio_lines(report.get("flux_ratios", [])))
            + f"\n```\n{requests_table(bench.results)}```\n"
        )
        main_series = {k: v for k, v in bench.series.items() if not k.startswith("sweep")}
        sweep_series = {k: v for k, v in bench.series.items() if k.startswith("sweep")}
        if main_series:
            who = "rudder and Flux" if args.flux else "rudder"
            plot(main_series, out / "ready-over-time.png", f"{who}, N={args.n} ({name})")
        if sweep_series:
            plot(sweep_series, out / "sweep.png", f"rudder concurrency/QPS sweep, N={args.sweep_n}")
        print(text)
        for line in report.get("floor_ratios", []):
            print(f"  {line}")
        for line in flux_ratio_lines(report.get("flux_ratios", [])):
            print(f"  {line}")
        for check in report["targets"]:
            mark = "met" if check["met"] else "MISSED"
            print(f"  {mark:6} {check['target']} [{check['run']}]: {check['value']}")
        print(f"results in {out}")
    finally:
        if args.keep_cluster:
            log(f"control plane left running in {workdir / 'cluster'}")
        else:
            cluster.stop()
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if invariants_hold(report) else 1


def invariants_hold(report: dict[str, Any]) -> bool:
    """All Ready in every wave, and nothing written in the steady state."""
    ok = True
    for result in report.get("results", []):
        if result["kind"] not in ("rudder", "flux"):
            continue
        for name, phase in result["phases"].items():
            if name == "steady" and phase["writes"] != 0:
                ok = False
            if name != "steady" and phase["ready"] != phase["n"]:
                ok = False
        if "install" not in result["phases"]:
            ok = False
    return ok and bool(report.get("results"))


if __name__ == "__main__":
    sys.exit(main())

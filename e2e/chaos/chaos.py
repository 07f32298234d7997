"""Fault injection for rudder on a local control plane of its own (`make chaos`).

    .venv/bin/python e2e/chaos/chaos.py [--n 50] [--kills 22] [--seed S]
        [--scenarios kill,leader,registry,apiserver] [--out artifacts/chaos] [--name NAME]
    .venv/bin/python e2e/chaos/chaos.py --smoke      # CI: N=10, 6 kills, about 2.5 minutes

Scenarios (each with HelmReleases and operator processes of its own, `--selector`):
  kill       kill -9 the operator at random moments of an install wave and of upgrade
             waves (values and chart alternate, so upgrades add and drop objects), restart it
  leader     two replicas with --leader-elect; kill -9 the leader during upgrade waves
  registry   stop the OCI registry while releases need a chart from it, start it again
  apiserver  restart kube-apiserver (same ports and flags) in the middle of upgrade waves

After each wave and each scenario every HelmRelease must converge (Ready=True at its latest
generation) and the invariants of invariants.py must hold: nothing pending, revisions
1..n, one deployed revision (the current generation's), no generation recorded as a success
twice, `helm history` (v4, and v3 for a sample) equal to the Secrets, no orphaned, missing
or doubly-claimed object, and every release Secret created once (audit log).

Writes OUT/NAME/report.json and prints a table; the exit status is 1 when a scenario fails.
See e2e/chaos/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gzip
import hashlib
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "e2e"), str(REPO / "e2e" / "bench"), str(Path(__file__).parent)]

from bench_releases import (  # noqa: E402
    CHART_VALUES,
    TEMPLATES,
    log,
    machine,
    namespace_list,
    peak_rss_mib,
)
from invariants import (  # noqa: E402
    JSON,
    PENDING,
    RELEASE_NAME,
    Check,
    Key,
    Snapshot,
    check,
    check_helm_history,
    check_objects,
    check_records,
    check_single_writes,
    failed_revisions,
    get_items,
    identity_of,
    managed_objects,
    not_converged,
)

import audit  # noqa: E402
from charts import push, write_chart  # noqa: E402
from conftest import Cluster  # noqa: E402
from helpers import condition  # noqa: E402
from localcluster import LocalCluster  # noqa: E402
from operator_process import (  # noqa: E402
    ELECTION,
    LEASE_SECONDS,
    OperatorProcess,
    install_prerequisites,
    service_account_kubeconfig,
)

# The apiserver scenario runs last: kwok's nodes can go NotReady after the restart, and the
# node controller then marks their pods NotReady for good (kwok does not make them Ready
# again), which would fail the readiness waits of any scenario after it.
SCENARIOS = ("kill", "leader", "registry", "apiserver")
UNAVAILABLE = "Ready=False RegistryUnavailable"  # what a release says while it cannot pull
STALL_GRACE = 30.0  # seconds every HelmRelease still waiting has been Stalled: give up
SCENARIO_LABEL = "chaos.rudder.dev/scenario"
NAMESPACES_PER_SCENARIO = 3

# A second chart shape: the Ingress goes and a ConfigMap comes, so an upgrade interrupted
# between applying and pruning shows up as an orphaned or a missing object.
SETTINGS_TEMPLATE = """apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-settings
  labels:
    {{- include "podinfo.labels" . | nindent 4 }}
data:
  message: {{ .Values.ui.message | quote }}
"""
CHARTS: dict[str, tuple[str, dict[str, str]]] = {
    "v1": ("6.7.0", dict(TEMPLATES)),
    "v2": (
        "6.8.0",
        {
            **{k: v for k, v in TEMPLATES.items() if k != "ingress.yaml"},
            "settings.yaml": SETTINGS_TEMPLATE,
        },
    ),
    # Never used before the registry outage, so no operator has it cached.
    "v3": ("6.9.0", dict(TEMPLATES)),
}


# -- the run's shared pieces -----------------------------------------------------------------


@dataclass
class Chaos:
    """The control plane, the pushed charts and the run's settings."""

    args: argparse.Namespace
    local: LocalCluster
    cluster: Cluster
    charts: dict[str, str]  # "v1" -> digest-pinned oci:// reference
    sa_kubeconfig: Path
    workdir: Path
    out: Path
    rng: random.Random
    operators: list[OperatorProcess] = field(default_factory=list)  # for the final cleanup

    def items(self, *args: str) -> list[JSON] | None:
        """`kubectl get -o json` items, or None while the API server does not answer."""
        try:
            return get_items(self.cluster, *args)
        except (AssertionError, subprocess.TimeoutExpired, json.JSONDecodeError):
            return None


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass
class Fleet:
    """One scenario's HelmReleases; `apply` sends a wave (new values, maybe a new chart)."""

    scenario: str
    keys: list[Key]
    interval: int
    timeout: str
    replicas: int
    waves: dict[Key, int] = field(default_factory=dict)  # waves applied to each release

    @classmethod
    def create(cls, chaos: Chaos, scenario: str, n: int, replicas: int | None = None) -> Fleet:
        namespaces = [f"chaos-{scenario}-{k}" for k in range(NAMESPACES_PER_SCENARIO)]
        chaos.cluster.kubectl(
            "apply",
            "-f",
            "-",
            input=namespace_list(namespaces),
        )
        keys = [(namespaces[i % len(namespaces)], f"podinfo-{i:03d}") for i in range(n)]
        replicas = chaos.args.replicas if replicas is None else replicas
        return cls(scenario, keys, chaos.args.interval, chaos.args.timeout, replicas)

    @property
    def selector(self) -> str:
        return f"{SCENARIO_LABEL}={self.scenario}"

    @property
    def namespaces(self) -> list[str]:
        return sorted({ns for ns, _ in self.keys})

    def helmrelease(self, key: Key, chart_ref: str, wave: int) -> JSON:
        index = self.keys.index(key) if key in self.keys else 0
        return {
            "apiVersion": "rudder.dev/v1alpha1",
            "kind": "HelmRelease",
            "metadata": {
                "name": key[1],
                "namespace": key[0],
                "labels": {SCENARIO_LABEL: self.scenario},
            },
            "spec": {
                "chart": {"ref": chart_ref, "insecure": True},
                "interval": f"{self.interval}s",
                "timeout": self.timeout,
                "maxHistory": 0,  # keep every revision: contiguity is checked from 1
                "values": {
                    "replicaCount": self.replicas,
                    "ui": {"message": f"{key[1]} wave {wave}"},
                    "ingress": {"host": f"podinfo-{index}.chaos.test"},
                },
            },
        }

    def apply(self, chaos: Chaos, keys: Sequence[Key], chart_ref: str, wave: int) -> None:
        for key in keys:
            if key not in self.keys:
                self.keys.append(key)
            self.waves[key] = self.waves.get(key, 0) + 1
        items = [self.helmrelease(key, chart_ref, wave) for key in keys]
        path = chaos.workdir / f"{self.scenario}-wave{wave}.json"
        path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
        chaos.cluster.kubectl("apply", "--server-side", "--field-manager=chaos", "-f", str(path))

    def helmreleases(self, chaos: Chaos) -> dict[Key, JSON] | None:
        items = chaos.items("helmreleases.rudder.dev", "-A", "-l", self.selector)
        if items is None:
            return None
        return {(i["metadata"]["namespace"], i["metadata"]["name"]): i for i in items}

    def pending(self, chaos: Chaos) -> int | None:
        """Release Secrets of this fleet pending right now (an action under way)."""
        selector = f"owner=helm,status in ({','.join(sorted(PENDING))})"
        items = chaos.items("secrets", "-A", "-l", selector)
        if items is None:
            return None
        wanted = set(self.namespaces)
        return sum(1 for s in items if s["metadata"]["namespace"] in wanted)


def chart_for_wave(chaos: Chaos, wave: int) -> str:
    """Waves alternate the chart's shape (v1, v2, v1, ...) so upgrades add and drop objects."""
    return chaos.charts["v1" if wave % 2 == 0 else "v2"]


# -- operator replicas -----------------------------------------------------------------------


class Replicas:
    """A scenario's operator processes, each restarted in place after a kill (same work
    directory, chart cache and log, as a pod keeps its volumes), and their peak RSS."""

    def __init__(self, chaos: Chaos, scenario: str, count: int, extra: Sequence[str]) -> None:
        args = [
            "--log-level=info",
            f"--selector={SCENARIO_LABEL}={scenario}",
            f"--concurrency={chaos.args.concurrency}",
            *extra,
        ]
        self.chaos = chaos
        self.scenario = scenario
        self.procs = [
            OperatorProcess(chaos.sa_kubeconfig, chaos.workdir / f"operator-{scenario}-{i}", args)
            for i in range(count)
        ]
        chaos.operators.extend(self.procs)
        self.offsets = [0] * count  # where each one's current incarnation starts in its log
        self.kills: list[JSON] = []
        self.self_exits: list[str] = []
        self.peak_rss_mib = 0.0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            for proc in self.procs:
                popen = proc.process
                if popen is not None:
                    self.peak_rss_mib = max(self.peak_rss_mib, peak_rss_mib(popen.pid))

    def start(self, index: int) -> None:
        proc = self.procs[index]
        self.offsets[index] = proc.log_path.stat().st_size if proc.log_path.exists() else 0
        proc.start(timeout=90)

    def kill(self, index: int, *, restart_after: float | None, pending: int | None) -> None:
        """kill -9; start again after `restart_after` seconds (None: leave it down)."""
        popen = self.procs[index].process
        if popen is not None:
            self.peak_rss_mib = max(self.peak_rss_mib, peak_rss_mib(popen.pid))
        self.procs[index].kill()
        self.kills.append(
            {"replica": index, "at": utcnow().isoformat(timespec="milliseconds"),
             "pending_revisions": pending}
        )  # fmt: skip
        if restart_after is not None:
            time.sleep(restart_after)
            self.start(index)

    def supervise(self) -> None:
        """Restart a replica that exited by itself (as its Deployment would), noting why."""
        for index, proc in enumerate(self.procs):
            popen = proc.process
            if popen is not None and popen.poll() is not None:
                self.self_exits.append(
                    f"replica {index} exited {popen.returncode}: {proc.tail(3)[-300:]}"
                )
                proc.process = None
                self.start(index)

    def log_segment(self, index: int) -> str:
        """The log of the replica's current incarnation."""
        with self.procs[index].log_path.open("rb") as handle:
            handle.seek(self.offsets[index])
            return handle.read().decode(errors="replace")

    def holding(self, holder: str) -> int | None:
        """The replica whose current incarnation is the Lease holder `holder`: the one that
        logged that identity (every version of rudder's election logs it when it leads)."""
        if not holder:
            return None
        return next((i for i in range(len(self.procs)) if holder in self.log_segment(i)), None)

    def errors(self) -> dict[str, int]:
        """Unexpected reconcile errors and tracebacks in all the replicas' logs."""
        counts = {"reconcile failed unexpectedly": 0, "tracebacks": 0}
        for proc in self.procs:
            with contextlib.suppress(OSError):
                text = proc.log_path.read_text(errors="replace")
                counts["reconcile failed unexpectedly"] += text.count("failed unexpectedly")
                counts["tracebacks"] += text.count("Traceback (most recent call last)")
        return counts

    def stop(self) -> None:
        self._stop.set()
        self._sampler.join(timeout=5)
        for index, proc in enumerate(self.procs):
            if proc.process is not None:
                self.peak_rss_mib = max(self.peak_rss_mib, peak_rss_mib(proc.process.pid))
            proc.stop()
            with contextlib.suppress(OSError):
                shutil.copy(proc.log_path, self.chaos.out / f"operator-{self.scenario}-{index}.log")


# -- a scenario's frame ------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    n: int
    started: float = field(default_factory=time.monotonic)
    since: datetime.datetime = field(default_factory=utcnow)
    faults: dict[str, int] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    last_fault: float | None = None  # when the last fault began
    last_recovery: float | None = None  # when what it took away was back

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def fault(self, kind: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1
        self.last_fault = time.monotonic()

    def recovered(self) -> None:
        self.last_recovery = time.monotonic()

    def as_json(self) -> JSON:
        return {
            "name": self.name,
            "passed": self.passed,
            "n": self.n,
            "faults": self.faults,
            "wall_s": round(time.monotonic() - self.started, 1),
            **self.facts,
            "checks": [c.as_json() for c in self.checks],
        }


def at_generation(hr: JSON) -> bool:
    """The status is about the HelmRelease's current generation."""
    return bool((hr.get("status") or {}).get("observedGeneration") == hr["metadata"]["generation"])


def stalled(hr: JSON) -> bool:
    """Stalled=True for the current generation: rudder will not retry without a change."""
    return at_generation(hr) and condition(hr, "Stalled").get("status") == "True"


def wait_converged(
    chaos: Chaos, fleet: Fleet, replicas: Replicas, timeout: float
) -> tuple[float | None, dict[str, str]]:
    """(monotonic time every HelmRelease was Ready at its generation, or None; the ones
    still waiting when it gave up)."""
    deadline = time.monotonic() + timeout
    waiting: dict[str, str] = {"-": "never read"}
    last_note = time.monotonic()
    stalled_since: float | None = None
    while time.monotonic() < deadline:
        replicas.supervise()
        hrs = fleet.helmreleases(chaos)
        if hrs is not None:
            waiting = not_converged(hrs)
            if len(hrs) == len(fleet.keys) and not waiting:
                return time.monotonic(), {}
            if waiting and all(stalled(hr) for (ns, name), hr in hrs.items()
                               if f"{ns}/{name}" in waiting):  # fmt: skip
                stalled_since = stalled_since or time.monotonic()
                if time.monotonic() - stalled_since > STALL_GRACE:
                    log(f"  {fleet.scenario}: every HelmRelease not converged is Stalled")
                    break
            else:
                stalled_since = None
        if time.monotonic() - last_note > 15:
            last_note = time.monotonic()
            log(f"  {fleet.scenario}: {len(waiting)} HelmRelease(s) not converged yet")
        time.sleep(1.0)
    return None, waiting


def conclude(
    chaos: Chaos, fleet: Fleet, replicas: Replicas, result: Result, *, extra: Sequence[Check]
) -> Result:
    """Wait for convergence after the last fault, then check every invariant."""
    converged_at, waiting = wait_converged(chaos, fleet, replicas, chaos.args.converge_timeout)
    for fact, since in (
        ("converge_after_last_fault_s", result.last_fault),
        ("converge_after_recovery_s", result.last_recovery),
    ):
        if converged_at is not None and since is not None:
            result.facts[fact] = round(converged_at - since, 1)
    result.checks.append(
        check(
            "every HelmRelease Ready at its latest generation",
            [f"{k}: {v}" for k, v in waiting.items()],
            f"{len(fleet.keys)} HelmReleases",
        )
    )
    result.checks.extend(extra)
    result.checks.append(check("operator never exited by itself", replicas.self_exits))
    snapshot = Snapshot.read(chaos.cluster, fleet.selector)
    evidence = chaos.out / f"records-{result.name}.json"
    evidence.write_text(json.dumps(snapshot.evidence(), indent=1))
    result.checks.extend(check_records(snapshot, max_successes=fleet.waves))
    result.checks.extend(
        check_helm_history(chaos.cluster, snapshot, helm3_sample=chaos.args.helm3_sample)
    )
    result.checks.extend(check_objects(chaos.cluster, snapshot))
    audit.settle()
    single, facts = check_single_writes(
        Path(chaos.local.dir / "audit.log"), fleet.namespaces, result.since
    )
    result.checks.extend(single)
    result.facts.update(facts)
    revisions = sum(len(snapshot.records(k)) for k in snapshot.helmreleases)
    result.facts["revisions"] = revisions
    result.facts["waves_applied"] = sum(fleet.waves.values())
    result.facts["failed_revisions"] = failed_revisions(snapshot)
    result.facts["kills"] = replicas.kills
    result.facts["operator_peak_rss_mib"] = round(replicas.peak_rss_mib, 1)
    result.facts["operator_log"] = replicas.errors()
    result.facts["stalled"] = {
        f"{ns}/{name}": f"{condition(hr, 'Ready').get('reason')}: "
        f"{condition(hr, 'Ready').get('message')}"
        for (ns, name), hr in snapshot.helmreleases.items()
        if stalled(hr)
    }
    return result


@contextlib.contextmanager
def scenario(chaos: Chaos, name: str, n: int) -> Iterator[Result]:
    log(f"scenario {name}: N={n}")
    result = Result(name, n)
    try:
        yield result
    except Exception as error:
        # A scenario that crashes is a failed scenario with its cause; the others still run.
        result.checks.append(Check("scenario ran to the end", False, f"{type(error).__name__}: "
                                   f"{str(error)[-1500:]}"))  # fmt: skip
        log(f"  {name}: crashed: {error!r}")
    log(
        f"  {name}: {'PASS' if result.passed else 'FAIL'} "
        f"(converged {result.facts.get('converge_after_last_fault_s')} s after the last fault)"
    )
    for failed in (c for c in result.checks if not c.ok):
        log(f"    FAILED {failed.name}: {failed.detail[:600]}")


# -- scenarios -------------------------------------------------------------------------------


def strike(chaos: Chaos, fleet: Fleet, low: float, high: float, targeted: bool) -> int | None:
    """Wait for the moment of a fault: a random one within [low, high] seconds, or (when
    `targeted`) the first moment within that time a revision is pending, so the fault lands
    inside an action. Returns the revisions pending then; None when the wave has converged
    meanwhile (a fault now would hit an idle operator)."""
    deadline = time.monotonic() + chaos.rng.uniform(low, high)
    while targeted and time.monotonic() < deadline:
        pending = fleet.pending(chaos)
        if pending:
            return pending
    time.sleep(max(0.0, deadline - time.monotonic()))
    hrs = fleet.helmreleases(chaos)
    if hrs is not None and len(hrs) == len(fleet.keys) and not not_converged(hrs):
        return None
    return fleet.pending(chaos)


@dataclass
class Waves:
    """Each wave must converge and pass the record and object invariants before the next
    one: a later wave could otherwise hide what an interrupted one left behind (by applying
    again an object the interrupted one failed to prune, say)."""

    chaos: Chaos
    fleet: Fleet
    replicas: Replicas
    done: int = 0
    failed: list[Check] = field(default_factory=list)

    def settle(self, wave: int) -> bool:
        """Wait for `wave` to converge and check it; False when it never converged."""
        timeout = self.chaos.args.converge_timeout
        converged, waiting = wait_converged(self.chaos, self.fleet, self.replicas, timeout)
        if converged is None:
            self.failed.append(check(f"wave {wave} converged", list(waiting.items())))
            return False
        snapshot = Snapshot.read(self.chaos.cluster, self.fleet.selector)
        checks = check_records(snapshot, max_successes=self.fleet.waves)
        checks += check_objects(self.chaos.cluster, snapshot)
        failed = [
            Check(f"after wave {wave}: {c.name}", False, c.detail) for c in checks if not c.ok
        ]
        if failed:
            path = self.chaos.out / f"records-{self.fleet.scenario}-wave{wave}.json"
            path.write_text(json.dumps(snapshot.evidence(), indent=1))
        self.failed += failed
        self.done += 1
        return True

    def checks(self) -> list[Check]:
        return self.failed or [Check("invariants after every wave", True, f"{self.done} waves")]


def run_kill(chaos: Chaos) -> Result:
    """kill -9 the operator at random moments during an install wave and upgrade waves.

    Kills are spread over at least three waves (install, then upgrades that alternate the
    chart's shape, so each adds one object and drops another). Every other kill waits for a
    revision to be pending, so kills land inside actions, not only between them; a kill
    due when the wave has already converged moves to the next wave. Each wave must converge
    and pass the record and object invariants before the next one."""
    args = chaos.args
    with scenario(chaos, "kill", args.n) as result:
        fleet = Fleet.create(chaos, "kill", args.n)
        replicas = Replicas(chaos, "kill", 1, [])
        waves = Waves(chaos, fleet, replicas)
        try:
            replicas.start(0)
            per_wave = max(1, math.ceil(args.kills / 3))
            kills_left, wave = args.kills, 0
            # Bounded: an operator faster than every strike would otherwise get waves forever.
            while (kills_left > 0 or wave < 3) and wave < 3 * args.kills + 3:
                fleet.apply(chaos, list(fleet.keys), chart_for_wave(chaos, wave), wave)
                for attempt in range(min(per_wave, kills_left)):
                    pending = strike(
                        chaos, fleet, args.kill_gap_min, args.kill_gap_max, attempt % 2 == 0
                    )
                    if pending is None:
                        break  # converged already: the rest of its kills go to the next wave
                    result.fault("operator kill -9")
                    replicas.kill(0, restart_after=chaos.rng.uniform(0, 1.0), pending=pending)
                    result.recovered()
                    kills_left -= 1
                    log(f"  kill {args.kills - kills_left}/{args.kills} (wave {wave}, "
                        f"{pending} revisions pending)")  # fmt: skip
                if not waves.settle(wave):
                    break
                wave += 1
            mid_action = sum(1 for k in replicas.kills if k["pending_revisions"])
            result.facts["kills_with_a_revision_pending"] = mid_action
            result.facts["waves"] = wave
            landed = check(
                f"{args.kills} kills landed during waves",
                [f"only {args.kills - kills_left}"] if kills_left else [],
            )
            conclude(chaos, fleet, replicas, result, extra=[landed, *waves.checks()])
        finally:
            replicas.stop()
    return result


def lease_holder(chaos: Chaos) -> str:
    items = chaos.items("leases", "-n", "rudder-system", "--field-selector",
                        "metadata.name=rudder-leader")  # fmt: skip
    if not items:
        return ""
    return str((items[0].get("spec") or {}).get("holderIdentity") or "")


def wait_for(probe: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.25)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def lines_before_leading(replicas: Replicas, index: int, needles: Sequence[str]) -> list[str]:
    """Log lines of a replica's current incarnation that mention one of `needles` before the
    line where it names itself the Lease holder (while it was a standby)."""
    holder = lease_holder(replicas.chaos)
    found = []
    for line in replicas.log_segment(index).splitlines():
        if holder and holder in line:
            break
        if any(needle in line for needle in needles):
            found.append(line[:200])
    return found


def run_leader(chaos: Chaos) -> Result:
    """Two replicas with --leader-elect; kill -9 the leader during upgrade waves; the standby
    takes over, reconciles nothing before that, and no revision is written twice."""
    args = chaos.args
    with scenario(chaos, "leader", args.n) as result:
        fleet = Fleet.create(chaos, "leader", args.n)
        replicas = Replicas(chaos, "leader", 2, ELECTION)
        takeovers: list[float] = []
        early: list[str] = []
        waves = Waves(chaos, fleet, replicas)
        try:
            replicas.start(0)
            wait_for(lambda: replicas.holding(lease_holder(chaos)) == 0, 60, "replica 0 to lead")
            replicas.start(1)
            fleet.apply(chaos, fleet.keys, chart_for_wave(chaos, 0), 0)
            if wait_converged(chaos, fleet, replicas, args.converge_timeout)[0] is None:
                raise RuntimeError("the install wave did not converge before any fault")
            for wave in range(1, args.leader_kills + 1):
                fleet.apply(chaos, list(fleet.keys), chart_for_wave(chaos, wave), wave)
                holder = lease_holder(chaos)
                leader = replicas.holding(holder)
                if leader is None:
                    raise RuntimeError(f"no replica logged the Lease holder {holder!r}")
                standby = 1 - leader
                pending = strike(chaos, fleet, 0.5, 4.0, targeted=True)
                killed = time.monotonic()
                result.fault("leader kill -9")
                replicas.kill(leader, restart_after=None, pending=pending)
                log(f"  killed leader replica {leader} ({pending} revisions pending)")

                def took_over(standby: int = standby) -> bool:
                    return replicas.holding(lease_holder(chaos)) == standby

                wait_for(took_over, 4 * LEASE_SECONDS, "the standby to take the lease")
                takeovers.append(round(time.monotonic() - killed, 1))
                early += [
                    f"replica {standby}: {line}"
                    for line in lines_before_leading(
                        replicas, standby, [f"{ns}/" for ns in fleet.namespaces]
                    )
                ]
                result.recovered()
                replicas.start(leader)  # back as the standby, as a restarted pod would be
                if not waves.settle(wave):
                    break
            result.facts["takeover_s"] = takeovers
            bound = LEASE_SECONDS + 10
            extra = [
                check(
                    f"standby took over within {bound} s",
                    [t for t in takeovers if t > bound],
                    f"takeovers after {takeovers} s",
                ),
                check("a standby reconciled nothing before it led", early),
                *waves.checks(),
            ]
            conclude(chaos, fleet, replicas, result, extra=extra)
        finally:
            replicas.stop()
    return result


def run_apiserver(chaos: Chaos) -> Result:
    """Restart kube-apiserver in the middle of waves: the operator keeps running (it is not
    restarted) and must pick up where it was, with nothing lost."""
    args = chaos.args
    with scenario(chaos, "apiserver", args.n) as result:
        # No pods: ones on a node kwok let go NotReady during the restart never become
        # Ready again, which is kwok's doing, not rudder's (see SCENARIOS).
        fleet = Fleet.create(chaos, "apiserver", args.n, replicas=0)
        replicas = Replicas(chaos, "apiserver", 1, [])
        try:
            replicas.start(0)
            assert replicas.procs[0].process is not None
            pid = replicas.procs[0].process.pid
            waves = Waves(chaos, fleet, replicas)
            for wave in range(args.apiserver_restarts + 1):
                fleet.apply(chaos, list(fleet.keys), chart_for_wave(chaos, wave), wave)
                if wave > 0:  # the install converges undisturbed; each upgrade wave is hit
                    pending = strike(chaos, fleet, 0.5, 4.0, targeted=True)
                    down = chaos.rng.uniform(1.0, args.apiserver_down_max)
                    log(f"  restarting kube-apiserver, down {down:.1f} s ({pending} pending)")
                    result.fault("kube-apiserver restart")
                    chaos.local.restart("kube-apiserver", down_seconds=down, grace=3.0)
                    result.recovered()
                    result.facts.setdefault("pending_at_restart", []).append(pending)
                if not waves.settle(wave):
                    break
            popen = replicas.procs[0].process
            still = popen is not None and popen.pid == pid and popen.poll() is None
            conclude(
                chaos,
                fleet,
                replicas,
                result,
                extra=[
                    check("the same operator process recovered", [] if still else ["exited"]),
                    *waves.checks(),
                ],
            )
        finally:
            replicas.stop()
    return result


def object_marks(chaos: Chaos, fleet: Fleet) -> dict[str, str]:
    """What would change if anything touched a release: the uid, generation, labels and
    annotations of each object annotated as a release's, and each release Secret's
    resourceVersion."""
    marks = {}
    for obj in managed_objects(chaos.cluster, fleet.namespaces):
        meta = obj["metadata"]
        if RELEASE_NAME not in (meta.get("annotations") or {}):
            # Not a release's: e.g. an EndpointSlice, which copies its Service's labels and
            # which the endpoint controllers keep updating.
            continue
        state = [meta.get("uid"), meta.get("generation"), meta.get("labels"),
                 meta.get("annotations")]  # fmt: skip
        marks[str(identity_of(obj, ""))] = json.dumps(state, sort_keys=True)
    for secret in get_items(chaos.cluster, "secrets", "-A", "-l", "owner=helm"):
        meta = secret["metadata"]
        if meta["namespace"] in fleet.namespaces:
            marks[f"secret {meta['namespace']}/{meta['name']}"] = str(meta["resourceVersion"])
    return marks


def writes_during(chaos: Chaos, fleet: Fleet, start: datetime.datetime) -> list[str]:
    """rudder's writes in the fleet's namespaces since `start`, HelmReleases (status,
    finalizer) and Events aside: while the chart cannot be pulled there should be none."""
    audit.settle()
    wanted = set(fleet.namespaces)
    return [
        f"{r.verb} {r.resource} {r.namespace}/{r.name}"
        for r in audit.requests(chaos.local.dir / "audit.log", since=start)
        if r.is_write
        and r.namespace in wanted
        and r.resource not in ("helmreleases", "events")
        and 200 <= r.code < 300
    ]


def run_registry(chaos: Chaos) -> Result:
    """Stop the OCI registry while some releases are upgraded to, and others installed from,
    a chart no operator has cached; they must say the registry is unavailable, installed
    releases must stay as they are, and all must converge once it is back."""
    args = chaos.args
    with scenario(chaos, "registry", args.n) as result:
        fleet = Fleet.create(chaos, "registry", args.n)
        replicas = Replicas(chaos, "registry", 1, [])
        try:
            replicas.start(0)
            fleet.apply(chaos, fleet.keys, chaos.charts["v1"], 0)
            if wait_converged(chaos, fleet, replicas, args.converge_timeout)[0] is None:
                raise RuntimeError("the install wave did not converge before any fault")
            upgraded = fleet.keys[: max(1, len(fleet.keys) // 2)]
            new = [(fleet.namespaces[i % len(fleet.namespaces)], f"late-{i:03d}")
                   for i in range(max(2, args.n // 5))]  # fmt: skip
            before = object_marks(chaos, fleet)
            down_at, down_utc = time.monotonic(), utcnow()
            chaos.local.stop_component("registry")
            result.fault("registry outage")
            log(f"  registry stopped; {len(upgraded)} upgrades and {len(new)} installs need it")
            fleet.apply(chaos, upgraded, chaos.charts["v3"], 1)
            fleet.apply(chaos, new, chaos.charts["v3"], 0)
            affected = {f"{ns}/{name}" for ns, name in [*upgraded, *new]}
            reported: dict[str, str] = {}

            def all_report() -> bool:
                hrs = fleet.helmreleases(chaos) or {}
                for (ns, name), hr in hrs.items():
                    ready = condition(hr, "Ready")
                    if f"{ns}/{name}" in affected and at_generation(hr):
                        reported[f"{ns}/{name}"] = (
                            f"Ready={ready.get('status')} {ready.get('reason')}"
                        )
                return all(reported.get(name) == UNAVAILABLE for name in affected)

            with contextlib.suppress(TimeoutError):
                wait_for(all_report, args.outage_seconds, "RegistryUnavailable everywhere")
            result.facts["registry_condition_after_s"] = round(time.monotonic() - down_at, 1)
            time.sleep(max(0.0, args.outage_seconds - (time.monotonic() - down_at)))
            during = object_marks(chaos, fleet)
            changed = [k for k in before if during.get(k) != before[k]]
            writes = writes_during(chaos, fleet, down_utc)
            chaos.local.start_component("registry")
            result.recovered()
            log(f"  registry back after {time.monotonic() - down_at:.0f} s")
            wrong = sorted(
                f"{name}: {reported.get(name, 'no status for its generation')}"
                for name in affected
                if reported.get(name) != UNAVAILABLE
            )
            extra = [
                check(
                    "Ready=False RegistryUnavailable while the registry is down",
                    wrong,
                    f"{len(affected)} HelmReleases said so",
                ),
                check(
                    "installed releases untouched while it is down",
                    changed,
                    f"{len(before)} objects and records unchanged",
                ),
                check("nothing written but status and events while it is down", writes),
            ]
            conclude(chaos, fleet, replicas, result, extra=extra)
        finally:
            replicas.stop()
            if "registry" not in chaos.local.processes:
                chaos.local.start_component("registry")
    return result


RUNNERS: dict[str, Callable[[Chaos], Result]] = {
    "kill": run_kill,
    "leader": run_leader,
    "apiserver": run_apiserver,
    "registry": run_registry,
}


# -- report --------------------------------------------------------------------------------


def table(results: Sequence[JSON]) -> str:
    rows = [
        "| scenario | N | faults | converged after last fault s | revisions (failed) "
        "| peak RSS MiB | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        faults = ", ".join(f"{n} {kind}" for kind, n in r["faults"].items()) or "-"
        failed = sum((r.get("failed_revisions") or {}).values())
        rows.append(
            f"| {r['name']} | {r['n']} | {faults} | {r.get('converge_after_last_fault_s')} "
            f"| {r.get('revisions', '-')} ({failed}) | {r.get('operator_peak_rss_mib', '-')} "
            f"| {'pass' if r['passed'] else '**FAIL**'} |"
        )
    lines = ["\n".join(rows)]
    for r in results:
        for c in r["checks"]:
            if not c["ok"]:
                lines.append(f"- {r['name']}: {c['name']}: {c['detail'][:400]}")
    return "\n".join(lines) + "\n"


# -- main ----------------------------------------------------------------------------------


def snapshot_operator(workdir: Path) -> JSON:
    """Run every operator process of this run from one copy of operator/: the operator is
    restarted dozens of times, and edits landing in the working tree meanwhile must not
    change the code under test halfway."""
    dest = workdir / "src"
    shutil.copytree(
        REPO / "operator", dest / "operator", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    digest = hashlib.sha256()
    for path in sorted((dest / "operator").rglob("*.py")):
        digest.update(path.relative_to(dest).as_posix().encode() + b"\0" + path.read_bytes())
    # PYTHONPATH comes before the editable install's path: the operator imports this copy.
    os.environ["PYTHONPATH"] = str(dest / "operator")
    subprocess.run([sys.executable, "-c", "import rudder.app"], check=True, capture_output=True)
    return {"source": "snapshot of the working tree", "sha256": digest.hexdigest()[:16]}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--n", type=int, default=50, help="HelmReleases per scenario")
    parser.add_argument("--kills", type=int, default=22, help="kill -9s in the kill scenario")
    parser.add_argument("--seed", type=int, help="random seed (default: from the clock)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated")
    parser.add_argument("--smoke", action="store_true", help="CI: N=10, 6 kills, short faults")
    parser.add_argument("--leader-kills", type=int, default=2)
    parser.add_argument("--apiserver-restarts", type=int, default=2)
    parser.add_argument("--apiserver-down-max", type=float, default=8.0, help="seconds")
    parser.add_argument("--outage-seconds", type=float, default=30.0, help="registry outage")
    parser.add_argument("--kill-gap-min", type=float, default=0.5, help="seconds")
    parser.add_argument("--kill-gap-max", type=float, default=5.0, help="seconds")
    parser.add_argument("--concurrency", type=int, default=8, help="rudder --concurrency")
    parser.add_argument("--replicas", type=int, default=1, help="replicaCount of each release")
    parser.add_argument("--interval", type=int, default=10, help="spec.interval, seconds")
    parser.add_argument("--timeout", default="2m", help="spec.timeout of each HelmRelease")
    parser.add_argument("--converge-timeout", type=float, default=600.0, help="seconds")
    parser.add_argument("--helm3-sample", type=int, default=10, help="releases checked by helm3")
    parser.add_argument(
        "--operator-source",
        choices=["snapshot", "worktree"],
        default="snapshot",
        help="copy operator/ once at the start, or import the working tree at each restart",
    )
    parser.add_argument("--out", type=Path, default=REPO / "artifacts" / "chaos")
    parser.add_argument("--name", help="report sub-directory (default: a timestamp)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.n, args.kills, args.leader_kills, args.apiserver_restarts = 10, 6, 1, 1
        args.outage_seconds, args.apiserver_down_max, args.converge_timeout = 10.0, 3.0, 120.0
        args.kill_gap_max, args.helm3_sample = 3.0, 3
        args.name = args.name or "smoke"
    unknown = set(args.scenarios.split(",")) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s) {sorted(unknown)}; choose from {SCENARIOS}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time())
    name = args.name or time.strftime("%Y%m%d-%H%M%S")
    out: Path = (args.out / name).resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    # SIGTERM (a CI timeout) must still stop the control plane and the operators.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="rudder-chaos-"))
    local = LocalCluster(workdir / "cluster")
    report: JSON = {
        "date": utcnow().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "seed": seed,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": machine(),
        "scenarios": [],
    }
    started = time.monotonic()
    chaos: Chaos | None = None
    try:
        if args.operator_source == "snapshot":
            report["operator_source"] = snapshot_operator(workdir)
        log(f"seed {seed}; starting a local control plane in {workdir / 'cluster'}")
        state = local.start()
        cluster = Cluster(state)
        charts_dir = workdir / "charts"
        charts = {
            label: push(
                state.registry, write_chart(charts_dir / label, "podinfo", v, t, CHART_VALUES)
            )
            for label, (v, t) in CHARTS.items()
        }
        kubectl = [str(cluster.tools / "kubectl"), f"--kubeconfig={state.kubeconfig}"]
        install_prerequisites(kubectl)
        sa = service_account_kubeconfig(kubectl, cluster.kubeconfig, workdir / "rudder.kubeconfig")
        chaos = Chaos(args, local, cluster, charts, sa, workdir, out, random.Random(seed))  # noqa: S311 - timing
        for scenario_name in args.scenarios.split(","):
            result = RUNNERS[scenario_name](chaos)
            report["scenarios"].append(result.as_json())
            (out / "report.json").write_text(json.dumps(report, indent=2))
    finally:
        for proc in chaos.operators if chaos else []:
            proc.stop(timeout=5)
        local.stop()
        with contextlib.suppress(OSError):
            shutil.copytree(local.logs, out / "cluster-logs", dirs_exist_ok=True)
            # Evidence for a failure: who wrote what, when (a few MiB compressed).
            if not all(r["passed"] for r in report["scenarios"]):
                with (
                    (local.dir / "audit.log").open("rb") as raw,
                    gzip.open(out / "audit.log.gz", "wb") as packed,
                ):
                    shutil.copyfileobj(raw, packed)
        shutil.rmtree(workdir, ignore_errors=True)
    results: list[JSON] = report["scenarios"]
    report["total_kills"] = sum(
        n for r in results for kind, n in r["faults"].items() if "kill" in kind
    )
    report["passed"] = bool(results) and all(r["passed"] for r in results)
    report["wall_s"] = round(time.monotonic() - started, 1)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    text = table(results)
    (out / "table.md").write_text(text)
    print(text)
    print(f"{report['total_kills']} kills in all, {report['wall_s']} s; report in {out}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

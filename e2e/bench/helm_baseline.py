"""The baseline for `bench_releases.py`: the real Helm v4 CLI installing the same releases.

Each release is one `helm install` of the same chart (by digest) with the same values file
the HelmRelease carries, waiting like rudder does (`--wait=watcher`: kstatus readiness).
The installs run through `xargs -P P` — P=1 is the sequential baseline, P=cores the parallel
one — so the numbers are what a shell script driving the CLI gets. A tiny wrapper prints
each install's start and end time, so per-release latencies come out too.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shlex
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# One install; prints "<name> <start> <end> <exit code>" (epoch seconds) and its output on
# failure. Arguments: release name, namespace (from xargs), chart reference (from the env).
INSTALL_ONE = """#!/bin/sh
name=$1
namespace=$2
start=$(date +%s.%N)
if out=$("$HELM" install "$name" "$CHART" --namespace "$namespace" --plain-http \\
        --values "$VALUES_DIR/$name.yaml" --wait=watcher --timeout=5m 2>&1); then
  rc=0
else
  rc=$?
fi
end=$(date +%s.%N)
echo "$name $start $end $rc"
if [ "$rc" -ne 0 ]; then echo "$out" | sed "s/^/  $name: /" >&2; fi
"""


@dataclass(frozen=True)
class HelmRelease:
    """One release to install: its name, namespace and user values."""

    name: str
    namespace: str
    values: Mapping[str, Any]


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def run_helm_baseline(
    *,
    helm: Path,
    chart_ref: str,
    releases: Sequence[HelmRelease],
    parallel: int,
    workdir: Path,
    env: Mapping[str, str],
    count_requests: Callable[[float, float], dict[str, Any]],
) -> dict[str, Any]:
    """Install `releases` with `xargs -P parallel`; return timings, CPU and API requests.

    `count_requests(start, end)` (epoch seconds) summarises what the CLI's user asked of the
    API server in that window (from the audit log).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    values_dir = workdir / "values"
    values_dir.mkdir(exist_ok=True)
    for release in releases:
        (values_dir / f"{release.name}.yaml").write_text(yaml.safe_dump(dict(release.values)))
    script = workdir / "install-one.sh"
    script.write_text(INSTALL_ONE)
    script.chmod(0o755)
    jobs = workdir / "jobs.txt"
    jobs.write_text("".join(f"{r.name} {r.namespace}\n" for r in releases))

    run_env = dict(env)
    run_env.update(HELM=str(helm), CHART=chart_ref, VALUES_DIR=str(values_dir))
    argv = ["xargs", "-P", str(parallel), "-L", "1", str(script)]
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    with jobs.open() as stdin:
        result = subprocess.run(
            argv, stdin=stdin, capture_output=True, text=True, env=run_env, check=False
        )
    end = time.time()
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    (workdir / "stderr.txt").write_text(result.stderr)

    finished: dict[str, tuple[float, float, int]] = {}
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) == 4:
            finished[parts[0]] = (float(parts[1]), float(parts[2]), int(parts[3]))
    ok = [name for name, (_, _, rc) in finished.items() if rc == 0]
    durations = [e - s for (s, e, rc) in finished.values() if rc == 0]
    since_start = [e - start for (_, e, rc) in finished.values() if rc == 0]
    total = end - start
    cpu = (children_after.ru_utime - children_before.ru_utime) + (
        children_after.ru_stime - children_before.ru_stime
    )
    summary: dict[str, Any] = {
        "kind": "helm",
        "label": f"helm xargs -P {parallel}",
        "parallel": parallel,
        "n": len(releases),
        "ready": len(ok),
        "failed": sorted(name for name, (_, _, rc) in finished.items() if rc != 0),
        "command": shlex.join(argv) + f" < {jobs.name}  # {script.name}: helm install --wait",
        "total_s": round(total, 2),
        "throughput_per_s": round(len(ok) / total, 2) if total > 0 else 0.0,
        "install_p50_s": round(percentile(durations, 0.50), 2),
        "install_p95_s": round(percentile(durations, 0.95), 2),
        "p50_s": round(percentile(since_start, 0.50), 2),
        "p95_s": round(percentile(since_start, 0.95), 2),
        "cli_cpu_s": round(cpu, 2),
        "requests": count_requests(start, end),
    }
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def helm_env(base: Mapping[str, str], kubeconfig: Path, home: Path) -> dict[str, str]:
    """Environment for the CLI: the admin kubeconfig, Helm's state dirs under `home`."""
    env = dict(base)
    env.pop("HELM_DRIVER", None)
    env["KUBECONFIG"] = str(kubeconfig)
    for name in ("CACHE", "CONFIG", "DATA"):
        env[f"HELM_{name}_HOME"] = str(home / name.lower())
    env["HOME"] = env.get("HOME", os.path.expanduser("~"))
    return env

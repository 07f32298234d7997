"""The commands, on the caller's own credentials (kubectl's kubeconfig rules): what they
read and write is exactly what `kubectl` with the same kubeconfig could.

Exit codes as kubectl: 0 done, 1 failed (not found, not Ready after --wait, an API error).
"""

from __future__ import annotations

import asyncio
import datetime
import sys
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from rudder.cli.table import render
from rudder.kube.client import MERGE_PATCH, ApiError, KubeClient
from rudder.model import conditions_from_status, find_condition
from rudder.observe.statuspage import age, parse_time, short_digest
from rudder.reconcile.identity import Identity
from rudder.reconcile.target import HELMRELEASES, REQUESTED_AT_ANNOTATION
from rudder.release.store import ReleaseStore

ALL_HELMRELEASES = "/apis/rudder.dev/v1alpha1/helmreleases"
NAMESPACED = "/apis/rudder.dev/v1alpha1/namespaces/{namespace}/helmreleases"

JSON = dict[str, Any]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _ready(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    """Ready's status, reason and message; Unknown until this generation is observed."""
    status = obj.get("status") or {}
    ready = find_condition(conditions_from_status(status), "Ready")
    current = status.get("observedGeneration") == (obj.get("metadata") or {}).get("generation")
    if ready is None or not current:
        return "Unknown", "Progressing", "waiting for rudder to observe this generation"
    return ready.status, ready.reason, ready.message


async def get(kube: KubeClient, namespace: str | None, out: TextIO = sys.stdout) -> int:
    """`rudder get [-n NS | -A]`: one line per HelmRelease, like `flux get hr`."""
    path = ALL_HELMRELEASES if namespace is None else NAMESPACED.format(namespace=namespace)
    items = (await kube.get(path)).get("items") or []
    now = _now()
    rows = []
    for obj in sorted(items, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"])):
        meta, status = obj["metadata"], obj.get("status") or {}
        ready, reason, _ = _ready(obj)
        if (obj.get("spec") or {}).get("suspend"):
            reason = "Suspended"
        revision = (status.get("release") or {}).get("revision")
        digest = (status.get("chart") or {}).get("digest") or ""
        row = [
            meta["name"],
            ready,
            reason,
            str(revision) if revision is not None else "",
            (status.get("chart") or {}).get("nameVersion") or "",
            short_digest(digest) if digest else "",
            age(parse_time(meta.get("creationTimestamp")), now),
        ]
        rows.append([meta["namespace"], *row] if namespace is None else row)
    if not rows:
        where = "any namespace" if namespace is None else f"namespace {namespace}"
        print(f"No HelmReleases found in {where}.", file=sys.stderr)
        return 0
    headers = ["NAME", "READY", "REASON", "REVISION", "CHART", "DIGEST", "AGE"]
    out.write(render(["NAMESPACE", *headers] if namespace is None else headers, rows))
    return 0


async def set_suspend(
    kube: KubeClient, namespace: str, name: str, suspend: bool, out: TextIO = sys.stdout
) -> int:
    """`rudder suspend|resume NAME`."""
    path = HELMRELEASES.format(namespace=namespace, name=name)
    await kube.request("PATCH", path, body={"spec": {"suspend": suspend}}, content_type=MERGE_PATCH)
    out.write(f"helmrelease.rudder.dev/{name} {'suspended' if suspend else 'resumed'}\n")
    return 0


async def reconcile(
    kube: KubeClient,
    namespace: str,
    name: str,
    *,
    wait: bool,
    wait_seconds: float,
    out: TextIO = sys.stdout,
    clock: Callable[[], datetime.datetime] = _now,
) -> int:
    """`rudder reconcile NAME [--wait]`: ask for a reconcile now (rudder.dev/requestedAt) and,
    with --wait, follow it until rudder has handled the request and Ready is known."""
    path = HELMRELEASES.format(namespace=namespace, name=name)
    current = await kube.get(path)
    refusal = _cannot_reconcile(current)
    if refusal:
        out.write(f"✗ {namespace}/{name}: {refusal}\n")
        return 1
    # Microseconds: a second request in the same second is still a change (an event).
    requested = clock().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    body = {"metadata": {"annotations": {REQUESTED_AT_ANNOTATION: requested}}}
    await kube.request("PATCH", path, body=body, content_type=MERGE_PATCH)
    out.write(f"► reconcile of {namespace}/{name} requested at {requested}\n")
    if not wait:
        return 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    said = ""
    while True:
        obj = await kube.get(path)
        refusal = _cannot_reconcile(obj)
        if refusal:
            out.write(f"✗ {namespace}/{name}: {refusal}\n")
            return 1
        handled = (obj.get("status") or {}).get("lastHandledRequestedAt") == requested
        status, reason, message = _ready(obj)
        line = f"◎ {status} {reason}: {message}" if handled else "◎ waiting for rudder"
        if line != said:
            out.write(line + "\n")
            said = line
        if handled and status != "Unknown":
            mark = "✔" if status == "True" else "✗"
            out.write(f"{mark} {namespace}/{name} Ready={status} ({reason})\n")
            return 0 if status == "True" else 1
        if loop.time() > deadline:
            out.write(f"✗ {namespace}/{name}: not settled within {wait_seconds:.0f}s\n")
            return 1
        await asyncio.sleep(1.0)


def _cannot_reconcile(obj: Mapping[str, Any]) -> str | None:
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        return "is being deleted"
    if (obj.get("spec") or {}).get("suspend"):
        return "is suspended (spec.suspend); `rudder resume` it first"
    return None


async def history(kube: KubeClient, namespace: str, name: str, out: TextIO = sys.stdout) -> int:
    """`rudder history NAME`: the release's revisions from its Helm records, newest last,
    with who wrote each record as it is now: rudder (its stamp), or helm. A record of
    rudder's that the helm CLI later rewrote (marking it superseded) lost rudder's stamp."""
    obj = await kube.get(HELMRELEASES.format(namespace=namespace, name=name))
    spec = obj.get("spec") or {}
    recorded = Identity.recorded(obj.get("status"), namespace)
    if recorded is not None:  # where the release is, even if the spec names another now
        release_name, storage = recorded.release_name, recorded.storage_namespace
    else:
        release_name = spec.get("releaseName") or name
        storage = spec.get("storageNamespace") or spec.get("targetNamespace") or namespace
    records = await ReleaseStore(kube).history(storage, release_name)
    if not records:
        print(f"No revisions of release {storage}/{release_name}.", file=sys.stderr)
        return 0
    rows = []
    for record in sorted(records, key=lambda r: r.version):
        summary = record.summary
        rows.append(
            [
                str(record.version),
                summary.last_deployed or "",
                record.status,
                summary.chart_version,
                short_digest(record.chart_digest) if record.chart_digest else "",
                "rudder" if record.written_by_rudder else "helm",
                summary.description,
            ]
        )
    headers = ["REVISION", "UPDATED", "STATUS", "CHART", "DIGEST", "WRITTEN BY", "DESCRIPTION"]
    out.write(render(headers, rows))
    return 0


def failed(error: ApiError) -> int:
    print(f"Error from server ({error.reason or error.code}): {error}", file=sys.stderr)
    return 1

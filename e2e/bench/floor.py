"""The API server's floor for `bench_releases.py --floor`: the least a HelmRelease controller
must write per release, made by a minimal client at full concurrency on the same control
plane, as rudder's own ServiceAccount.

Per release, after the HelmReleases are applied exactly as in rudder's wave:
  one finalizer patch of the HelmRelease; the release Secret created (pending); the chart's
  4 objects server-side applied (rendered beforehand by Helm's engine, not timed); the
  release Secret updated (deployed); one status patch; one Event.
No reads, no dry-runs, no readiness wait: nothing a correct controller could leave out, so
rudder's time over this one is what its own work costs.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import os
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
# The collection of each kind the bench chart renders.
PATHS = {
    ("apps/v1", "Deployment"): "/apis/apps/v1/namespaces/{ns}/deployments/{name}",
    ("v1", "ServiceAccount"): "/api/v1/namespaces/{ns}/serviceaccounts/{name}",
    ("v1", "Service"): "/api/v1/namespaces/{ns}/services/{name}",
    ("networking.k8s.io/v1", "Ingress"): (
        "/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses/{name}"
    ),
}
HELMRELEASE = "/apis/rudder.dev/v1alpha1/namespaces/{ns}/helmreleases/{name}"
RELEASE_BYTES = 6 * 1024  # about what a gzipped release of the bench chart weighs


@dataclass(frozen=True)
class FloorRelease:
    name: str
    namespace: str
    objects: Sequence[dict[str, Any]]  # the chart's objects, as rendered


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Client:
    def __init__(self, kubeconfig: Path) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        self.server = str(cluster["server"]).rstrip("/")
        token = config["users"][0]["user"]["token"]
        context = ssl.create_default_context(
            cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
        )
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, limit=100),
            headers={"Authorization": f"Bearer {token}", "User-Agent": "rudder-floor"},
        )

    async def get(self, path: str) -> Any:
        async with self.session.get(self.server + path) as response:
            response.raise_for_status()
            return await response.json()

    async def send(
        self, method: str, path: str, body: Any, content_type: str = "application/json"
    ) -> None:
        query = {"fieldManager": "rudder"} if content_type == APPLY else None
        async with self.session.request(
            method,
            self.server + path,
            params=query,
            data=json.dumps(body).encode(),  # JSON is YAML too: one encoding for every verb
            headers={"Content-Type": content_type},
        ) as response:
            if response.status >= 400:
                text = await response.text()
                raise RuntimeError(f"{method} {path}: HTTP {response.status} {text[:300]}")
            await response.read()


async def _one(client: _Client, release: FloorRelease) -> None:
    ns, name = release.namespace, release.name
    helmrelease = HELMRELEASE.format(ns=ns, name=name)
    await client.send(
        "PATCH", helmrelease, {"metadata": {"finalizers": ["rudder.dev/finalizer"]}}, MERGE
    )
    secret_name = f"sh.helm.release.v1.{name}.v1"
    labels = {"owner": "helm", "name": name, "status": "pending-install", "version": "1"}
    payload = base64.b64encode(os.urandom(RELEASE_BYTES)).decode()
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "helm.sh/release.v1",
        "metadata": {"name": secret_name, "namespace": ns, "labels": labels},
        "data": {"release": base64.b64encode(payload.encode()).decode()},
    }
    await client.send("POST", f"/api/v1/namespaces/{ns}/secrets", secret)
    await asyncio.gather(
        *(
            client.send(
                "PATCH",
                PATHS[(obj["apiVersion"], obj["kind"])].format(ns=ns, name=obj["metadata"]["name"]),
                obj,
                APPLY,
            )
            for obj in release.objects
        )
    )
    secret["metadata"]["labels"] = {**labels, "status": "deployed"}
    await client.send("PUT", f"/api/v1/namespaces/{ns}/secrets/{secret_name}", secret)
    now = _now()
    status = {
        "status": {
            "observedGeneration": 1,
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "InstallSucceeded",
                 "message": f"Installed {name} revision 1", "lastTransitionTime": now,
                 "observedGeneration": 1},
            ],
        }
    }  # fmt: skip
    await client.send("PATCH", helmrelease + "/status", status, MERGE)
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{name}.", "namespace": ns},
        "involvedObject": {"apiVersion": "rudder.dev/v1alpha1", "kind": "HelmRelease",
                           "name": name, "namespace": ns},
        "reason": "InstallSucceeded",
        "message": f"Installed {name} revision 1",
        "type": "Normal",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "source": {"component": "rudder-floor"},
    }  # fmt: skip
    await client.send("POST", f"/api/v1/namespaces/{ns}/events", event)


async def _write_all(kubeconfig: Path, releases: Sequence[FloorRelease]) -> list[float]:
    client = _Client(kubeconfig)
    done: list[float] = []

    async def timed(release: FloorRelease) -> None:
        await _one(client, release)
        done.append(time.monotonic())

    try:
        await asyncio.gather(*(timed(release) for release in releases))
    finally:
        await client.session.close()
    return done


async def _all_observed(kubeconfig: Path, releases: Sequence[FloorRelease]) -> float:
    """When every Deployment written has been observed by its controller (what rudder's
    readiness wait waits for at replicas 0): one list per namespace every 0.2 s, made after
    the floor's writes, so outside its counted requests."""
    client = _Client(kubeconfig)
    wanted = {(r.namespace, o["metadata"]["name"]) for r in releases for o in r.objects
              if o["kind"] == "Deployment"}  # fmt: skip
    namespaces = sorted({namespace for namespace, _ in wanted})
    try:
        while True:
            observed = set()
            for namespace in namespaces:
                listed = await client.get(f"/apis/apps/v1/namespaces/{namespace}/deployments")
                for item in listed.get("items", []):
                    meta, status = item["metadata"], item.get("status") or {}
                    if status.get("observedGeneration") == meta.get("generation"):
                        observed.add((namespace, meta["name"]))
            if wanted <= observed:
                return time.monotonic()
            await asyncio.sleep(0.2)
    finally:
        await client.session.close()


def run_floor(
    kubeconfig: Path,
    releases: Sequence[FloorRelease],
    apply_helmreleases: Callable[[], None],
) -> dict[str, Any]:
    """Apply the HelmReleases (as rudder's wave does), then make the writes; the times, and
    when the Deployments' controller had observed them all (`observed_s`)."""
    start = time.monotonic()
    apply_helmreleases()
    applied = time.monotonic()
    done = asyncio.run(_write_all(kubeconfig, releases))
    end = max(done) if done else applied
    observed = asyncio.run(_all_observed(kubeconfig, releases))
    return {
        "total_s": round(end - start, 2),
        "apply_s": round(applied - start, 2),
        "writes_s": round(end - applied, 2),
        "observed_s": round(observed - start, 2),
        "start": start,
        "end": end,
    }

"""Leader election on a coordination.k8s.io/v1 Lease, with client-go's semantics.

A candidate takes the Lease when it is absent, released (no holder), or expired; expiry is
judged by the local clock: the record must not have changed for a whole lease duration
since this candidate last saw it change (clocks of different machines are never compared).
The leader renews every retry period and gives up if it could not renew for the renew
deadline. Writes carry the observed resourceVersion, so two candidates racing for the same
Lease cannot both win. Only the leader runs the operator; a lost Lease stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from rudder.kube.client import JSON, TRANSPORT_ERRORS, ApiError, KubeClient

log = logging.getLogger(__name__)


def micro_time(moment: datetime.datetime | None = None) -> str:
    """metav1.MicroTime's wire form."""
    moment = moment or datetime.datetime.now(datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class ElectionSettings:
    namespace: str
    name: str
    identity: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


def lease_body(
    settings: ElectionSettings, current: JSON | None, *, now: str, release: bool = False
) -> JSON:
    """The Lease to write: ours (acquired or renewed), or given up when `release`."""
    spec = dict((current or {}).get("spec") or {})
    holder = spec.get("holderIdentity")
    transitions = int(spec.get("leaseTransitions") or 0)
    if release:
        spec.update({"holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": now})
    else:
        if holder != settings.identity:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = transitions + (1 if holder else 0)
        spec.update(
            {
                "holderIdentity": settings.identity,
                "leaseDurationSeconds": max(1, round(settings.lease_duration)),
                "renewTime": now,
            }
        )
    meta: JSON = {"name": settings.name, "namespace": settings.namespace}
    if current is not None:
        meta["resourceVersion"] = current["metadata"]["resourceVersion"]
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}


class LeaderElector:
    def __init__(self, kube: KubeClient, settings: ElectionSettings) -> None:
        self.kube = kube
        self.settings = settings
        self._observed: tuple[str, str] | None = None  # (holder, renewTime) last seen
        self._observed_at = 0.0  # monotonic time it was first seen
        self.leading = False
        self.held_by_other = False  # the last read showed another holder
        # Every Lease call must end well inside the renew deadline: a hung call must not
        # keep a cut-off leader running after a standby has taken over.
        self._call_timeout = max(0.5, min(settings.retry_period, settings.renew_deadline / 2))

    @property
    def path(self) -> str:
        s = self.settings
        return f"/apis/coordination.k8s.io/v1/namespaces/{s.namespace}/leases/{s.name}"

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this candidate holds the Lease afterwards."""
        self.held_by_other = False
        try:
            current: JSON | None = await self.kube.request(
                "GET", self.path, request_timeout=self._call_timeout
            )
        except ApiError as error:
            if error.code != 404:
                log.warning("leader election: cannot read the lease: %s", error)
                return False
            current = None
        except TRANSPORT_ERRORS as error:
            log.warning("leader election: cannot read the lease: %s", error)
            return False
        now = time.monotonic()
        if current is not None:
            spec = current.get("spec") or {}
            holder = str(spec.get("holderIdentity") or "")
            record = (holder, str(spec.get("renewTime") or ""))
            if record != self._observed:
                self._observed, self._observed_at = record, now
            duration = float(spec.get("leaseDurationSeconds") or self.settings.lease_duration)
            held_by_other = bool(holder) and holder != self.settings.identity
            if held_by_other and now - self._observed_at < duration:
                self.held_by_other = True
                return False
        body = lease_body(self.settings, current, now=micro_time())
        try:
            if current is None:
                collection = self.path.rsplit("/", 1)[0]
                await self.kube.request(
                    "POST", collection, body=body, request_timeout=self._call_timeout
                )
            else:
                await self.kube.request(
                    "PUT", self.path, body=body, request_timeout=self._call_timeout
                )
        except ApiError as error:
            if error.code in (409, 422):  # someone else wrote first
                return False
            log.warning("leader election: cannot write the lease: %s", error)
            return False
        except TRANSPORT_ERRORS as error:
            log.warning("leader election: cannot write the lease: %s", error)
            return False
        return True

    async def run(self, lead: Callable[[], Coroutine[Any, Any, None]]) -> bool:
        """Wait for the Lease, run `lead()` while holding it. Returns True when `lead`
        finished by itself (the Lease is then released), False when leadership was lost."""
        while not await self.try_acquire_or_renew():  # noqa: ASYNC110 - polling the Lease is the protocol
            await asyncio.sleep(self.settings.retry_period)
        log.info("leader election: %s is the leader", self.settings.identity)
        self.leading = True
        task = asyncio.create_task(lead())
        last_renewal = time.monotonic()
        try:
            while not task.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(task), self.settings.retry_period)
                if task.done():
                    break
                attempt_started = time.monotonic()
                if await self.try_acquire_or_renew():
                    last_renewal = attempt_started
                elif self.held_by_other:
                    log.error("leader election: another replica holds the lease; stopping")
                    return False
                elif time.monotonic() - last_renewal > self.settings.renew_deadline:
                    log.error("leader election: lost the lease; stopping")
                    return False
            await task  # raise what lead() raised
            await self.release()
            return True
        finally:
            self.leading = False
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def release(self) -> None:
        """Give the Lease up at once (a standby then takes over without waiting)."""
        with contextlib.suppress(ApiError, *TRANSPORT_ERRORS):
            current = await self.kube.get_or_none(self.path)
            spec = (current or {}).get("spec") or {}
            if current is not None and spec.get("holderIdentity") == self.settings.identity:
                body = lease_body(self.settings, current, now=micro_time(), release=True)
                await self.kube.request("PUT", self.path, body=body)

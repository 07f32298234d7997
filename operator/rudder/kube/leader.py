"""Leader election on a `coordination.k8s.io/v1` Lease: run several replicas, let one act.

The protocol is client-go's (`k8s.io/client-go/tools/leaderelection`), so rudder's Lease reads
like any controller's to `kubectl get lease`:

- The Lease spec carries `holderIdentity`, `leaseDurationSeconds`, `acquireTime`,
  `renewTime` and `leaseTransitions`.
- A candidate takes the Lease when it is absent, free (no holder) or expired. Expiry is judged
  by the candidate's own monotonic clock, never by the timestamps in the record (other
  machines' clocks are never compared): the record must have stayed unchanged for its lease
  duration since this candidate first saw it.
- The leader renews every retry period. It stops leading when it could not renew within the
  renew deadline, counted from the *start* of its last successful renewal, which is no later
  than any other candidate's sighting of that renewal; a standby therefore takes over no
  sooner than `lease_duration - renew_deadline` after the leader has stopped.
- Every write carries the resourceVersion that was read, so of two candidates racing for one
  Lease the API server lets exactly one win (the other gets 409 Conflict or AlreadyExists).

Where rudder is stricter than client-go:

- Each round trip is bounded by the time left before the renew deadline, so an API server
  that stops answering (a hung connection, not a refused one) cannot keep a leader leading
  past its deadline while it waits for a reply.
- A leader that reads the Lease and finds another holder stops at once instead of retrying
  until its renew deadline.
- Election requests bypass the client's rate limiter (they share its connection pool), so a
  reconcile wave that has spent the request budget cannot starve the renewals.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import math
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from rudder.kube.client import JSON, ApiError, KubeClient, RateLimiter

log = logging.getLogger(__name__)

API_VERSION: Final = "coordination.k8s.io/v1"
# A released Lease names no holder and lasts a second (client-go writes the same), so any
# candidate takes it at its next try.
RELEASED_DURATION_SECONDS: Final = 1
# Acquire attempts are spread over [retry_period, retry_period * (1 + ACQUIRE_JITTER)] so
# that candidates started together do not keep colliding.
ACQUIRE_JITTER: Final = 0.2


class LeadershipLost(Exception):
    """This candidate stopped leading without being asked to: it could not renew the Lease
    within the renew deadline, or found it held by someone else. `lead()` has been cancelled;
    the process should exit and start afresh as a candidate (as controller-runtime does)."""


# --- the record and its judgement (pure) ------------------------------------------------------


@dataclass(frozen=True)
class LeaseRecord:
    """The election fields of a Lease spec, as read from the API."""

    holder: str = ""
    duration_seconds: int = 0
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0

    @classmethod
    def from_lease(cls, lease: JSON) -> LeaseRecord:
        spec = lease.get("spec") or {}
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
        )


@dataclass(frozen=True)
class Observation:
    """A record as this candidate saw it, and when (monotonic seconds) it first saw it so."""

    record: LeaseRecord
    since: float


def observe(previous: Observation | None, record: LeaseRecord, now: float) -> Observation:
    """The observation after reading `record` at `now`: the clock restarts only when the
    record changed (any renewal changes renewTime, so a live leader keeps restarting it)."""
    if previous is not None and previous.record == record:
        return previous
    return Observation(record, now)


def is_expired(observation: Observation, now: float, default_duration: float) -> bool:
    """Whether the record has gone unrenewed for its lease duration, by the local clock.

    `default_duration` stands in for a record that states no positive duration."""
    duration = observation.record.duration_seconds or default_duration
    return now >= observation.since + duration


def may_take(observation: Observation, identity: str, now: float, default_duration: float) -> bool:
    """Whether `identity` may write itself into the Lease now: it is free, already ours, or
    its holder has gone silent for a whole lease duration."""
    holder = observation.record.holder
    return not holder or holder == identity or is_expired(observation, now, default_duration)


def micro_time(moment: datetime.datetime) -> str:
    """metav1.MicroTime's wire form (RFC 3339, microseconds, UTC)."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def duration_seconds(lease_duration: float) -> int:
    """leaseDurationSeconds for a configured duration: whole seconds, rounded up, so other
    candidates wait at least as long as this one assumes they do."""
    return max(1, math.ceil(lease_duration))


def held_body(
    current: JSON | None,
    *,
    namespace: str,
    name: str,
    identity: str,
    lease_duration: float,
    now: datetime.datetime,
) -> JSON:
    """The Lease that makes (or keeps) `identity` the holder: created when `current` is None,
    otherwise `current` with its election fields rewritten and its resourceVersion kept, so
    the write fails if anyone wrote in between.

    Renewing keeps acquireTime and leaseTransitions; taking over from anyone else (or from
    nobody, after a release) stamps acquireTime and counts one more transition."""
    stamp = micro_time(now)
    if current is None:
        return {
            "apiVersion": API_VERSION,
            "kind": "Lease",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "holderIdentity": identity,
                "leaseDurationSeconds": duration_seconds(lease_duration),
                "acquireTime": stamp,
                "renewTime": stamp,
                "leaseTransitions": 0,
            },
        }
    record = LeaseRecord.from_lease(current)
    renewing = record.holder == identity
    spec = dict(current.get("spec") or {})
    spec.update(
        holderIdentity=identity,
        leaseDurationSeconds=duration_seconds(lease_duration),
        acquireTime=(record.acquire_time or stamp) if renewing else stamp,
        renewTime=stamp,
        leaseTransitions=record.transitions if renewing else record.transitions + 1,
    )
    return _rewritten(current, spec)


def released_body(current: JSON, *, now: datetime.datetime) -> JSON:
    """`current` given up: no holder, a one-second duration, transitions kept."""
    stamp = micro_time(now)
    spec = dict(current.get("spec") or {})
    spec.update(
        holderIdentity="",
        leaseDurationSeconds=RELEASED_DURATION_SECONDS,
        acquireTime=stamp,
        renewTime=stamp,
        leaseTransitions=LeaseRecord.from_lease(current).transitions,
    )
    return _rewritten(current, spec)


def _rewritten(current: JSON, spec: JSON) -> JSON:
    metadata = {
        key: value
        for key, value in (current.get("metadata") or {}).items()
        if key != "managedFields"
    }
    return {"apiVersion": API_VERSION, "kind": "Lease", "metadata": metadata, "spec": spec}


def check_timings(lease_duration: float, renew_deadline: float, retry_period: float) -> None:
    """client-go's rule: lease duration > renew deadline > retry period > 0. A leader must
    give up before a standby may take over, and get more than one try before giving up."""
    if not retry_period > 0:
        raise ValueError(f"retry period must be positive, not {retry_period}s")
    if not renew_deadline > retry_period:
        raise ValueError(
            f"renew deadline ({renew_deadline}s) must be longer than the retry period "
            f"({retry_period}s)"
        )
    if not lease_duration > renew_deadline:
        raise ValueError(
            f"lease duration ({lease_duration}s) must be longer than the renew deadline "
            f"({renew_deadline}s)"
        )


def default_identity() -> str:
    """hostname (the Pod's name in a cluster) plus a random suffix: unique per process even
    when two processes share a host, as controller-runtime's is."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


# --- the elector (acts on the API) ------------------------------------------------------------


class LeaderElector:
    """One candidate for the Lease `namespace/name`.

    `run(lead)` waits until this candidate holds the Lease, runs `lead()` while it keeps it,
    and gives the Lease up when `lead()` ends. Use one elector per process and per `run`.
    """

    def __init__(
        self,
        kube: KubeClient,
        *,
        namespace: str,
        name: str,
        identity: str | None = None,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
    ) -> None:
        check_timings(lease_duration, renew_deadline, retry_period)
        # Same connection and credentials, but a rate limit of its own (none): renewals must
        # not queue behind a reconcile wave's requests.
        self._kube = dataclasses.replace(kube, limiter=RateLimiter(qps=0, burst=1))
        self.namespace = namespace
        self.name = name
        self.identity = identity or default_identity()
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._observation: Observation | None = None
        self._leading = False
        self._last_holder: str | None = None

    @property
    def path(self) -> str:
        return f"{self.collection}/{self.name}"

    @property
    def collection(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases"

    @property
    def is_leader(self) -> bool:
        """True from the moment this candidate took the Lease until it stops leading."""
        return self._leading

    @property
    def holder(self) -> str:
        """The holder named by the Lease as this candidate last read it ("" for none)."""
        return self._observation.record.holder if self._observation else ""

    async def try_acquire_or_renew(self) -> bool:
        """One round trip: read the Lease, and write this candidate into it when allowed.

        True when this candidate holds the Lease afterwards. False when someone else holds
        it or won the write. API and connection errors are raised; no timeout is applied
        here (`run` bounds every call)."""
        try:
            current: JSON | None = await self._kube.request("GET", self.path)
        except ApiError as error:
            if error.code != 404:
                raise
            current = None
        now = time.monotonic()
        if current is None:
            self._observation = None
        else:
            self._observation = observe(self._observation, LeaseRecord.from_lease(current), now)
            holder = self._observation.record.holder
            if self._leading and holder not in ("", self.identity):
                # Someone took over: whatever became of them, this reign is over.
                return False
            if not may_take(self._observation, self.identity, now, self.lease_duration):
                self._note_holder()
                return False
        body = held_body(
            current,
            namespace=self.namespace,
            name=self.name,
            identity=self.identity,
            lease_duration=self.lease_duration,
            now=datetime.datetime.now(datetime.UTC),
        )
        try:
            if current is None:
                written = await self._kube.request("POST", self.collection, body=body)
            else:
                written = await self._kube.request("PUT", self.path, body=body)
        except ApiError as error:
            if error.code == 409:  # Conflict on PUT, AlreadyExists on POST: another won
                log.debug("leader election: %s lost a write race for the lease", self.identity)
                return False
            raise
        self._observation = Observation(LeaseRecord.from_lease(written), time.monotonic())
        self._note_holder()
        return True

    async def run(self, lead: Callable[[], Awaitable[None]]) -> None:
        """Wait for the Lease, then run `lead()` as a task while renewing the Lease.

        Returns when `lead()` returns, or raises what it raised, after giving the Lease up
        (a standby then takes over at once). Raises `LeadershipLost` when the Lease could not
        be kept; `lead()` has then been cancelled. Cancelling `run` cancels `lead()` and
        gives the Lease up too."""
        acquired_at = await self._acquire()
        task: asyncio.Task[None] = asyncio.create_task(_call(lead), name="rudder:leading")
        lost: str | None = None
        try:
            lost = await self._renew_while(task, acquired_at)
        finally:
            self._leading = False
            await self._stop(task)
            await self._release_after_leading()
        if lost is not None:
            raise LeadershipLost(lost)
        task.result()

    async def release(self) -> bool:
        """Give the Lease up if this candidate holds it: no holder, a one-second duration, so
        a standby takes it at its next try. True when it was released here.

        Call it only once `lead()` has stopped (`run` does so itself)."""
        self._leading = False
        try:
            current = await self._kube.request("GET", self.path)
        except ApiError as error:
            if error.code == 404:
                return False
            raise
        if LeaseRecord.from_lease(current).holder != self.identity:
            return False
        body = released_body(current, now=datetime.datetime.now(datetime.UTC))
        try:
            written = await self._kube.request("PUT", self.path, body=body)
        except ApiError as error:
            if error.code == 409:
                return False
            raise
        self._observation = Observation(LeaseRecord.from_lease(written), time.monotonic())
        log.info("leader election: %s released the lease", self.identity)
        return True

    # -- internals ----------------------------------------------------------------------------

    async def _attempt(self, budget: float) -> bool:
        """`try_acquire_or_renew` within `budget` seconds; any failure is a False."""
        try:
            async with asyncio.timeout(budget):
                return await self.try_acquire_or_renew()
        except TimeoutError:
            log.warning(
                "leader election: no answer from the API server within %.1fs for lease %s/%s",
                budget,
                self.namespace,
                self.name,
            )
        except Exception as error:  # the API or the network; judged by the deadline instead
            log.warning(
                "leader election: cannot read or write lease %s/%s: %s",
                self.namespace,
                self.name,
                _describe(error),
            )
        return False

    async def _acquire(self) -> float:
        """Try until this candidate holds the Lease; the monotonic start of the winning try."""
        log.info(
            "leader election: %s is a candidate for lease %s/%s",
            self.identity,
            self.namespace,
            self.name,
        )
        while True:
            started = time.monotonic()
            if await self._attempt(self.renew_deadline):
                self._leading = True
                log.info(
                    "leader election: %s acquired lease %s/%s and leads",
                    self.identity,
                    self.namespace,
                    self.name,
                )
                return started
            spread = random.uniform(1.0, 1.0 + ACQUIRE_JITTER)  # noqa: S311 - not a secret
            await asyncio.sleep(self.retry_period * spread)

    async def _renew_while(self, task: asyncio.Task[None], renewed_at: float) -> str | None:
        """Renew every retry period until `task` ends (None) or leadership is lost (why)."""
        while True:
            deadline = renewed_at + self.renew_deadline
            pause = min(self.retry_period, deadline - time.monotonic())
            if pause > 0:
                done, _ = await asyncio.wait({task}, timeout=pause)
                if done:
                    return None
            started = time.monotonic()
            budget = deadline - started
            if budget <= 0:
                return self._lost(
                    f"could not renew within the renew deadline ({self.renew_deadline}s)"
                )
            if await self._attempt(budget):
                renewed_at = started
                continue
            if task.done():
                return None
            if self.holder and self.holder != self.identity:
                return self._lost(f"the lease is now held by {self.holder}")

    def _lost(self, why: str) -> str:
        log.error(
            "leader election: %s stops leading lease %s/%s: %s",
            self.identity,
            self.namespace,
            self.name,
            why,
        )
        return why

    async def _stop(self, task: asyncio.Task[None]) -> None:
        """Cancel `task` unless it has ended, and wait (bounded) for it to finish."""
        if task.done():
            return
        task.cancel()
        grace = max(self.retry_period, self.lease_duration - self.renew_deadline)
        done, _ = await asyncio.wait({task}, timeout=grace)
        if not done:
            log.error(
                "leader election: the leading task did not stop within %.1fs of being cancelled",
                grace,
            )

    async def _release_after_leading(self) -> None:
        """Give the Lease up once `lead()` has stopped, within one retry period."""
        try:
            async with asyncio.timeout(self.retry_period):
                await self.release()
        except Exception as error:  # the Lease then simply expires
            log.warning(
                "leader election: could not release lease %s/%s: %s",
                self.namespace,
                self.name,
                _describe(error),
            )

    def _note_holder(self) -> None:
        holder = self.holder
        if holder != self._last_holder:
            self._last_holder = holder
            if holder and holder != self.identity:
                log.info(
                    "leader election: lease %s/%s is held by %s",
                    self.namespace,
                    self.name,
                    holder,
                )


async def _call(lead: Callable[[], Awaitable[Any]]) -> None:
    await lead()


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__

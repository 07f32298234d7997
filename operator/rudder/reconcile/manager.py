"""Per-HelmRelease workers: rudder's own work queue.

kopf delivers watch events; the thin handler hands each to `Manager.observe`. The manager
keeps one asyncio task per HelmRelease that reconciles the newest object it has seen, at
most `concurrency` at a time, and schedules the next run: the interval when all is well,
exponential backoff after an error, at once when a new event arrives. Because the worker
is rudder's and not kopf's, a long readiness wait never blocks the delivery of a new
generation: the worker sets `superseded` on the running reconcile, which abandons its wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from rudder.kube.client import TRANSPORT_ERRORS
from rudder.observe import metrics

log = logging.getLogger(__name__)

JSON = dict[str, Any]
Key = tuple[str, str]  # (namespace, name)

BACKOFF_START = 2.0
BACKOFF_MAX = 300.0
# Longest wait before a reconcile that could not reach the API server is tried again.
TRANSPORT_RETRY = 10.0


@dataclass(frozen=True)
class Outcome:
    """What a reconcile asks of the queue: when to look again (None: only on a new event)."""

    requeue_after: float | None
    failed: bool = False


@dataclass
class Run:
    """Handed to a reconcile: `superseded` is set when a generation newer than the one it
    works on arrives (or the object is deleted). The reconcile says which generation it
    works on with `begin` once it has read the object: the event that queued it may be
    older than the object it reads."""

    superseded: asyncio.Event = field(default_factory=asyncio.Event)
    generation: int | None = None
    newest_seen: int | None = None

    def begin(self, generation: int) -> None:
        self.generation = generation
        if self.newest_seen is not None and self.newest_seen > generation:
            self.superseded.set()

    def saw(self, generation: int | None, *, gone: bool) -> None:
        if gone:
            self.superseded.set()
            return
        if generation is None:
            return
        self.newest_seen = max(self.newest_seen or generation, generation)
        if self.generation is not None and generation > self.generation:
            self.superseded.set()


Reconcile = Callable[[JSON, Run], Awaitable[Outcome]]


@dataclass
class _Slot:
    body: JSON | None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    run: Run | None = None
    failures: int = 0


def generation_of(body: JSON | None) -> int | None:
    if body is None:
        return None
    value = body.get("metadata", {}).get("generation")
    return int(value) if value is not None else None


def signature(body: JSON | None) -> tuple[object, ...]:
    """What, when it changes, calls for a reconcile: not status, not resourceVersion, not
    finalizers (rudder's own finalizer write would otherwise queue a second reconcile of
    every new HelmRelease; a finalizer removed by hand is put back at the next interval)."""
    if body is None:
        return (None,)
    meta = body.get("metadata", {})
    return (
        meta.get("generation"),
        meta.get("deletionTimestamp"),
        tuple(sorted((meta.get("annotations") or {}).items())),
        tuple(sorted((meta.get("labels") or {}).items())),
    )


class Manager:
    def __init__(
        self,
        reconcile: Reconcile,
        *,
        concurrency: int,
        gone: Callable[[Key], Awaitable[None]] | None = None,
    ) -> None:
        self._reconcile = reconcile
        self._gone = gone  # a HelmRelease left the API: drop what was kept for it
        self._slots: dict[Key, _Slot] = {}
        self._limit = asyncio.Semaphore(max(1, concurrency))
        self._stopping = False

    def observe(self, body: JSON, *, deleted: bool = False) -> None:
        """Record the newest object (or its deletion from the API) and wake its worker."""
        meta = body.get("metadata", {})
        key: Key = (meta.get("namespace", ""), meta.get("name", ""))
        slot = self._slots.get(key)
        if slot is None:
            if deleted or self._stopping:
                return
            slot = self._slots[key] = _Slot(body=body)
            slot.task = asyncio.create_task(self._work(key, slot), name=f"rudder:{key[0]}/{key[1]}")
        previous, slot.body = slot.body, None if deleted else body
        if slot.task is not None and signature(previous) == signature(slot.body):
            return  # only status or resourceVersion moved (often our own write): nothing to do
        if slot.run is not None:
            gone = slot.body is None or bool(meta.get("deletionTimestamp"))
            slot.run.saw(generation_of(slot.body), gone=gone)
        slot.wake.set()

    def wake(self, key: Key) -> None:
        """Reconcile `key` again now (e.g. a referenced ConfigMap changed)."""
        slot = self._slots.get(key)
        if slot is not None:
            slot.wake.set()

    def keys(self) -> list[Key]:
        return list(self._slots)

    def bodies(self) -> list[JSON]:
        """The newest object seen of every HelmRelease served (for the status page)."""
        return [slot.body for slot in self._slots.values() if slot.body is not None]

    async def stop(self) -> None:
        self._stopping = True
        tasks = [slot.task for slot in self._slots.values() if slot.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._slots.clear()

    async def _work(self, key: Key, slot: _Slot) -> None:
        delay: float | None = 0.0
        while True:
            if delay is None:
                await slot.wake.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(slot.wake.wait(), timeout=delay)
            slot.wake.clear()
            body = slot.body
            if body is None:
                del self._slots[key]
                metrics.forget(*key)
                if self._gone is not None:
                    try:
                        await self._gone(key)
                    except Exception:
                        log.exception("forgetting %s/%s failed", *key)
                return
            slot.run = Run()
            started = time.monotonic()
            try:
                async with self._limit:
                    started = time.monotonic()
                    # The newest object seen, now that it runs (None: deleted meanwhile).
                    newest = slot.body
                    if newest is None:
                        outcome = Outcome(requeue_after=0.0)
                    else:
                        outcome = await self._reconcile(newest, slot.run)
                result = metrics.reconcile_result(
                    failed=outcome.failed, requeue_after=outcome.requeue_after
                )
            except asyncio.CancelledError:
                raise
            except TRANSPORT_ERRORS as error:
                # The API server is away (restarting, unreachable): look again soon, not
                # after a backoff that grew while it was down.
                log.warning("reconcile of %s/%s: the API server is unreachable: %r", *key, error)
                outcome = Outcome(requeue_after=TRANSPORT_RETRY, failed=True)
                result = "error"
            except Exception:
                log.exception("reconcile of %s/%s failed unexpectedly", *key)
                outcome = Outcome(requeue_after=None, failed=True)
                result = "error"
            finally:
                slot.run = None
            metrics.record_reconcile(result, time.monotonic() - started)
            if outcome.failed:
                slot.failures += 1
                backoff = BACKOFF_START * 2 ** min(slot.failures - 1, 30)
                jitter = random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not crypto
                delay = min(BACKOFF_MAX, backoff * jitter)
                if outcome.requeue_after is not None:
                    delay = min(delay, outcome.requeue_after)
            else:
                slot.failures = 0
                delay = outcome.requeue_after

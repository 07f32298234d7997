"""rudder's work queue (`reconcile.manager`), driven with a fake reconcile function.

What a user notices: every HelmRelease is reconciled, never twice at once, a new
generation cuts a long wait short, status-only events cost nothing, failures are retried
ever more slowly (but soon when only the API server was away), and a deleted HelmRelease
stops being served.

Waits that would take seconds or minutes go through `Clock`, which records the delay a
worker asks for and sleeps a tiny fraction of it, so the exact backoff can be checked fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from rudder.reconcile import manager as manager_module
from rudder.reconcile.manager import (
    BACKOFF_MAX,
    BACKOFF_START,
    TRANSPORT_RETRY,
    Manager,
    Outcome,
    Run,
    signature,
)

JSON = dict[str, Any]
Key = tuple[str, str]
Behave = Callable[[JSON, Run, int], Awaitable[Outcome]]

WEB: Key = ("apps", "web")
IDLE = Outcome(requeue_after=None)
FAILED = Outcome(requeue_after=None, failed=True)


def hr(
    name: str = "web",
    generation: int = 1,
    *,
    namespace: str = "apps",
    resource_version: str = "1",
    status: JSON | None = None,
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    finalizers: list[str] | None = None,
    deleting: bool = False,
) -> JSON:
    meta: JSON = {
        "namespace": namespace,
        "name": name,
        "generation": generation,
        "resourceVersion": resource_version,
    }
    if annotations is not None:
        meta["annotations"] = annotations
    if labels is not None:
        meta["labels"] = labels
    if finalizers is not None:
        meta["finalizers"] = finalizers
    if deleting:
        meta["deletionTimestamp"] = "2026-03-01T12:00:00Z"
    body: JSON = {"apiVersion": "rudder.dev/v1alpha1", "kind": "HelmRelease", "metadata": meta}
    if status is not None:
        body["status"] = status
    return body


@dataclass
class Call:
    key: Key
    generation: int | None
    body: JSON
    run: Run
    started: float
    ended: float | None = None
    cancelled: bool = False


async def idle(body: JSON, run: Run, n: int) -> Outcome:
    return IDLE


class FakeReconcile:
    """Records every reconcile: what it got, when, and how many ran at once."""

    def __init__(self, behave: Behave = idle) -> None:
        self.behave = behave
        self.calls: list[Call] = []
        self.running: Counter[Key] = Counter()
        self.peak_total = 0
        self.peak_same_key = 0

    def of(self, key: Key) -> list[Call]:
        return [call for call in self.calls if call.key == key]

    async def __call__(self, body: JSON, run: Run) -> Outcome:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        call = Call(key, meta.get("generation"), body, run, time.monotonic())
        self.calls.append(call)
        self.running[key] += 1
        self.peak_total = max(self.peak_total, sum(self.running.values()))
        self.peak_same_key = max(self.peak_same_key, self.running[key])
        try:
            return await self.behave(body, run, len(self.of(key)))
        except asyncio.CancelledError:
            call.cancelled = True
            raise
        finally:
            self.running[key] -= 1
            call.ended = time.monotonic()


def script(*steps: Outcome | Exception) -> Behave:
    """Reconcile n returns (or raises) steps[n - 1]; after the script there is nothing to do."""

    async def behave(body: JSON, run: Run, n: int) -> Outcome:
        if n > len(steps):
            return IDLE
        step = steps[n - 1]
        if isinstance(step, Exception):
            raise step
        return step

    return behave


async def eventually(predicate: Callable[[], bool], within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.002)


def rudder_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("rudder:") and not t.done()]


@pytest.fixture
async def start() -> AsyncIterator[Callable[..., Manager]]:
    """Managers made by a test are stopped after it, so no worker outlives its test."""
    managers: list[Manager] = []

    def make(reconcile: FakeReconcile, concurrency: int = 4) -> Manager:
        manager = Manager(reconcile, concurrency=concurrency)
        managers.append(manager)
        return manager

    yield make
    for manager in managers:
        await manager.stop()


class Clock:
    """Stands in for `asyncio` in the manager module: records each delay a worker waits
    before its next reconcile, and really waits only `scale` of it."""

    scale = 0.0002

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def wait_for(self, awaitable: Awaitable[Any], timeout: float) -> Any:  # noqa: ASYNC109
        self.waits.append(timeout)
        return await asyncio.wait_for(awaitable, timeout * self.scale)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(manager_module, "asyncio", fake)
    return fake


@pytest.fixture
def no_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manager_module, "random", SimpleNamespace(uniform=lambda a, b: 1.0))


async def run_script(
    start: Callable[..., Manager], clock: Clock, *steps: Outcome | Exception
) -> list[float]:
    """The delays a worker waited before each reconcile of the script (the first is 0)."""
    fake = FakeReconcile(script(*steps))
    manager = start(fake)
    manager.observe(hr())
    await eventually(lambda: len(fake.calls) == len(steps) + 1)
    await asyncio.sleep(0.02)
    assert len(fake.calls) == len(steps) + 1  # idle after the script: no timer
    return clock.waits


# --- one worker per HelmRelease, a bounded number at once -----------------------------------


async def test_a_new_helmrelease_is_reconciled_at_once(start: Callable[..., Manager]) -> None:
    fake = FakeReconcile()
    manager = start(fake)
    body = hr()
    manager.observe(body)
    await eventually(lambda: len(fake.calls) == 1, within=0.5)
    assert fake.calls[0].body == body
    assert manager.keys() == [WEB]
    await asyncio.sleep(0.05)
    assert len(fake.calls) == 1  # idle: nothing asked for another run


async def test_one_reconcile_at_a_time_per_helmrelease_on_the_newest_object(
    start: Callable[..., Manager],
) -> None:
    gate = asyncio.Event()

    async def behave(body: JSON, run: Run, n: int) -> Outcome:
        if n == 1:
            await gate.wait()
        return IDLE

    fake = FakeReconcile(behave)
    manager = start(fake)
    manager.observe(hr(generation=1))
    await eventually(lambda: fake.running[WEB] == 1)
    for generation in range(2, 7):
        manager.observe(hr(generation=generation, resource_version=str(generation)))
        await asyncio.sleep(0.005)
    assert len(fake.calls) == 1  # the events wait for the running reconcile
    gate.set()
    await eventually(lambda: len(fake.calls) == 2)
    await asyncio.sleep(0.05)
    # Five events while busy make one more reconcile, of the newest generation.
    assert [call.generation for call in fake.calls] == [1, 6]
    assert fake.peak_same_key == 1


async def test_at_most_concurrency_reconciles_run_at_once(start: Callable[..., Manager]) -> None:
    async def behave(body: JSON, run: Run, n: int) -> Outcome:
        await asyncio.sleep(0.03)
        return IDLE

    fake = FakeReconcile(behave)
    manager = start(fake, concurrency=2)
    names = [f"app{n}" for n in range(7)]
    for name in names:
        manager.observe(hr(name))
    await eventually(lambda: len(fake.calls) == len(names) and not any(fake.running.values()))
    assert fake.peak_total == 2
    assert sorted(call.key[1] for call in fake.calls) == names


async def test_a_helmrelease_that_always_requeues_does_not_starve_the_others(
    start: Callable[..., Manager],
) -> None:
    async def behave(body: JSON, run: Run, n: int) -> Outcome:
        await asyncio.sleep(0.001)
        return Outcome(requeue_after=0.0) if body["metadata"]["name"] == "busy" else IDLE

    fake = FakeReconcile(behave)
    manager = start(fake, concurrency=1)
    manager.observe(hr("busy"))
    await eventually(lambda: len(fake.of(("apps", "busy"))) >= 3)
    manager.observe(hr("quiet"))
    await eventually(lambda: len(fake.of(("apps", "quiet"))) == 1, within=1.0)
    assert fake.peak_total == 1


# --- superseded -----------------------------------------------------------------------------


async def test_a_new_generation_supersedes_the_running_reconcile(
    start: Callable[..., Manager],
) -> None:
    async def behave(body: JSON, run: Run, n: int) -> Outcome:
        run.begin(body["metadata"]["generation"])
        if n == 1:  # a long readiness wait, abandoned when superseded
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.superseded.wait(), timeout=5)
        return IDLE

    fake = FakeReconcile(behave)
    manager = start(fake)
    manager.observe(hr(generation=1))
    await eventually(lambda: fake.running[WEB] == 1)
    manager.observe(hr(generation=2, resource_version="2"))
    await eventually(lambda: len(fake.calls) == 2, within=1.0)
    first, second = fake.calls
    assert first.run.superseded.is_set()
    assert first.ended is not None
    assert first.ended - first.started < 1.0  # the wait was cut short, not timed out
    assert second.generation == 2
    await eventually(lambda: second.ended is not None)
    assert not second.run.superseded.is_set()


async def test_a_reconcile_that_begins_on_an_older_generation_than_seen_is_superseded(
    start: Callable[..., Manager],
) -> None:
    gate = asyncio.Event()
    superseded_at_begin: list[bool] = []

    async def behave(body: JSON, run: Run, n: int) -> Outcome:
        if n == 1:
            await gate.wait()  # generation 2 arrives while this one reads the object
            run.begin(1)
        else:
            run.begin(2)
        superseded_at_begin.append(run.superseded.is_set())
        return IDLE

    fake = FakeReconcile(behave)
    manager = start(fake)
    manager.observe(hr(generation=1))
    await eventually(lambda: fake.running[WEB] == 1)
    manager.observe(hr(generation=2, resource_version="2"))
    gate.set()
    await eventually(lambda: len(superseded_at_begin) == 2)
    assert superseded_at_begin == [True, False]
    assert [call.generation for call in fake.calls] == [1, 2]


def test_run_superseded_rules() -> None:
    run = Run()
    run.saw(3, gone=False)
    run.begin(2)
    assert run.superseded.is_set()  # began on 2, 3 was seen: stale from the start

    run = Run()
    run.saw(3, gone=False)
    run.begin(3)
    run.saw(3, gone=False)
    run.saw(2, gone=False)  # an older or equal generation (a lagging event): keep going
    run.saw(None, gone=False)
    assert not run.superseded.is_set()
    run.saw(4, gone=False)
    assert run.superseded.is_set()

    run = Run()
    run.saw(None, gone=True)
    assert run.superseded.is_set()


# --- what wakes a worker --------------------------------------------------------------------


@pytest.mark.parametrize(
    "changed",
    [
        hr(status={"observedGeneration": 1, "conditions": [{"type": "Ready"}]}),
        hr(resource_version="99"),
        hr(finalizers=["rudder.dev/finalizer"]),
    ],
    ids=["status", "resourceVersion", "finalizers"],
)
def test_signature_ignores_status_resource_version_and_finalizers(changed: JSON) -> None:
    assert signature(changed) == signature(hr())


@pytest.mark.parametrize(
    "changed",
    [
        hr(generation=2),
        hr(deleting=True),
        hr(annotations={"rudder.dev/requestedAt": "2026-03-01T12:00:00Z"}),
        hr(labels={"team": "a"}),
    ],
    ids=["generation", "deletionTimestamp", "annotations", "labels"],
)
def test_signature_changes_with_what_calls_for_a_reconcile(changed: JSON) -> None:
    assert signature(changed) != signature(hr())
    assert signature(None) != signature(hr())


async def test_a_status_only_change_does_not_wake_the_worker(
    start: Callable[..., Manager],
) -> None:
    fake = FakeReconcile()
    manager = start(fake)
    manager.observe(hr())
    await eventually(lambda: len(fake.calls) == 1)
    own_write = hr(
        resource_version="2",
        status={"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True"}]},
        finalizers=["rudder.dev/finalizer"],
    )
    manager.observe(own_write)
    await asyncio.sleep(0.1)
    assert len(fake.calls) == 1
    assert manager.bodies() == [own_write]  # the status page still shows the newest

    manager.observe(hr(resource_version="3", annotations={"rudder.dev/requestedAt": "now"}))
    await eventually(lambda: len(fake.calls) == 2, within=0.5)


async def test_wake_reconciles_at_once(start: Callable[..., Manager]) -> None:
    fake = FakeReconcile(script(Outcome(requeue_after=3600)))
    manager = start(fake)
    manager.observe(hr())
    await eventually(lambda: len(fake.calls) == 1)
    await asyncio.sleep(0.05)
    manager.wake(WEB)  # a referenced ConfigMap changed: no waiting for the interval
    await eventually(lambda: len(fake.calls) == 2, within=0.5)
    manager.wake(WEB)  # and again from idle
    await eventually(lambda: len(fake.calls) == 3, within=0.5)


async def test_wake_of_an_unknown_helmrelease_does_nothing(start: Callable[..., Manager]) -> None:
    fake = FakeReconcile()
    manager = start(fake)
    manager.wake(("apps", "nope"))
    await asyncio.sleep(0.02)
    assert manager.keys() == []
    assert fake.calls == []


# --- deletion -------------------------------------------------------------------------------


async def test_deletion_ends_the_worker_and_drops_the_helmrelease(
    start: Callable[..., Manager],
) -> None:
    fake = FakeReconcile()
    manager = start(fake)
    manager.observe(hr())
    await eventually(lambda: len(fake.calls) == 1)
    manager.observe(hr(), deleted=True)
    await eventually(lambda: manager.keys() == [] and rudder_tasks() == [], within=0.5)
    assert manager.bodies() == []
    await asyncio.sleep(0.05)
    assert len(fake.calls) == 1

    # A HelmRelease created again with the same name is served again.
    manager.observe(hr(resource_version="7"))
    await eventually(lambda: len(fake.calls) == 2, within=0.5)
    assert manager.keys() == [WEB]


async def test_deletion_during_a_reconcile_supersedes_it_and_nothing_follows(
    start: Callable[..., Manager],
) -> None:
    gate = asyncio.Event()

    async def behave(body: JSON, run: Run, n: int) -> Outcome:
        run.begin(1)
        await gate.wait()
        return Outcome(requeue_after=0.01, failed=True)

    fake = FakeReconcile(behave)
    manager = start(fake)
    manager.observe(hr())
    await eventually(lambda: fake.running[WEB] == 1)
    manager.observe(hr(), deleted=True)
    assert fake.calls[0].run.superseded.is_set()
    gate.set()
    await eventually(lambda: manager.keys() == [] and rudder_tasks() == [], within=0.5)
    await asyncio.sleep(0.05)
    assert len(fake.calls) == 1


async def test_a_deletion_timestamp_supersedes_and_reconciles_for_the_uninstall(
    start: Callable[..., Manager],
) -> None:
    gate = asyncio.Event()

    async def behave(body: JSON, run: Run, n: int) -> Outcome:
        run.begin(body["metadata"]["generation"])
        if n == 1:
            await gate.wait()
        return IDLE

    fake = FakeReconcile(behave)
    manager = start(fake)
    manager.observe(hr())
    await eventually(lambda: fake.running[WEB] == 1)
    manager.observe(hr(resource_version="2", deleting=True))  # same generation
    assert fake.calls[0].run.superseded.is_set()
    gate.set()
    await eventually(lambda: len(fake.calls) == 2)
    assert "deletionTimestamp" in fake.calls[1].body["metadata"]
    assert manager.keys() == [WEB]  # still there until its finalizer goes


async def test_a_deletion_of_an_unseen_helmrelease_starts_nothing(
    start: Callable[..., Manager],
) -> None:
    fake = FakeReconcile()
    manager = start(fake)
    manager.observe(hr(), deleted=True)
    await asyncio.sleep(0.02)
    assert manager.keys() == []
    assert fake.calls == []


# --- when the next run comes ----------------------------------------------------------------


async def test_requeue_after_schedules_the_next_run(start: Callable[..., Manager]) -> None:
    fake = FakeReconcile(script(Outcome(requeue_after=0.25)))
    manager = start(fake)
    manager.observe(hr())
    await eventually(lambda: len(fake.calls) == 2, within=2.0)
    first, second = fake.calls
    assert first.ended is not None
    assert 0.2 <= second.started - first.ended < 1.0
    await asyncio.sleep(0.3)
    assert len(fake.calls) == 2  # the second asked for nothing more


async def test_requeue_after_is_the_delay_asked_for(
    start: Callable[..., Manager], clock: Clock
) -> None:
    waits = await run_script(start, clock, Outcome(requeue_after=600), Outcome(requeue_after=30))
    assert waits == [0.0, 600, 30]


async def test_failures_back_off_exponentially_up_to_backoff_max(
    start: Callable[..., Manager], clock: Clock, no_jitter: None
) -> None:
    failures = 10
    waits = await run_script(start, clock, *[FAILED] * failures)
    expected = [min(BACKOFF_MAX, BACKOFF_START * 2**n) for n in range(failures)]
    assert expected[-2:] == [BACKOFF_MAX, BACKOFF_MAX]  # the script reaches the cap
    assert waits == [0.0, *expected]


async def test_backoff_is_capped_by_requeue_after(
    start: Callable[..., Manager], clock: Clock, no_jitter: None
) -> None:
    soon = BACKOFF_START * 2.5
    waits = await run_script(start, clock, *[Outcome(requeue_after=soon, failed=True)] * 4)
    assert waits == [0.0, BACKOFF_START, BACKOFF_START * 2, soon, soon]


async def test_success_resets_the_backoff(
    start: Callable[..., Manager], clock: Clock, no_jitter: None
) -> None:
    waits = await run_script(
        start, clock, FAILED, FAILED, FAILED, Outcome(requeue_after=60), FAILED, FAILED
    )
    start_ = BACKOFF_START
    assert waits == [0.0, start_, start_ * 2, start_ * 4, 60, start_, start_ * 2]


async def test_backoff_is_jittered_within_twenty_percent(
    start: Callable[..., Manager], clock: Clock
) -> None:
    failures = 6
    waits = await run_script(start, clock, *[FAILED] * failures)
    ratios = [wait / (BACKOFF_START * 2**n) for n, wait in enumerate(waits[1:])]
    assert all(0.8 <= ratio <= 1.2 for ratio in ratios), ratios
    assert len(set(ratios)) > 1  # HelmReleases failing together do not retry in step


async def test_jittered_backoff_never_exceeds_backoff_max(
    start: Callable[..., Manager], clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(manager_module, "random", SimpleNamespace(uniform=lambda a, b: b))
    waits = await run_script(start, clock, *[FAILED] * 10)
    assert max(waits) <= BACKOFF_MAX


@pytest.mark.parametrize(
    "error",
    [
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientConnectionError("connection reset"),
        ConnectionRefusedError(111, "Connection refused"),
        OSError(113, "No route to host"),
    ],
    ids=["ServerDisconnected", "ClientConnectionError", "ConnectionRefused", "OSError"],
)
async def test_a_transport_error_is_retried_within_transport_retry(
    start: Callable[..., Manager], clock: Clock, no_jitter: None, error: Exception
) -> None:
    # Eight ordinary failures grew the backoff to minutes; then the API server goes away.
    waits = await run_script(start, clock, *[FAILED] * 8, error, error)
    assert waits[8] > TRANSPORT_RETRY
    assert waits[9:] == [TRANSPORT_RETRY, TRANSPORT_RETRY]


async def test_transport_errors_from_the_start_retry_sooner_still(
    start: Callable[..., Manager], clock: Clock, no_jitter: None
) -> None:
    errors = [aiohttp.ServerDisconnectedError() for _ in range(5)]
    waits = await run_script(start, clock, *errors)
    assert waits == [0.0] + [min(TRANSPORT_RETRY, BACKOFF_START * 2**n) for n in range(5)]


async def test_an_unexpected_exception_does_not_kill_the_worker(
    start: Callable[..., Manager], clock: Clock, no_jitter: None
) -> None:
    fake = FakeReconcile(script(RuntimeError("bug"), KeyError("spec")))
    manager = start(fake)
    manager.observe(hr())
    await eventually(lambda: len(fake.calls) == 3)
    assert clock.waits == [0.0, BACKOFF_START, BACKOFF_START * 2]  # retried with backoff
    manager.observe(hr(generation=2, resource_version="2"))
    await eventually(lambda: len(fake.calls) == 4)
    assert fake.calls[-1].generation == 2
    assert len(rudder_tasks()) == 1


# --- stop -----------------------------------------------------------------------------------


async def test_stop_cancels_every_reconcile_and_worker(start: Callable[..., Manager]) -> None:
    never = asyncio.Event()

    async def behave(body: JSON, run: Run, n: int) -> Outcome:
        await never.wait()
        return IDLE

    fake = FakeReconcile(behave)
    manager = start(fake, concurrency=2)
    for name in ("a", "b", "c"):
        manager.observe(hr(name))
    await eventually(lambda: sum(fake.running.values()) == 2)
    await asyncio.wait_for(manager.stop(), timeout=1.0)
    assert [call.cancelled for call in fake.calls] == [True, True]
    assert manager.keys() == []
    assert rudder_tasks() == []

    manager.observe(hr("late"))  # an event after stop starts nothing
    await asyncio.sleep(0.02)
    assert manager.keys() == []
    assert len(fake.calls) == 2

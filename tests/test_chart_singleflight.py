"""Concurrent callers for one key share one execution, its result or its failure."""

from __future__ import annotations

import asyncio

import pytest

from rudder.chart.singleflight import SingleFlight


async def test_concurrent_callers_share_one_execution() -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    started = 0
    release = asyncio.Event()

    async def work() -> int:
        nonlocal started
        started += 1
        await release.wait()
        return 42

    waiters = [asyncio.create_task(flights.run("k", work)) for _ in range(50)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*waiters) == [42] * 50
    assert started == 1
    assert not flights.in_flight("k")
    assert await flights.run("k", work) == 42  # a later call runs again
    assert started == 2


async def test_a_failure_reaches_every_waiter_and_is_not_remembered() -> None:
    flights: SingleFlight[str, int] = SingleFlight()

    async def fail() -> int:
        await asyncio.sleep(0.01)
        raise RuntimeError("registry down")

    results = await asyncio.gather(*(flights.run("k", fail) for _ in range(3)),
                                   return_exceptions=True)  # fmt: skip
    assert all(isinstance(r, RuntimeError) for r in results)
    assert not flights.in_flight("k")


async def test_a_cancelled_waiter_does_not_cancel_the_shared_work() -> None:
    flights: SingleFlight[str, str] = SingleFlight()

    async def work() -> str:
        await asyncio.sleep(0.05)
        return "done"

    impatient = asyncio.create_task(flights.run("k", work))
    patient = asyncio.create_task(flights.run("k", work))
    await asyncio.sleep(0.01)
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    assert await patient == "done"

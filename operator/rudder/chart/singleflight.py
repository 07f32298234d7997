"""Coalesce concurrent calls for the same key into one execution (asyncio)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """`await flights.run(key, work)`: while one `work()` for `key` is in flight, other
    callers with the same key wait for its result (or its exception) instead of starting
    their own. A caller that is cancelled does not cancel the shared work."""

    def __init__(self) -> None:
        self._flights: dict[K, asyncio.Task[V]] = {}

    def in_flight(self, key: K) -> bool:
        return key in self._flights

    async def run(self, key: K, work: Callable[[], Coroutine[Any, Any, V]]) -> V:
        task = self._flights.get(key)
        if task is None:
            task = asyncio.create_task(work())
            self._flights[key] = task
            task.add_done_callback(lambda done: self._landed(key, done))
        return await asyncio.shield(task)

    def _landed(self, key: K, task: asyncio.Task[V]) -> None:
        if self._flights.get(key) is task:
            del self._flights[key]
        if not task.cancelled():
            task.exception()  # retrieved here, so an unawaited failure is not logged as lost

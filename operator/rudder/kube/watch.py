"""List, then watch, one collection for as long as the caller wants: the one loop behind
every watch rudder keeps itself (valuesFrom sources, discovery invalidation, readiness and
hook waits).

`changes` yields the collection as listed, then each change. A watch that ends, or whose
connection breaks, is resumed from the last resourceVersion seen (events and bookmarks);
an expired one (410 Gone, as an answer or an ERROR event) is listed again. Failures are
retried after a jittered, growing back-off, and a watch that keeps ending at once is backed
off too. Only the caller's `fatal` API error codes and cancellation end it: an API server
killed mid-stream surfaces as aiohttp errors that are not OSErrors, and a watch that died
on one was how rudder once stopped noticing valuesFrom edits.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator, Collection, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from rudder.kube.client import JSON, TRANSPORT_ERRORS, ApiError

log = logging.getLogger(__name__)

# Longest single watch request; the server ends it then and the watch resumes.
WATCH_SECONDS: Final = 300
# A watch ending sooner than this twice in a row is backed off, as is a failure.
QUICK_SECONDS: Final = 1.0
# Consecutive failures after which they are logged as warnings rather than debug lines.
WARN_AFTER: Final = 5
# A connection cut mid-line leaves JSON that does not parse: retried like the cut itself.
RETRIED: Final[tuple[type[BaseException], ...]] = (*TRANSPORT_ERRORS, ValueError)
CHANGE_TYPES: Final = frozenset({"ADDED", "MODIFIED", "DELETED"})


class ListWatchClient(Protocol):
    """What a watch needs of the API client (`rudder.kube.client.KubeClient` has it)."""

    async def get(self, path: str, **query: str | int | bool) -> JSON: ...

    def watch(
        self, path: str, *, resource_version: str, timeout_seconds: int = ..., **query: str
    ) -> AsyncIterator[JSON]: ...


@dataclass(frozen=True)
class Backoff:
    """Seconds to wait after the n-th failure in a row: doubling from `initial` up to
    `maximum`, each drawn from its upper half so many watches do not retry in step."""

    initial: float = 1.0
    maximum: float = 5.0

    def delay(self, failures: int) -> float:
        # The exponent is capped so hours of failures cannot overflow a float.
        ceiling = min(self.maximum, self.initial * 2.0 ** min(max(0, failures - 1), 32))
        return ceiling * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not secrecy


# Short enough that a watch is back within seconds of the API server.
DEFAULT_BACKOFF: Final = Backoff()


@dataclass(frozen=True)
class Listed:
    """The collection as a list answered. `relisted`: an earlier list was yielded, so
    changes in between may have been missed as events; this listing is their outcome.
    `version`: the list's resourceVersion."""

    items: list[JSON]
    relisted: bool
    version: str = ""


@dataclass(frozen=True)
class Changed:
    """One watch event: `type` is ADDED, MODIFIED or DELETED (the object as it was last)."""

    type: str
    object: JSON


@dataclass(frozen=True)
class Bookmark:
    """The server's word that the collection has no change up to `version` (only with
    `bookmarks=True`): a cache is as new as that version."""

    version: str


@dataclass(frozen=True)
class Interrupted:
    """The list or watch failed with `error` (not a fatal one); it is retried after a
    back-off. Transport errors resume the watch; API errors list again."""

    error: BaseException


Change = Listed | Changed | Interrupted | Bookmark


async def changes(
    kube: ListWatchClient,
    path: str,
    *,
    query: Mapping[str, str] | None = None,
    fatal: Collection[int] = (),
    backoff: Backoff = DEFAULT_BACKOFF,
    deadline: float | None = None,
    list_limit: int | None = None,
    bookmarks: bool = False,
) -> AsyncGenerator[Change, None]:
    """List, then watch, `path` (with `query`, e.g. a field selector) until cancelled.

    Raises the ApiError of a list or watch refused with a code in `fatal`; nothing else
    ends it. `deadline` (event loop time) caps each watch request so the server ends it by
    then. `list_limit` is for callers that need the resourceVersion and not the items;
    `bookmarks` yields the server's bookmarks too (`Bookmark`).
    Use it under `contextlib.aclosing` when leaving the loop early, so the open watch
    request is closed at once.
    """
    loop = asyncio.get_running_loop()
    selector = dict(query or {})
    list_query: dict[str, str | int | bool] = dict(selector)
    if list_limit is not None:
        list_query["limit"] = list_limit
    version: str | None = None  # None: list (again) before watching
    listed = False
    failures = 0
    quick_before = False
    while True:
        started = loop.time()
        error: BaseException | None = None
        try:
            if version is None:
                listing = await kube.get(path, **list_query)
                version = resource_version(listing, "")
                items = [item for item in listing.get("items") or [] if isinstance(item, dict)]
                yield Listed(items, relisted=listed, version=version)
                listed = True
            window = WATCH_SECONDS
            if deadline is not None:
                window = max(1, min(WATCH_SECONDS, int(deadline - loop.time()) + 1))
            stream = kube.watch(path, resource_version=version, timeout_seconds=window, **selector)
            try:
                async for event in stream:
                    kind, obj = event.get("type"), event.get("object")
                    if not isinstance(obj, dict):
                        continue
                    if kind == "ERROR":  # a Status: 410 Expired is the usual one
                        raise ApiError(int(obj.get("code") or 500), obj, "WATCH", path)
                    version = resource_version(obj, version)
                    if kind in CHANGE_TYPES:
                        yield Changed(str(kind), obj)
                    elif kind == "BOOKMARK" and bookmarks:
                        yield Bookmark(version)
            finally:
                close = getattr(stream, "aclose", None)
                if close is not None:
                    await close()
        except ApiError as caught:
            if caught.code in fatal:
                raise
            version = None
            if caught.code != 410:  # expired: list again at once
                error = caught
        except RETRIED as caught:
            error = caught  # resume from `version` (None: the list itself failed)
        except Exception as caught:  # a bug: say so loudly, yet never stop watching
            log.exception("watch of %s failed unexpectedly", path)
            error, version = caught, None

        quick = loop.time() - started < QUICK_SECONDS
        if error is not None or (quick and quick_before):
            failures = failures + 1 if quick else 1
            if error is not None:
                level = logging.WARNING if failures >= WARN_AFTER else logging.DEBUG
                log.log(level, "watch of %s interrupted (%d in a row): %r", path, failures, error)
                yield Interrupted(error)
            await asyncio.sleep(backoff.delay(failures))
        elif not quick:
            failures = 0
        quick_before = quick


def log_unexpected_end(task: asyncio.Task[None]) -> None:
    """Done-callback for a background task that should run until cancelled (a watch built
    on `changes` only ends when cancelled): any other end is a bug, logged loudly."""
    if task.cancelled():
        return
    error = task.exception()
    if error is None:
        log.error("background task %s ended; what it watched is no longer followed", task)
    else:
        log.error(
            "background task %s died; what it watched is no longer followed",
            task,
            exc_info=error,
        )


def resource_version(obj: JSON, default: str = "") -> str:
    """The object's (or a list's) metadata.resourceVersion, `default` when it has none."""
    meta = obj.get("metadata")
    version = meta.get("resourceVersion") if isinstance(meta, dict) else None
    return str(version) if version else default

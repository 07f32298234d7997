"""A read-only HTML page of every HelmRelease: its Ready state, message, revision, chart,
digest, conflicts, objects not yet ready and latest events.

The page is rendered with jinja2 with autoescape on, so names, messages and event texts —
which anyone who may create a HelmRelease or an object it renders controls — are always
shown as text, never as markup. It needs no JavaScript and loads nothing from elsewhere;
the server adds a Content-Security-Policy that forbids both, as a second line of defence.

Where the data comes from is the caller's business: anything that implements
`StatusPageSource` (the operator's implementation reads its cache and the API; tests use a
fake). `collect` turns the source's raw objects into `ReleaseView`s, `render` turns those
into HTML; both are pure apart from the source calls.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import jinja2

from rudder import __version__

log = logging.getLogger(__name__)

JSON = dict[str, Any]
TEMPLATES: Final = Path(__file__).resolve().parent / "templates"
MAX_EVENTS: Final = 5
MAX_ITEMS: Final = 20  # conflicts / not-ready objects shown per HelmRelease
MAX_TEXT: Final = 2000  # characters of a message shown (conditions allow 32 KiB)
STATES: Final = ("ready", "progressing", "failed", "suspended", "unknown")


class StatusPageSource(Protocol):
    """What the status page reads. Implemented by the operator; faked in tests."""

    async def helmreleases(self) -> list[JSON]:
        """Every HelmRelease the operator serves, as the API returns them (with status)."""
        ...

    async def events(self, namespace: str, name: str) -> list[JSON]:
        """core/v1 Events whose involvedObject is this HelmRelease, in any order."""
        ...


@dataclass(frozen=True)
class ObjectLine:
    """One object of a release with a problem: a conflict or a not-ready object."""

    kind: str
    namespace: str
    name: str
    detail: str  # the conflicting field, or the kstatus status
    note: str  # the other field manager, or the kstatus message


@dataclass(frozen=True)
class EventLine:
    type: str
    reason: str
    message: str
    time: str  # RFC 3339, as the API gave it
    age: str  # "3m", relative to the page's time
    count: int


@dataclass(frozen=True)
class ReleaseView:
    """Everything the page shows of one HelmRelease, already flattened to text."""

    namespace: str
    name: str
    state: str  # one of STATES: the colour
    ready: str  # "True" / "False" / "Unknown"
    reason: str
    message: str
    revision: str
    chart: str
    digest: str
    notes: tuple[str, ...] = ()
    conflicts: tuple[ObjectLine, ...] = ()
    conflicts_more: int = 0
    not_ready: tuple[ObjectLine, ...] = ()
    not_ready_more: int = 0
    events: tuple[EventLine, ...] = ()


@dataclass(frozen=True)
class Page:
    releases: tuple[ReleaseView, ...]
    generated: str
    counts: Mapping[str, int] = field(default_factory=dict)
    error: str = ""


def _text(value: Any, limit: int = MAX_TEXT) -> str:
    if value is None:
        return ""
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _conditions(status: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    found: dict[str, Mapping[str, Any]] = {}
    for condition in status.get("conditions") or ():
        if isinstance(condition, Mapping) and isinstance(condition.get("type"), str):
            found[condition["type"]] = condition
    return found


def short_digest(digest: str) -> str:
    """sha256:0123456789abcdef… -> sha256:0123456789ab (the Digest printer column)."""
    algorithm, _, hexpart = digest.partition(":")
    return f"{algorithm}:{hexpart[:12]}" if hexpart else digest[:19]


def parse_time(value: Any) -> datetime.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def age(then: datetime.datetime | None, now: datetime.datetime) -> str:
    """kubectl's style of age: 45s, 12m, 3h, 5d."""
    if then is None:
        return ""
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _event_time(event: Mapping[str, Any]) -> str:
    meta = event.get("metadata") or {}
    for value in (
        event.get("lastTimestamp"),
        event.get("eventTime"),
        (event.get("series") or {}).get("lastObservedTime"),
        event.get("firstTimestamp"),
        meta.get("creationTimestamp"),
    ):
        if isinstance(value, str) and value:
            return value
    return ""


def event_lines(
    events: Sequence[Mapping[str, Any]], now: datetime.datetime, limit: int = MAX_EVENTS
) -> tuple[EventLine, ...]:
    """The `limit` newest events, newest first."""
    epoch = datetime.datetime.min.replace(tzinfo=datetime.UTC)
    ordered = sorted(
        (e for e in events if isinstance(e, Mapping)),
        key=lambda e: parse_time(_event_time(e)) or epoch,
        reverse=True,
    )
    lines = []
    for event in ordered[:limit]:
        stamp = _event_time(event)
        count = event.get("count") or (event.get("series") or {}).get("count") or 1
        lines.append(
            EventLine(
                type=_text(event.get("type") or "Normal", 40),
                reason=_text(event.get("reason"), 200),
                message=_text(event.get("message")),
                time=stamp,
                age=age(parse_time(stamp), now),
                count=int(count) if isinstance(count, int) else 1,
            )
        )
    return tuple(lines)


def _object_lines(items: Any, detail_key: str, note_key: str) -> tuple[list[ObjectLine], int]:
    entries = [item for item in (items or ()) if isinstance(item, Mapping)]
    lines = [
        ObjectLine(
            kind=_text(item.get("kind"), 200),
            namespace=_text(item.get("namespace"), 200),
            name=_text(item.get("name"), 300),
            detail=_text(item.get(detail_key), 500),
            note=_text(item.get(note_key)),
        )
        for item in entries[:MAX_ITEMS]
    ]
    return lines, max(0, len(entries) - MAX_ITEMS)


def state_of(helmrelease: Mapping[str, Any]) -> str:
    """The page's colour of a HelmRelease, from its spec and kstatus conditions."""
    spec = helmrelease.get("spec") or {}
    conditions = _conditions(helmrelease.get("status") or {})
    ready = conditions.get("Ready", {}).get("status")
    if spec.get("suspend"):
        return "suspended"
    if ready == "True":
        return "ready"
    if conditions.get("Stalled", {}).get("status") == "True":
        return "failed"
    if conditions.get("Reconciling", {}).get("status") == "True":
        return "progressing"
    if ready == "False":
        return "failed"
    return "unknown"


def view_of(
    helmrelease: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]] = (),
    *,
    now: datetime.datetime | None = None,
    max_events: int = MAX_EVENTS,
) -> ReleaseView:
    """Flatten one HelmRelease (and its events) into what the page shows."""
    now = now or datetime.datetime.now(datetime.UTC)
    meta = helmrelease.get("metadata") or {}
    spec = helmrelease.get("spec") or {}
    status = helmrelease.get("status") or {}
    conditions = _conditions(status)
    ready = conditions.get("Ready", {})
    chart = status.get("chart") or {}
    release = status.get("release") or {}
    resources = status.get("resources") or {}

    chart_text = chart.get("nameVersion") or ":".join(
        str(part) for part in (chart.get("name"), chart.get("version")) if part
    )
    digest = chart.get("shortDigest") or short_digest(str(chart.get("digest") or ""))

    notes = []
    if spec.get("suspend"):
        notes.append("suspended: spec.suspend is true")
    if meta.get("deletionTimestamp"):
        notes.append("being deleted")
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    if isinstance(generation, int) and isinstance(observed, int) and observed < generation:
        notes.append(f"generation {generation} not reconciled yet (last: {observed})")
    stalled = conditions.get("Stalled", {})
    stalled_message = stalled.get("message") if stalled.get("status") == "True" else None
    if stalled_message and stalled_message != ready.get("message"):
        notes.append(f"stalled: {_text(stalled_message, 500)}")

    conflicts, conflicts_more = _object_lines(status.get("conflicts"), "field", "manager")
    not_ready, not_ready_more = _object_lines(resources.get("notReady"), "status", "message")
    ready_status = ready.get("status")
    return ReleaseView(
        namespace=_text(meta.get("namespace"), 300),
        name=_text(meta.get("name"), 300),
        state=state_of(helmrelease),
        ready=ready_status if ready_status in ("True", "False") else "Unknown",
        reason=_text(ready.get("reason"), 200),
        message=_text(ready.get("message")),
        revision=str(release.get("revision") or ""),
        chart=_text(chart_text, 300),
        digest=_text(digest, 80),
        notes=tuple(notes),
        conflicts=tuple(conflicts),
        conflicts_more=conflicts_more,
        not_ready=tuple(not_ready),
        not_ready_more=not_ready_more,
        events=event_lines(events, now, max_events),
    )


async def collect(
    source: StatusPageSource,
    *,
    max_events: int = MAX_EVENTS,
    concurrency: int = 8,
    now: datetime.datetime | None = None,
) -> Page:
    """Read the source and build the page's model. Events of one HelmRelease that cannot be
    read leave its event list empty; a failure to list HelmReleases is shown on the page."""
    now = now or datetime.datetime.now(datetime.UTC)
    generated = now.strftime("%Y-%m-%d %H:%M:%S UTC")
    try:
        helmreleases = await source.helmreleases()
    except Exception as error:
        log.warning("status page: could not list HelmReleases: %s", error)
        return Page(releases=(), generated=generated, error=_text(error, 500))

    limit = asyncio.Semaphore(max(1, concurrency))

    async def events_of(helmrelease: Mapping[str, Any]) -> list[JSON]:
        meta = helmrelease.get("metadata") or {}
        async with limit:
            try:
                return await source.events(meta.get("namespace", ""), meta.get("name", ""))
            except Exception as error:
                log.debug("status page: no events for %s: %s", meta.get("name"), error)
                return []

    ordered = sorted(
        (hr for hr in helmreleases if isinstance(hr, Mapping)),
        key=lambda hr: (
            (hr.get("metadata") or {}).get("namespace", ""),
            (hr.get("metadata") or {}).get("name", ""),
        ),
    )
    all_events = await asyncio.gather(*(events_of(hr) for hr in ordered))
    views = tuple(
        view_of(hr, events, now=now, max_events=max_events)
        for hr, events in zip(ordered, all_events, strict=True)
    )
    counts = {state: sum(1 for v in views if v.state == state) for state in STATES}
    return Page(releases=views, generated=generated, counts=counts)


_environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,  # always, whatever the template's name: every value is untrusted text
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(page: Page, *, refresh_seconds: int = 30) -> str:
    """The page as HTML (autoescaped)."""
    template = _environment.get_template("status.html")
    return template.render(
        page=page, version=__version__, refresh_seconds=refresh_seconds, states=STATES
    )


async def render_page(source: StatusPageSource, *, refresh_seconds: int = 30) -> str:
    """Read the source and render the page: what the server's `/` answers."""
    return render(await collect(source), refresh_seconds=refresh_seconds)

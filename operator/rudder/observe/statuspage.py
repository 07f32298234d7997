"""The read-only status pages: an overview of every HelmRelease (one compact row each,
not-Ready first, filtered and paginated), and one page per HelmRelease (conditions,
message, history, conflicts, drift, objects not ready, recent events).

A page view stays cheap at cluster scale: the overview reads only the operator's own cache
of HelmReleases (no API request, whatever N is); a release page makes one request, for that
release's events. The pages are rendered with jinja2 with autoescape on, so names, messages
and event texts — which anyone who may create a HelmRelease or an object it renders
controls — are always shown as text, never as markup. They need no JavaScript and load
nothing from elsewhere; the server adds a Content-Security-Policy that forbids both.

Where the data comes from is the caller's business: anything that implements
`StatusPageSource` (the operator reads its cache and the API; tests use a fake).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import urllib.parse
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
# The overview's order: what needs a look first.
ATTENTION: Final = {"failed": 0, "progressing": 1, "unknown": 2, "suspended": 3, "ready": 4}
PER_PAGE: Final = 100
MAX_PER_PAGE: Final = 200
MAX_HISTORY: Final = 10


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
class ConditionLine:
    type: str
    status: str
    reason: str
    message: str


@dataclass(frozen=True)
class HistoryLine:
    revision: str
    status: str
    chart: str
    digest: str
    deployed: str


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
    conditions: tuple[ConditionLine, ...] = ()
    history: tuple[HistoryLine, ...] = ()
    drift: tuple[ObjectLine, ...] = ()
    drift_more: int = 0
    preview: str = ""  # the summary of status.preview (the full diff has its own page)


@dataclass(frozen=True)
class Page:
    """A release page (one ReleaseView), or none with the error that says why."""

    releases: tuple[ReleaseView, ...]
    generated: str
    counts: Mapping[str, int] = field(default_factory=dict)
    error: str = ""


@dataclass(frozen=True)
class Row:
    """One HelmRelease in the overview."""

    namespace: str
    name: str
    state: str
    ready: str
    reason: str
    revision: str
    chart: str
    digest: str
    age: str


@dataclass(frozen=True)
class Query:
    """The overview's filters and page, from the URL (`?namespace=&state=&q=&page=`)."""

    namespace: str = ""
    state: str = ""  # one of STATES, or "" for all; "not-ready" for all but ready
    text: str = ""  # in namespace/name, reason or message
    page: int = 1
    per_page: int = PER_PAGE

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> Query:
        def number(key: str, default: int, most: int) -> int:
            try:
                return max(1, min(int(params.get(key, default)), most))
            except ValueError:
                return default

        state = params.get("state", "")
        return cls(
            namespace=_text(params.get("namespace", ""), 253).strip(),
            state=state if state in (*STATES, "not-ready") else "",
            text=_text(params.get("q", ""), 200).strip(),
            page=number("page", 1, 1_000_000),
            per_page=number("per_page", PER_PAGE, MAX_PER_PAGE),
        )

    def link(self, **changes: Any) -> str:
        """The overview URL of this query with `changes` (empty values left out)."""
        values = {
            "namespace": self.namespace,
            "state": self.state,
            "q": self.text,
            "page": self.page if self.page > 1 else "",
            "per_page": self.per_page if self.per_page != PER_PAGE else "",
        }
        values.update(changes)
        kept = {key: str(value) for key, value in values.items() if value not in ("", None, 1)}
        return "?" + urllib.parse.urlencode(kept) if kept else "?"

    def matches(self, helmrelease: Mapping[str, Any], state: str) -> bool:
        meta = helmrelease.get("metadata") or {}
        if self.namespace and meta.get("namespace") != self.namespace:
            return False
        if self.state == "not-ready" and state == "ready":
            return False
        if self.state not in ("", "not-ready") and state != self.state:
            return False
        if self.text:
            ready = _conditions(helmrelease.get("status") or {}).get("Ready", {})
            haystack = " ".join(
                str(part or "")
                for part in (
                    f"{meta.get('namespace')}/{meta.get('name')}",
                    ready.get("reason"),
                    ready.get("message"),
                )
            )
            return self.text.lower() in haystack.lower()
        return True


@dataclass(frozen=True)
class Overview:
    rows: tuple[Row, ...]
    query: Query
    total: int  # every HelmRelease
    matched: int  # those the filters keep
    pages: int
    generated: str
    counts: Mapping[str, int] = field(default_factory=dict)  # by state, of every one
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
    if conditions.get("Ready", {}).get("reason") == "ApprovalPending":
        return "progressing"  # a person's turn, not a failure
    if ready == "False":
        return "failed"
    return "unknown"


def _chart_columns(chart: Mapping[str, Any]) -> tuple[str, str]:
    """status.chart as the pages show it: name:version, and the short digest."""
    text = chart.get("nameVersion") or ":".join(
        str(part) for part in (chart.get("name"), chart.get("version")) if part
    )
    return str(text), chart.get("shortDigest") or short_digest(str(chart.get("digest") or ""))


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

    chart_text, digest = _chart_columns(chart)

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
    drifted = [
        {**item, "fields": ", ".join(str(f) for f in item.get("fields") or ())}
        for item in status.get("drift") or ()
        if isinstance(item, Mapping)
    ]
    drift, drift_more = _object_lines(drifted, "fields", "note")
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
        conditions=tuple(
            ConditionLine(
                _text(c.get("type"), 100),
                _text(c.get("status"), 20),
                _text(c.get("reason"), 200),
                _text(c.get("message")),
            )
            for c in conditions.values()
        ),
        history=tuple(
            HistoryLine(
                revision=str(entry.get("revision") or ""),
                status=_text(entry.get("status"), 40),
                chart=_text(entry.get("chartVersion"), 100),
                digest=short_digest(str(entry.get("chartDigest") or "")),
                deployed=_text(entry.get("lastDeployed"), 60),
            )
            for entry in (status.get("history") or ())[:MAX_HISTORY]
            if isinstance(entry, Mapping)
        ),
        drift=tuple(drift),
        drift_more=drift_more,
        preview=_preview_summary(status.get("preview")),
    )


def _preview_summary(preview: Any) -> str:
    if not isinstance(preview, Mapping) or not preview.get("digest"):
        return ""
    counts = ", ".join(
        f"{preview.get(key, 0)} {key}" for key in ("added", "changed", "removed", "conflicting")
    )
    return _text(
        f"{preview.get('action', '')} to revision {preview.get('revision', '')}: {counts} "
        f"(digest {preview.get('digest')}, computed {preview.get('computedAt', '')})",
        500,
    )


def row_of(helmrelease: Mapping[str, Any], state: str, now: datetime.datetime) -> Row:
    meta = helmrelease.get("metadata") or {}
    status = helmrelease.get("status") or {}
    ready = _conditions(status).get("Ready", {})
    chart_text, digest = _chart_columns(status.get("chart") or {})
    ready_status = ready.get("status")
    return Row(
        namespace=_text(meta.get("namespace"), 300),
        name=_text(meta.get("name"), 300),
        state=state,
        ready=ready_status if ready_status in ("True", "False") else "Unknown",
        reason=_text(ready.get("reason"), 200),
        revision=str((status.get("release") or {}).get("revision") or ""),
        chart=_text(chart_text, 300),
        digest=_text(digest, 80),
        age=age(parse_time(meta.get("creationTimestamp")), now),
    )


async def overview(
    source: StatusPageSource, query: Query = Query(), *, now: datetime.datetime | None = None
) -> Overview:
    """The overview's rows for `query`: from the source's HelmReleases alone (no events)."""
    now = now or datetime.datetime.now(datetime.UTC)
    generated = now.strftime("%Y-%m-%d %H:%M:%S UTC")
    try:
        helmreleases = [hr for hr in await source.helmreleases() if isinstance(hr, Mapping)]
    except Exception as error:
        log.warning("status page: could not list HelmReleases: %s", error)
        return Overview((), query, 0, 0, 1, generated, error=_text(error, 500))
    states = [state_of(hr) for hr in helmreleases]
    counts = {state: states.count(state) for state in STATES}
    kept = [
        (hr, state)
        for hr, state in zip(helmreleases, states, strict=True)
        if query.matches(hr, state)
    ]
    kept.sort(
        key=lambda pair: (
            ATTENTION[pair[1]],
            (pair[0].get("metadata") or {}).get("namespace", ""),
            (pair[0].get("metadata") or {}).get("name", ""),
        )
    )
    pages = max(1, -(-len(kept) // query.per_page))
    page = min(query.page, pages)
    start = (page - 1) * query.per_page
    return Overview(
        rows=tuple(row_of(hr, state, now) for hr, state in kept[start : start + query.per_page]),
        query=dataclasses.replace(query, page=page),
        total=len(helmreleases),
        matched=len(kept),
        pages=pages,
        generated=generated,
        counts=counts,
    )


def find(helmreleases: Sequence[Any], namespace: str, name: str) -> Mapping[str, Any] | None:
    """HelmRelease `namespace/name` among those the operator serves, or None."""
    return next(
        (
            hr
            for hr in helmreleases
            if isinstance(hr, Mapping)
            and (hr.get("metadata") or {}).get("namespace") == namespace
            and (hr.get("metadata") or {}).get("name") == name
        ),
        None,
    )


async def detail(
    source: StatusPageSource,
    namespace: str,
    name: str,
    *,
    max_events: int = MAX_EVENTS,
    now: datetime.datetime | None = None,
) -> Page:
    """One HelmRelease's page: from the source's cache, plus one read of its events."""
    now = now or datetime.datetime.now(datetime.UTC)
    generated = now.strftime("%Y-%m-%d %H:%M:%S UTC")
    try:
        helmreleases = await source.helmreleases()
    except Exception as error:
        log.warning("status page: could not list HelmReleases: %s", error)
        return Page(releases=(), generated=generated, error=_text(error, 500))
    found = find(helmreleases, namespace, name)
    if found is None:
        return Page(releases=(), generated=generated, error=f"no HelmRelease {namespace}/{name}")
    try:
        events = await source.events(namespace, name)
    except Exception as error:
        log.debug("status page: no events for %s/%s: %s", namespace, name, error)
        events = []
    return Page(
        releases=(view_of(found, events, now=now, max_events=max_events),),
        generated=generated,
        counts={state_of(found): 1},
    )


environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,  # always, whatever the template's name: every value is untrusted text
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(page: Page, *, refresh_seconds: int = 30) -> str:
    """A release page as HTML (autoescaped)."""
    template = environment.get_template("release.html")
    return template.render(
        page=page, version=__version__, refresh_seconds=refresh_seconds, states=STATES
    )


def render_overview(view: Overview, *, refresh_seconds: int = 30) -> str:
    """The overview as HTML (autoescaped)."""
    template = environment.get_template("overview.html")
    return template.render(
        view=view,
        version=__version__,
        refresh_seconds=refresh_seconds,
        states=STATES,
        quote=urllib.parse.quote,
    )


async def render_page(
    source: StatusPageSource, query: Query = Query(), *, refresh_seconds: int = 30
) -> str:
    """What the server's `/` answers."""
    return render_overview(await overview(source, query), refresh_seconds=refresh_seconds)


async def render_release(
    source: StatusPageSource, namespace: str, name: str, *, refresh_seconds: int = 30
) -> tuple[int, str]:
    """What the server's `/releases/<namespace>/<name>` answers, with its HTTP status."""
    page = await detail(source, namespace, name)
    status = 404 if not page.releases and page.error.startswith("no HelmRelease") else 200
    return status, render(page, refresh_seconds=refresh_seconds)

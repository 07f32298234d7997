"""rudder.observe.statuspage: what each HelmRelease shows, and that every user-written text
is escaped."""

from __future__ import annotations

import datetime
import html
import re
from typing import Any

import markupsafe

from rudder.observe import statuspage

NOW = datetime.datetime(2025, 3, 1, 12, 0, 0, tzinfo=datetime.UTC)
EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)>'
DIGEST = "sha256:" + "ab" * 32


def helmrelease(
    name: str,
    *,
    namespace: str = "apps",
    conditions: list[dict[str, Any]] | None = None,
    status: dict[str, Any] | None = None,
    spec: dict[str, Any] | None = None,
    generation: int = 1,
) -> dict[str, Any]:
    return {
        "apiVersion": "rudder.dev/v1alpha1",
        "kind": "HelmRelease",
        "metadata": {"name": name, "namespace": namespace, "generation": generation},
        "spec": spec or {"chart": {"ref": "oci://r/c@" + DIGEST}},
        "status": {
            "observedGeneration": generation,
            "conditions": conditions or [],
            **(status or {}),
        },
    }


def event(
    reason: str, message: str, when: str, type_: str = "Normal", count: int = 1
) -> dict[str, Any]:
    return {
        "reason": reason,
        "message": message,
        "type": type_,
        "lastTimestamp": when,
        "count": count,
    }


class FakeSource:
    def __init__(
        self, releases: list[dict[str, Any]], events: dict[tuple[str, str], list[dict[str, Any]]]
    ):
        self.releases = releases
        self.event_map = events
        self.event_calls: list[tuple[str, str]] = []

    async def helmreleases(self) -> list[dict[str, Any]]:
        return self.releases

    async def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        self.event_calls.append((namespace, name))
        if name == "broken-events":
            raise RuntimeError("events forbidden")
        return self.event_map.get((namespace, name), [])


READY = helmrelease(
    "podinfo",
    conditions=[
        {
            "type": "Ready",
            "status": "True",
            "reason": "ReconciliationSucceeded",
            "message": "Release reconciled: revision 3 deployed",
        },
        {"type": "Released", "status": "True", "reason": "UpgradeSucceeded"},
    ],
    status={
        "chart": {"name": "podinfo", "version": "6.7.0", "digest": DIGEST},
        "release": {"name": "podinfo", "namespace": "apps", "revision": 3, "status": "deployed"},
    },
)
CONFLICTED = helmrelease(
    "web",
    namespace="shop",
    conditions=[
        {
            "type": "Ready",
            "status": "False",
            "reason": "Conflict",
            "message": "2 fields are owned by other managers",
        },
        {
            "type": "Stalled",
            "status": "True",
            "reason": "Conflict",
            "message": "2 fields are owned by other managers",
        },
    ],
    status={
        "chart": {"nameVersion": "web:1.2.3", "shortDigest": "sha256:0123456789ab"},
        "release": {"revision": 1},
        "conflicts": [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "namespace": "shop",
                "name": "web",
                "field": ".spec.replicas",
                "manager": "kubectl",
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "namespace": "shop",
                "name": "web",
                "field": ".spec.ports",
                "manager": "helm",
            },
        ],
    },
)
PROGRESSING = helmrelease(
    "db",
    namespace="data",
    generation=4,
    conditions=[
        {
            "type": "Ready",
            "status": "Unknown",
            "reason": "Progressing",
            "message": "waiting for 1 object",
        },
        {"type": "Reconciling", "status": "True", "reason": "Progressing"},
    ],
    status={
        "observedGeneration": 3,
        "resources": {
            "counts": {"Current": 3, "InProgress": 1},
            "notReady": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "StatefulSet",
                    "namespace": "data",
                    "name": "db",
                    "status": "InProgress",
                    "message": "Ready: 1/3",
                }
            ],
        },
    },
)


async def details(source: FakeSource, **kwargs: Any) -> dict[str, statuspage.ReleaseView]:
    views = {}
    for hr in source.releases:
        meta = hr["metadata"]
        page = await statuspage.detail(source, meta["namespace"], meta["name"], now=NOW, **kwargs)
        views[meta["name"]] = page.releases[0]
    return views


async def test_a_release_page_shows_state_revision_chart_digest_conflicts_and_not_ready() -> None:
    source = FakeSource([READY, CONFLICTED, PROGRESSING], {})
    by_name = await details(source)
    ready = by_name["podinfo"]
    assert (ready.state, ready.ready, ready.revision) == ("ready", "True", "3")
    assert ready.chart == "podinfo:6.7.0"
    assert ready.digest == "sha256:abababababab"
    assert ready.message == "Release reconciled: revision 3 deployed"
    assert [(c.type, c.status) for c in ready.conditions] == [
        ("Ready", "True"),
        ("Released", "True"),
    ]

    web = by_name["web"]
    assert (web.state, web.ready, web.chart, web.digest) == (
        "failed",
        "False",
        "web:1.2.3",
        "sha256:0123456789ab",
    )
    assert [(c.kind, c.name, c.detail, c.note) for c in web.conflicts] == [
        ("Deployment", "web", ".spec.replicas", "kubectl"),
        ("Service", "web", ".spec.ports", "helm"),
    ]
    assert web.notes == ()  # the Stalled message equals the Ready message: said once

    db = by_name["db"]
    assert (db.state, db.ready) == ("progressing", "Unknown")
    assert [(o.kind, o.detail, o.note) for o in db.not_ready] == [
        ("StatefulSet", "InProgress", "Ready: 1/3")
    ]
    assert db.notes == ("generation 4 not reconciled yet (last: 3)",)


async def test_the_overview_puts_what_needs_a_look_first_and_reads_no_events() -> None:
    source = FakeSource([READY, CONFLICTED, PROGRESSING], {})
    view = await statuspage.overview(source, now=NOW)
    assert [(r.state, r.namespace, r.name) for r in view.rows] == [
        ("failed", "shop", "web"),
        ("progressing", "data", "db"),
        ("ready", "apps", "podinfo"),
    ]
    assert view.counts == {"ready": 1, "progressing": 1, "failed": 1, "suspended": 0, "unknown": 0}
    assert view.rows[2].revision == "3"
    assert source.event_calls == []


async def test_events_newest_first_limited_and_failures_tolerated() -> None:
    events = [
        event("InstallSucceeded", "installed revision 1", "2025-03-01T10:00:00Z"),
        event("UpgradeFailed", "timed out", "2025-03-01T11:58:00Z", type_="Warning", count=3),
        event("UpgradeSucceeded", "upgraded to revision 3", "2025-03-01T11:59:30Z"),
        {
            "reason": "Micro",
            "message": "eventTime only",
            "eventTime": "2025-03-01T11:59:00.123456Z",
        },
        event("Old1", "", "2025-02-01T00:00:00Z"),
        event("Old2", "", "2025-01-01T00:00:00Z"),
    ]
    broken = helmrelease("broken-events")
    source = FakeSource([READY, broken], {("apps", "podinfo"): events})
    views = await details(source, max_events=4)
    shown = views["podinfo"].events
    assert [e.reason for e in shown] == [
        "UpgradeSucceeded",
        "Micro",
        "UpgradeFailed",
        "InstallSucceeded",
    ]
    assert [e.age for e in shown] == ["30s", "59s", "2m", "2h"]
    assert shown[2].count == 3
    assert shown[2].type == "Warning"
    assert views["broken-events"].events == ()
    assert sorted(source.event_calls) == [("apps", "broken-events"), ("apps", "podinfo")]


async def test_listing_failure_is_shown_not_raised() -> None:
    class Failing(FakeSource):
        async def helmreleases(self) -> list[dict[str, Any]]:
            raise RuntimeError("helmreleases.rudder.dev is forbidden: <b>no</b>")

    for text in (
        await statuspage.render_page(Failing([], {})),
        statuspage.render(await statuspage.detail(Failing([], {}), "a", "b", now=NOW)),
    ):
        assert "Could not list HelmReleases" in text
        assert "&lt;b&gt;no&lt;/b&gt;" in text
        assert "<b>no</b>" not in text


async def test_empty_page() -> None:
    text = await statuspage.render_page(FakeSource([], {}))
    assert "No HelmReleases." in text


def many(n: int) -> list[dict[str, Any]]:
    """n HelmReleases over 50 namespaces, every 7th failing, every 11th progressing."""
    made = []
    for i in range(n):
        if i % 7 == 0:
            conditions = [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "UpgradeFailed",
                    "message": f"release {i}: timed out",
                },
                {"type": "Stalled", "status": "True", "reason": "UpgradeFailed"},
            ]
        elif i % 11 == 0:
            conditions = [
                {"type": "Ready", "status": "Unknown", "reason": "Progressing"},
                {"type": "Reconciling", "status": "True", "reason": "Progressing"},
            ]
        else:
            conditions = [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "UpgradeSucceeded",
                    "message": f"Upgraded app-{i:05d} revision 3 (app:1.0.0)",
                }
            ]
        made.append(helmrelease(
            f"app-{i:05d}", namespace=f"team-{i % 50:02d}", conditions=conditions,
            status={"chart": {"nameVersion": "app:1.0.0", "digest": DIGEST},
                    "release": {"revision": 3}},
        ))  # fmt: skip
    return made


async def test_ten_thousand_releases_make_a_small_page() -> None:
    """The time is measured by e2e/bench/bench_status_page.py (times are not stable)."""
    source = FakeSource(many(10_000), {})
    text = await statuspage.render_page(source)
    assert len(text.encode()) < 500_000, len(text.encode())
    assert source.event_calls == []
    assert text.count("<tr>") == statuspage.PER_PAGE + 1  # the header row
    assert "page 1 of 100" in text
    first_row = text.split("<tr>")[2]
    assert "UpgradeFailed" in first_row  # not-Ready first


async def test_filters_and_pages() -> None:
    source = FakeSource(many(1_000), {})
    query = statuspage.Query.parse({"namespace": "team-07", "state": "failed"})
    view = await statuspage.overview(source, query, now=NOW)
    assert view.matched == len([i for i in range(1000) if i % 50 == 7 and i % 7 == 0])
    assert {(r.namespace, r.state) for r in view.rows} == {("team-07", "failed")}

    text = await statuspage.overview(source, statuspage.Query.parse({"q": "APP-00042"}), now=NOW)
    assert [r.name for r in text.rows] == ["app-00042"]

    not_ready = statuspage.Query.parse({"state": "not-ready", "page": "2", "per_page": "50"})
    view = await statuspage.overview(source, not_ready, now=NOW)
    assert view.query.page == 2
    assert len(view.rows) == 50
    assert all(r.state != "ready" for r in view.rows)
    assert view.query.link(page=3) == "?state=not-ready&page=3&per_page=50"
    beyond = await statuspage.overview(source, statuspage.Query.parse({"page": "999"}), now=NOW)
    assert beyond.query.page == beyond.pages == 10
    assert statuspage.Query.parse({"page": "x", "state": "<b>"}) == statuspage.Query()


def test_state_of_suspended_and_unknown() -> None:
    assert (
        statuspage.state_of(
            helmrelease(
                "a", spec={"suspend": True}, conditions=[{"type": "Ready", "status": "True"}]
            )
        )
        == "suspended"
    )
    assert statuspage.state_of(helmrelease("a")) == "unknown"
    assert statuspage.state_of({}) == "unknown"
    assert (
        statuspage.state_of(helmrelease("a", conditions=[{"type": "Ready", "status": "False"}]))
        == "failed"
    )


def test_long_messages_and_lists_are_capped() -> None:
    many = [
        {
            "kind": "ConfigMap",
            "namespace": "x",
            "name": f"cm-{i}",
            "status": "InProgress",
            "message": "m",
        }
        for i in range(statuspage.MAX_ITEMS + 5)
    ]
    hr = helmrelease(
        "big",
        conditions=[{"type": "Ready", "status": "False", "message": "x" * 50_000}],
        status={"resources": {"notReady": many}},
    )
    view = statuspage.view_of(hr, now=NOW)
    assert len(view.message) == statuspage.MAX_TEXT
    assert len(view.not_ready) == statuspage.MAX_ITEMS
    assert view.not_ready_more == 5
    text = statuspage.render(statuspage.Page(releases=(view,), generated="now"))
    assert f"Not ready ({statuspage.MAX_ITEMS + 5})" in text
    assert "… and 5 more" in text


async def test_html_in_names_messages_and_events_is_escaped() -> None:
    hostile = helmrelease(
        EVIL,
        namespace="ns",
        conditions=[
            {"type": "Ready", "status": "False", "reason": "Failed", "message": "oops " + EVIL}
        ],
        status={
            "chart": {"name": EVIL, "version": '1"2', "digest": DIGEST},
            "conflicts": [
                {"kind": EVIL, "namespace": "ns", "name": EVIL, "field": EVIL, "manager": EVIL}
            ],
            "resources": {
                "notReady": [{"kind": "Pod", "name": EVIL, "status": EVIL, "message": EVIL}]
            },
        },
    )
    events = {
        ("ns", EVIL): [event(EVIL, EVIL, "2025-03-01T11:00:00Z", type_='Warning" onmouseover="x')]
    }
    source = FakeSource([hostile], events)
    overview = await statuspage.render_page(source)
    assert "<script" not in overview.lower()
    assert str(markupsafe.escape(EVIL)) in overview
    text = statuspage.render(await statuspage.detail(source, "ns", EVIL, now=NOW))

    # No markup from the data survives: no <script>, no <img>, no injected attribute.
    assert "<script" not in text.lower()
    assert "<img" not in text.lower()
    assert 'onmouseover="x"' not in text
    escaped = str(markupsafe.escape(EVIL))
    # Name, message, chart, conflict, not-ready object, event reason + message: all escaped.
    assert text.count(escaped) >= 8
    # The escaped text reads back as exactly the original.
    assert EVIL in html.unescape(text)
    # The only tags in the page are the template's own.
    tags = set(re.findall(r"<\s*([a-zA-Z][a-zA-Z0-9]*)", text))
    assert tags <= {"html", "head", "meta", "title", "style", "body", "header", "h1", "span",
                    "main", "div", "section", "p", "h3", "ul", "li", "code", "b", "table",
                    "tr", "td", "th", "a"}  # fmt: skip


def test_stalled_note_only_when_it_says_something_new() -> None:
    def notes(stalled_message: str) -> tuple[str, ...]:
        hr = helmrelease(
            "a",
            conditions=[
                {"type": "Ready", "status": "False", "message": "upgrade failed"},
                {"type": "Stalled", "status": "True", "message": stalled_message},
            ],
        )
        return statuspage.view_of(hr, now=NOW).notes

    assert notes("") == ()
    assert notes("upgrade failed") == ()
    assert notes("retries exhausted (3 of 3)") == ("stalled: retries exhausted (3 of 3)",)

"""What status shows of the chart, the release and its history (never values)."""

from __future__ import annotations

from collections.abc import Sequence

from rudder.chart.repo_index import display_url
from rudder.chart.source import LoadedChart
from rudder.observe.statuspage import short_digest
from rudder.reconcile.identity import Identity
from rudder.reconcile.status import StatusDraft
from rudder.release.history import latest
from rudder.release.store import Record


def history_entry(record: Record) -> dict[str, object]:
    summary = record.summary
    entry: dict[str, object] = {
        "revision": record.version,
        "status": record.status,
        "chartDigest": record.chart_digest or "",
        "valuesDigest": record.values_digest or "",
        "chartVersion": summary.chart_version,
    }
    if summary.first_deployed:
        entry["firstDeployed"] = summary.first_deployed
    if summary.last_deployed:
        entry["lastDeployed"] = summary.last_deployed
    return entry


def report_chart(draft: StatusDraft, source: dict[str, str], chart: LoadedChart) -> None:
    """`source`: where the chart came from (ref, or repository and url)."""
    meta = chart.metadata
    draft.set(
        "chart",
        {
            **source,
            **({"url": display_url(chart.url)} if chart.url else {}),
            "digest": chart.digest,
            "name": meta.name,
            "version": meta.version,
            "appVersion": meta.app_version,
            "nameVersion": f"{meta.name}:{meta.version}",
            "shortDigest": short_digest(chart.digest),
        },
    )


def report_release(
    draft: StatusDraft, identity: Identity, records: Sequence[Record], max_history: int
) -> None:
    """status.release (with the identity deletion will use) and status.history."""
    current = latest(records)
    if current is None:
        draft.set("release", None)
        draft.set("history", None)
        return
    summary = current.summary
    release: dict[str, object] = {
        **identity.as_status(),
        "revision": current.version,
        "status": current.status,
    }
    if summary.last_deployed:
        release["lastDeployed"] = summary.last_deployed
    draft.set("release", release)
    newest_first = sorted(records, key=lambda r: r.version, reverse=True)
    draft.set("history", [history_entry(r) for r in newest_first[: max(max_history, 1)]])

"""The preview page of one HelmRelease (`/releases/<namespace>/<name>/preview`): what its
next install or upgrade would add, change and remove, object by object, as unified diffs.

The operator computes the preview on demand (render and server-side dry-runs as the
release's identity; nothing is written, nothing stored) and hands this module plain text:
Secret data is already masked and values from Secrets redacted. Autoescaped like the other
pages; one preview is computed at a time.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Final, Protocol

from rudder import __version__
from rudder.observe.statuspage import STATES, environment

MAX_LINES: Final = 400  # diff lines shown per object; the rest is counted


@dataclass(frozen=True)
class DiffView:
    title: str  # "Deployment app/web"
    change: str  # added | changed | removed
    lines: tuple[tuple[str, str], ...]  # (css class: add | del | hunk | ctx, text)
    more: int = 0  # lines left out
    notes: tuple[str, ...] = ()  # conflicts and refusals


@dataclass(frozen=True)
class PreviewView:
    namespace: str
    name: str
    message: str = ""  # no preview: why (in sync, blocked...) or what failed
    action: str = ""
    revision: int = 0
    digest: str = ""
    summary: str = ""
    objects: tuple[DiffView, ...] = ()
    hooks: tuple[str, ...] = ()
    unchanged: int = 0


class PreviewSource(Protocol):
    async def preview(self, namespace: str, name: str) -> PreviewView | None:
        """None when there is no such HelmRelease."""
        ...


def diff_lines(text: str) -> tuple[tuple[tuple[str, str], ...], int]:
    lines = []
    for line in text.splitlines():
        if line.startswith(("+++", "---")):
            css = "file"
        elif line.startswith("@@"):
            css = "hunk"
        elif line.startswith("+"):
            css = "add"
        elif line.startswith("-"):
            css = "del"
        else:
            css = "ctx"
        lines.append((css, line))
    return tuple(lines[:MAX_LINES]), max(0, len(lines) - MAX_LINES)


def render_preview(view: PreviewView | None, namespace: str, name: str) -> tuple[int, str]:
    """The page's HTML and HTTP status."""
    generated = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    template = environment.get_template("preview.html")
    html = template.render(
        view=view or PreviewView(namespace, name, message=f"no HelmRelease {namespace}/{name}"),
        generated=generated,
        version=__version__,
        refresh_seconds=0,  # computing one is not free: recomputed when asked for
        states=STATES,
    )
    return (404 if view is None else 200), html

"""A preview as data: per object what the next action changes, its text and its digest (pure).

An object's change is measured on the fields rudder's field manager owns now or will own
after the action (the union of its managedFields entries in the live object and in the
server-side dry-run answer): defaulting, admission mutation and other managers' fields make
no noise, and a field the chart stops setting shows as removed. Secret data is replaced by
markers that say only whether a value changed; every text also goes through the
HelmRelease's redaction of values that came from Secrets.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from rudder.kube.client import JSON
from rudder.kube.ssa import ObjectRef, merge_field_sets
from rudder.observe.preview_page import DiffView, PreviewView, diff_lines

ADDED, CHANGED, REMOVED, UNCHANGED = "added", "changed", "removed", "unchanged"
REPLACED = "replaced"  # deleted and re-created (forceReplace): its update is refused
SECRET_KEYS = ("data", "stringData")
HIDDEN = "(secret value)"
HIDDEN_CHANGED = "(secret value, changed)"


@dataclass(frozen=True)
class ObjectChange:
    ref: ObjectRef
    change: str  # added | changed | removed | replaced | unchanged
    # Live and the dry-run answer, on rudder's fields (None: absent / deleted). Secret data
    # is in here (the digest must see it change); only `unified` shows them, masked.
    before: JSON | None = field(default=None, repr=False)
    after: JSON | None = field(default=None, repr=False)
    conflicts: tuple[str, ...] = ()  # "<field> owned by <manager>"
    error: str = ""  # the dry-run's refusal, other than a conflict

    @property
    def identity(self) -> str:
        return f"{self.ref.api_version} {self.ref}"


@dataclass(frozen=True)
class Preview:
    """The next install or upgrade of a release, computed without writing anything."""

    action: str  # install | upgrade
    revision: int  # the revision the action would write
    chart_digest: str
    values_digest: str
    objects: tuple[ObjectChange, ...]
    hooks: tuple[str, ...] = ()  # "Kind/name (events)" of the hooks the action runs
    forced: bool = False  # conflicts would be taken over (forceConflicts)
    generation: int = 0  # of the HelmRelease: how the action runs (timeouts, waits...)
    # Scrubs values that came from Secrets out of the diff texts.
    redact: Callable[[str], str] = field(default=str, compare=False, repr=False)
    digest: str = field(default="", init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "digest", preview_digest(self))

    def count(self, change: str) -> int:
        return sum(1 for item in self.objects if item.change == change)

    @property
    def conflicting(self) -> int:
        return sum(1 for item in self.objects if item.conflicts)

    @property
    def refused(self) -> list[ObjectChange]:
        return [item for item in self.objects if item.error]

    @property
    def differs(self) -> bool:
        return any(item.change != UNCHANGED for item in self.objects) or bool(self.hooks)

    def summary(self) -> str:
        parts = [
            f"{self.count(ADDED)} added",
            f"{self.count(CHANGED)} changed",
            f"{self.count(REMOVED)} removed",
        ]
        if self.count(REPLACED):
            parts.append(f"{self.count(REPLACED)} replaced")
        if self.conflicting:
            parts.append(f"{self.conflicting} conflicting")
        if self.refused:
            parts.append(f"{len(self.refused)} refused by the dry-run")
        if self.hooks:
            parts.append(f"{len(self.hooks)} hooks")
        return ", ".join(parts)

    def as_status(self, computed_at: str) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "action": self.action,
            "revision": self.revision,
            "added": self.count(ADDED),
            "changed": self.count(CHANGED),
            "removed": self.count(REMOVED),
            "replaced": self.count(REPLACED),
            "conflicting": self.conflicting,
            "hooks": len(self.hooks),
            "chartDigest": self.chart_digest,
            "valuesDigest": self.values_digest,
            "computedAt": computed_at,
        }

    def diffs(self) -> list[tuple[ObjectChange, str]]:
        """Every object the action touches, with its unified diff (masked, redacted)."""
        return [
            (item, unified(item, self.redact))
            for item in self.objects
            if item.change != UNCHANGED or item.conflicts or item.error
        ]

    def view(self, namespace: str, name: str) -> PreviewView:
        """The preview page's view of this preview."""
        objects = []
        for item, text in self.diffs():
            lines, more = diff_lines(text)
            notes = [f"conflict: {self.redact(c)}" for c in item.conflicts]
            if item.error:
                notes.append(f"the dry-run refused it: {self.redact(item.error)}")
            title = f"{item.ref.kind} {item.ref.namespace + '/' if item.ref.namespace else ''}"
            objects.append(DiffView(title + item.ref.name, item.change, lines, more, tuple(notes)))
        return PreviewView(
            namespace,
            name,
            action=self.action,
            revision=self.revision,
            digest=self.digest,
            summary=self.summary(),
            objects=tuple(objects),
            hooks=self.hooks,
            unchanged=self.count(UNCHANGED),
        )


@dataclass(frozen=True)
class NoPreview:
    """Why there is no install or upgrade to preview (in sync, blocked, suspended...)."""

    action: str  # what the reconcile would do instead
    message: str

    def view(self, namespace: str, name: str) -> PreviewView:
        message = f"nothing to preview ({self.action}): {self.message}"
        return PreviewView(namespace, name, message=message)


def preview_digest(preview: Preview) -> str:
    """Changes whenever the action would do something else: other inputs (chart, values, the
    spec's generation), another revision, another live state of the objects it touches (on
    rudder's fields). The rendered side is left out: it follows from the inputs, and a chart
    that renders random values (randAlphaNum, genCA) would otherwise never keep a digest
    long enough to be approved."""
    body = {
        "action": preview.action,
        "revision": preview.revision,
        "generation": preview.generation,
        "chart": preview.chart_digest,
        "values": preview.values_digest,
        "hooks": list(preview.hooks),
        "forced": preview.forced,
        "objects": [
            [item.identity, item.change, item.before, item.conflicts, item.error]
            for item in preview.objects
        ],
    }
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


# -- rudder's fields -------------------------------------------------------------------------


def owned_fields(obj: JSON | None, manager: str, operation: str | None = "Apply") -> JSON:
    """The fieldsV1 set `manager` owns on `obj` (through `operation`; None: any)."""
    fields: JSON = {}
    for entry in ((obj or {}).get("metadata") or {}).get("managedFields") or []:
        if entry.get("manager") == manager and operation in (None, entry.get("operation")):
            fields = merge_field_sets(fields, entry.get("fieldsV1") or {})
    return fields


def project(value: Any, fields: JSON) -> Any:
    """The part of `value` a fieldsV1 set names; a leaf of the set takes the whole value."""
    members = {k: v for k, v in fields.items() if k != "."}
    if not members:
        return value
    if isinstance(value, dict):
        out = {}
        for key, sub in members.items():
            if key.startswith("f:") and key[2:] in value:
                out[key[2:]] = project(value[key[2:]], sub)
        return out
    if isinstance(value, list):
        return [project(item, sub) for item, sub in _list_members(value, members)]
    return value


def _list_members(items: list[Any], members: JSON) -> list[tuple[Any, JSON]]:
    """Items of a list the set names (by key, value or index), in the list's order."""
    chosen: dict[int, JSON] = {}
    for key, sub in members.items():
        kind, _, raw = key.partition(":")
        try:
            wanted = json.loads(raw)
        except ValueError:
            continue
        for index, item in enumerate(items):
            if (
                (kind == "k" and isinstance(item, dict) and _matches(item, wanted))
                or (kind == "v" and item == wanted)
                or (kind == "i" and index == wanted)
            ):
                chosen[index] = sub
                break
    return [(items[index], chosen[index]) for index in sorted(chosen)]


def _matches(item: JSON, key: Any) -> bool:
    return isinstance(key, dict) and all(item.get(name) == value for name, value in key.items())


def on_rudder_fields(
    live: JSON | None, answer: JSON | None, manager: str, handed_over: Sequence[str] = ()
) -> tuple[Any, Any]:
    """(before, after) on the union of what rudder owns in each — plus, after a revision
    written outside rudder, what the managers that hand their fields to rudder own (the
    action takes those first, so a field only they set goes away). Nothing owned: {}."""
    fields = merge_field_sets(owned_fields(live, manager), owned_fields(answer, manager))
    for other in handed_over:
        fields = merge_field_sets(fields, owned_fields(live, other, operation=None))
    if not fields:
        return ({} if live is not None else None), ({} if answer is not None else None)
    if "f:stringData" in fields:
        # The API server stores a Secret's stringData in data: that is where it changes.
        fields = merge_field_sets(fields, {"f:data": fields["f:stringData"]})
    before = project(live, fields) if live is not None else None
    after = project(answer, fields) if answer is not None else None
    return before, after


def hide_secret_data(
    ref: ObjectRef, before: JSON | None, after: JSON | None
) -> tuple[JSON | None, JSON | None]:
    """A Secret's values replaced by markers that say only whether each one changed."""
    if ref.kind != "Secret" or ref.api_version != "v1":
        return before, after

    def masked(obj: JSON | None, changed: Callable[[str, str, Any], bool]) -> JSON | None:
        if obj is None:
            return None
        out = dict(obj)
        for key in SECRET_KEYS:
            if isinstance(obj.get(key), dict):
                out[key] = {
                    name: HIDDEN_CHANGED if changed(key, name, value) else HIDDEN
                    for name, value in obj[key].items()
                }
        return out

    def differs(key: str, name: str, value: Any) -> bool:
        return before is not None and ((before.get(key) or {}).get(name) != value)

    return masked(before, lambda *_: False), masked(after, differs)


def unified(item: ObjectChange, redact: Callable[[str], str] = str, context: int = 3) -> str:
    """A unified diff of one object, live -> next (empty when unchanged)."""
    if item.change == UNCHANGED:
        return ""
    name = f"{item.ref.kind}/{item.ref.namespace + '/' if item.ref.namespace else ''}"
    name += item.ref.name
    shown_before, shown_after = hide_secret_data(item.ref, item.before, item.after)
    # Values are redacted one by one before dumping: the dump may fold, wrap or escape a
    # value (a PEM key, a long or non-ASCII string) so that the text no longer contains it.
    before, after = _yaml(_redacted(shown_before, redact)), _yaml(_redacted(shown_after, redact))
    lines = difflib.unified_diff(
        before.splitlines(keepends=True),
        after.splitlines(keepends=True),
        fromfile=f"live/{name}" if item.before is not None else "/dev/null",
        tofile=f"next/{name}" if item.after is not None else "/dev/null",
        n=context,
    )
    return redact("".join(lines))


def _redacted(value: Any, redact: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _redacted(item, redact) for key, item in value.items()}
    if isinstance(value, list):
        return [_redacted(item, redact) for item in value]
    return value


def _yaml(obj: JSON | None) -> str:
    if obj is None:
        return ""
    return yaml.safe_dump(
        obj, sort_keys=True, default_flow_style=False, width=10**9, allow_unicode=True
    )

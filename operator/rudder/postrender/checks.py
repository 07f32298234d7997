"""What post-rendered output must be before anything is applied, and the origin labels (pure).

Every object needs apiVersion, kind and metadata.name. A post-renderer may not add objects
of a kind or namespace the operator denies (--post-renderer-deny-kinds,
--post-renderer-deny-namespaces): a chart's own objects are the chart's business, an
object a plugin makes up is the plugin's. Post-rendered objects carry the labels
rudder.dev/name and rudder.dev/namespace of their HelmRelease, as Flux labels its own.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from rudder.postrender.errors import POST_RENDER_FAILED, PostRenderError

NAME_LABEL: Final = "rudder.dev/name"
NAMESPACE_LABEL: Final = "rudder.dev/namespace"

JSONObject = dict[str, Any]


@dataclass(frozen=True)
class OutputPolicy:
    deny_kinds: frozenset[str] = field(default_factory=frozenset)  # Kind or group/Kind
    deny_namespaces: frozenset[str] = field(default_factory=frozenset)

    def denies(self, obj: JSONObject) -> str | None:
        """Why the operator refuses `obj` as an addition, or None."""
        group, kind = _group(obj), str(obj.get("kind"))
        if kind in self.deny_kinds or f"{group}/{kind}" in self.deny_kinds:
            return f"kind {kind} is denied (--post-renderer-deny-kinds)"
        namespace = (obj.get("metadata") or {}).get("namespace")
        if namespace in self.deny_namespaces:
            return f"namespace {namespace} is denied (--post-renderer-deny-namespaces)"
        return None


def check_objects(objects: Sequence[JSONObject], where: str) -> None:
    for index, obj in enumerate(objects):
        metadata = obj.get("metadata")
        missing = [
            name
            for name, value in (
                ("apiVersion", obj.get("apiVersion")),
                ("kind", obj.get("kind")),
                ("metadata.name", metadata.get("name") if isinstance(metadata, dict) else None),
            )
            if not isinstance(value, str) or not value
        ]
        if missing:
            raise PostRenderError(
                POST_RENDER_FAILED,
                f"{where}: output document {index + 1} has no {', '.join(missing)}",
            )


def check_additions(
    before: Iterable[JSONObject], after: Iterable[JSONObject], policy: OutputPolicy, where: str
) -> None:
    known = {_identity(obj) for obj in before}
    for obj in after:
        if _identity(obj) in known:
            continue
        why = policy.denies(obj)
        if why is not None:
            raise PostRenderError(POST_RENDER_FAILED, f"{where}: added {_describe(obj)}, and {why}")


def with_origin(objects: Iterable[JSONObject], name: str, namespace: str) -> list[JSONObject]:
    labelled = []
    for obj in objects:
        obj = copy.deepcopy(obj)
        metadata = obj.setdefault("metadata", {})
        if not isinstance(metadata.get("labels"), dict):
            metadata["labels"] = {}
        metadata["labels"][NAME_LABEL] = name
        metadata["labels"][NAMESPACE_LABEL] = namespace
        labelled.append(obj)
    return labelled


def _group(obj: JSONObject) -> str:
    api_version = str(obj.get("apiVersion") or "")
    return api_version.rpartition("/")[0]


def _identity(obj: JSONObject) -> tuple[str, str, str, str]:
    metadata = obj.get("metadata") or {}
    return (
        _group(obj),
        str(obj.get("kind")),
        str(metadata.get("namespace") or ""),
        str(metadata.get("name")),
    )


def _describe(obj: JSONObject) -> str:
    group, kind, namespace, name = _identity(obj)
    kind = f"{kind}.{group}" if group else kind
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"

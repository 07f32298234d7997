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
from typing import Final

from rudder.postrender.errors import POST_RENDER_FAILED, PostRenderError
from rudder.postrender.stream import FILENAME_ANNOTATION, JSONObject
from rudder.release.manifest import HOOK_ANNOTATION, NOTES_SUFFIX

NAME_LABEL: Final = "rudder.dev/name"
NAMESPACE_LABEL: Final = "rudder.dev/namespace"


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
    """Each object has what applying and recording it needs, of the types it needs."""
    for index, obj in enumerate(objects):
        problem = _malformed(obj)
        if problem:
            raise PostRenderError(
                POST_RENDER_FAILED, f"{where}: output document {index + 1} {problem}"
            )


def _malformed(obj: JSONObject) -> str | None:
    metadata = obj.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    missing = [
        name
        for name, value in (
            ("apiVersion", obj.get("apiVersion")),
            ("kind", obj.get("kind")),
            ("metadata.name", metadata.get("name")),
        )
        if not isinstance(value, str) or not value
    ]
    if missing:
        return f"has no {', '.join(missing)}"
    if obj["kind"] == "List":
        return "is a List: post-renderers must return the objects themselves"
    if not isinstance(metadata.get("namespace", ""), str):
        return "has a metadata.namespace that is not a string"
    for part in ("labels", "annotations"):
        value = metadata.get(part, {})
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            return f"has metadata.{part} that is not a map of strings"
    source = metadata.get("annotations", {}).get(FILENAME_ANNOTATION, "")
    if source.endswith(NOTES_SUFFIX) or source.rsplit("/", 1)[-1].startswith("_"):
        return f"claims to come from {source}, which holds no objects"
    return None


def check_additions(
    before: Iterable[JSONObject], after: Iterable[JSONObject], policy: OutputPolicy, where: str
) -> None:
    """What a post-renderer added (or turned into or out of a hook) against its input."""
    given: dict[tuple[str, str, str], dict[str, str | None]] = {}
    for obj in before:
        group, kind, namespace, name = _identity(obj)
        given.setdefault((group, kind, name), {})[namespace] = _hook(obj)
    for obj in after:
        group, kind, namespace, name = _identity(obj)
        hook = _counterpart(given.get((group, kind, name), {}), namespace)
        if hook is _ADDED:
            why = policy.denies(obj)
            if why is None and _hook(obj) is not None:
                why = "post-renderers may not add Helm hooks"
            if why is not None:
                raise PostRenderError(
                    POST_RENDER_FAILED, f"{where}: added {_describe(obj)}, and {why}"
                )
        elif _hook(obj) != hook:
            raise PostRenderError(
                POST_RENDER_FAILED,
                f"{where}: changed the helm.sh/hook annotation of {_describe(obj)}; "
                "post-renderers may not make or unmake hooks",
            )


_ADDED: Final = object()  # no input object: the post-renderer made this one


def _counterpart(namespaces: dict[str, str | None], namespace: str) -> str | object | None:
    """The hook annotation of the input object this output object is, or _ADDED. A namespace
    written out where the chart left it to the release (or the reverse) is the same object."""
    if namespace in namespaces:
        return namespaces[namespace]
    if "" in namespaces:
        return namespaces[""]
    if not namespace and len(namespaces) == 1:
        return next(iter(namespaces.values()))
    return _ADDED


def _hook(obj: JSONObject) -> str | None:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(HOOK_ANNOTATION)
    return value if isinstance(value, str) else None


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

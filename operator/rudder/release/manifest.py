"""Rendered templates -> Helm's hooks, ordered manifests and stored `release.manifest`.

This follows Helm v4.2.3 (`pkg/release/v1/util` and `action.renderResources`) rule for
rule, so the manifest rudder stores is the string the Helm CLI would have stored:

- a document separator is `---` at the start of a line, wherever the line goes on: the
  rest (`---  # comment`, even `---apiVersion: v1`) starts the next document. Whitespace
  around a separator is dropped; the last document of a file keeps its trailing whitespace;
- files are visited in sorted path order; partials (`_*`), every `*NOTES.txt` and blank
  files are skipped; blank documents are dropped, comment-only documents are kept;
- a document annotated `helm.sh/hook` becomes a hook (one with an unknown event is dropped
  altogether, as Helm does); the others are ordered by kind (install or uninstall order,
  unknown kinds last and alphabetical), keeping file order among equals;
- `release.manifest` is `"---\\n# Source: <path>\\n<document>\\n"` per manifest, in order.

Documents are parsed with go-yaml v2's scalar rules (what Helm and Kubernetes parse with,
e.g. `y`/`on` are booleans, `1:20` and timestamps are strings, `1e3` is a number) so the
parsed object is the one Helm would send, and the head fields convert scalars to strings
the way sigs.k8s.io/yaml does (`helm.sh/hook-weight: 5` is `"5"`).
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

import yaml

from rudder.release.codec import Hook

HOOK_ANNOTATION = "helm.sh/hook"
HOOK_WEIGHT_ANNOTATION = "helm.sh/hook-weight"
HOOK_DELETE_ANNOTATION = "helm.sh/hook-delete-policy"
HOOK_OUTPUT_LOG_ANNOTATION = "helm.sh/hook-output-log-policy"
RESOURCE_POLICY_ANNOTATION = "helm.sh/resource-policy"
DEFAULT_HOOK_DELETE_POLICY = "before-hook-creation"

# Event names a hook annotation may list; Helm 2's test-success still means test.
HOOK_EVENTS: Mapping[str, str] = {
    **{
        event: event
        for event in (
            "pre-install",
            "post-install",
            "pre-delete",
            "post-delete",
            "pre-upgrade",
            "post-upgrade",
            "pre-rollback",
            "post-rollback",
            "test",
        )
    },
    "test-success": "test",
}

INSTALL_ORDER: tuple[str, ...] = (
    "PriorityClass",
    "Namespace",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodSecurityPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "SecretList",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleList",
    "ClusterRoleBinding",
    "ClusterRoleBindingList",
    "Role",
    "RoleList",
    "RoleBinding",
    "RoleBindingList",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
)

# Not simply INSTALL_ORDER reversed: webhooks go first, validating before mutating.
UNINSTALL_ORDER: tuple[str, ...] = (
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "APIService",
    "Ingress",
    "IngressClass",
    "Service",
    "CronJob",
    "Job",
    "StatefulSet",
    "HorizontalPodAutoscaler",
    "Deployment",
    "ReplicaSet",
    "ReplicationController",
    "Pod",
    "DaemonSet",
    "RoleBindingList",
    "RoleBinding",
    "RoleList",
    "Role",
    "ClusterRoleBindingList",
    "ClusterRoleBinding",
    "ClusterRoleList",
    "ClusterRole",
    "CustomResourceDefinition",
    "PersistentVolumeClaim",
    "PersistentVolume",
    "StorageClass",
    "ConfigMap",
    "SecretList",
    "Secret",
    "ServiceAccount",
    "PodDisruptionBudget",
    "PodSecurityPolicy",
    "LimitRange",
    "ResourceQuota",
    "NetworkPolicy",
    "Namespace",
    "PriorityClass",
)

NOTES_SUFFIX = "NOTES.txt"


class ManifestError(ValueError):
    """A rendered document Helm would refuse; the message names the file, never its text."""


@dataclass(frozen=True)
class Manifest:
    """One non-hook document of a release.

    `content` is the document's text as Helm stores it; `resource` the object parsed from
    it, or None for a document of comments only (kept in the release manifest, but it
    describes no object). The head fields are strings, "" where absent.
    """

    path: str
    content: str
    resource: dict[str, Any] | None
    api_version: str = ""
    kind: str = ""
    name: str = ""
    namespace: str = ""
    annotations: dict[str, str] = field(default_factory=dict)


# --- Go's whitespace and the separator ----------------------------------------------------

# unicode.IsSpace, which Go's strings.TrimSpace and TrimLeftFunc use.
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"  # noqa: E501

# Helm's `(?:^|\s*\n)---\s*`, where Go's \s is ASCII [\t\n\f\r ] and ^ the start of text.
_SEPARATOR = re.compile(r"(?:\A|[\t\n\f\r ]*\n)---[\t\n\f\r ]*")


def _is_blank(text: str) -> bool:
    return not text.strip(_GO_SPACE)


def split_manifests(text: str) -> list[str]:
    """Split a YAML stream into documents with Helm's separator rule, blank ones dropped."""
    documents = _SEPARATOR.split(text.lstrip(_GO_SPACE))
    return [doc.lstrip(_GO_SPACE) for doc in documents if not _is_blank(doc)]


# --- YAML as go-yaml v2 reads it ----------------------------------------------------------

_TAG_BOOL = "tag:rudder.dev,2025:go-bool"
_TAG_INT = "tag:rudder.dev,2025:go-int"
_TAG_FLOAT = "tag:rudder.dev,2025:go-float"
_TAG_NULL = "tag:yaml.org,2002:null"
_TAG_STR = "tag:yaml.org,2002:str"
_TAG_MERGE = "tag:yaml.org,2002:merge"

_TRUE = frozenset({"y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"})
_FALSE = frozenset({"n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"})
_NULL = frozenset({"", "~", "null", "Null", "NULL"})
_SPECIAL_FLOATS: Mapping[str, float] = {
    **dict.fromkeys((".nan", ".NaN", ".NAN"), math.nan),
    **dict.fromkeys((".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"), math.inf),
    **dict.fromkeys(("-.inf", "-.Inf", "-.INF"), -math.inf),
}
# strconv.ParseInt(s, 0, 64) syntax: sign, then a base prefix or a leading-zero octal.
_GO_INT = re.compile(r"([-+]?)(0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)")
_GO_UINT = re.compile(r"(0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)")
_YAML_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_DOT_FLOAT = re.compile(r"\.[0-9]+([eE][-+]?[0-9]+)?")


def _parse_go_int(text: str, pattern: re.Pattern[str], signed: bool) -> int | None:
    match = pattern.fullmatch(text)
    if match is None:
        return None
    sign, body = (match.group(1), match.group(2)) if signed else ("", match.group(1))
    prefix = body[:2].lower()
    base = {"0x": 16, "0o": 8, "0b": 2}.get(prefix)
    if base is not None:
        value = int(body[2:], base)
    elif len(body) > 1 and body[0] == "0":
        value = int(body[1:], 8)
    else:
        value = int(body)
    value = -value if sign == "-" else value
    if signed and -(2**63) <= value < 2**63:
        return value
    if not signed and value < 2**64:
        return value
    return None


def _go_float_value(text: str, pattern: re.Pattern[str]) -> float | None:
    if pattern.fullmatch(text) is None:
        return None
    value = float(text)
    # Go's ParseFloat refuses out-of-range values; the scalar then stays a string.
    return value if math.isfinite(value) else None


def _resolve_plain(value: str) -> tuple[str, Any]:
    """The tag and value go-yaml v2 gives a plain scalar (its `resolve`)."""
    if value == "<<":
        return _TAG_MERGE, value
    first = value[:1]
    if first and not (first in "+-.~0123456789" or first in "yYnNtTfFoO"):
        return _TAG_STR, value
    if value in _TRUE:
        return _TAG_BOOL, True
    if value in _FALSE:
        return _TAG_BOOL, False
    if value in _NULL:
        return _TAG_NULL, None
    if value in _SPECIAL_FLOATS:
        return _TAG_FLOAT, _SPECIAL_FLOATS[value]
    if first == ".":
        number = _go_float_value(value, _DOT_FLOAT)
        if number is not None:
            return _TAG_FLOAT, number
    elif first in "+-0123456789":
        plain = value.replace("_", "")
        integer = _parse_go_int(plain, _GO_INT, signed=True)
        if integer is None:
            integer = _parse_go_int(plain, _GO_UINT, signed=False)
        if integer is not None:
            return _TAG_INT, integer
        number = _go_float_value(plain, _YAML_FLOAT)
        if number is not None:
            return _TAG_FLOAT, number
    return _TAG_STR, value


# --- YAML values as sigs.k8s.io/yaml turns them into JSON ---------------------------------


def _float32_g(number: float) -> str:
    """strconv.FormatFloat(f, 'g', -1, 32): how sigs.k8s.io/yaml stringifies a float."""
    if math.isnan(number):
        return "NaN"
    try:
        single = struct.unpack("<f", struct.pack("<f", number))[0]
    except OverflowError:
        single = math.copysign(math.inf, number)
    if math.isinf(single):
        return "+Inf" if single > 0 else "-Inf"
    if single == 0:
        return "-0" if math.copysign(1.0, single) < 0 else "0"
    for precision in range(1, 10):
        candidate = f"{single:.{precision - 1}e}"
        if struct.unpack("<f", struct.pack("<f", float(candidate)))[0] == single:
            break
    mantissa, exponent_text = candidate.split("e")
    exponent = int(exponent_text)
    digits = mantissa.lstrip("-").replace(".", "").rstrip("0") or "0"
    sign = "-" if single < 0 else ""
    if exponent < -4 or exponent >= 6:
        fraction = "." + digits[1:] if len(digits) > 1 else ""
        exp_sign = "-" if exponent < 0 else "+"
        return f"{sign}{digits[0]}{fraction}e{exp_sign}{abs(exponent):02d}"
    decimals = max(len(digits) - exponent - 1, 0)
    return f"{sign}{abs(single):.{decimals}f}"


def _json_key(key: Any) -> str | None:
    """A map key as sigs.k8s.io/yaml writes it to JSON; None where it refuses the type."""
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int):
        return str(key)
    if isinstance(key, float):
        special = {"+Inf": ".inf", "-Inf": "-.inf", "NaN": ".nan"}
        text = _float32_g(key)
        return special.get(text, text)
    return None


_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _GoYamlLoader(_BaseLoader):  # type: ignore[valid-type,misc]
    """PyYAML's safe loader with go-yaml v2's resolution of plain scalars, and map keys
    turned into strings as sigs.k8s.io/yaml does (so `1:` and `true:` stay two keys)."""

    def resolve(self, kind: type[yaml.Node], value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is yaml.ScalarNode and implicit[0]:
            return _resolve_plain(value)[0]
        tag: str = super().resolve(kind, value, implicit)
        return tag

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[str, Any]:
        self.flatten_mapping(node)
        mapping: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=deep)
            text = _json_key(key)
            if text is None:
                raise yaml.constructor.ConstructorError(
                    None, None, "unsupported map key type", key_node.start_mark
                )
            mapping[text] = self.construct_object(value_node, deep=deep)
        return mapping


def _construct_resolved(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    return _resolve_plain(loader.construct_scalar(node))[1]  # type: ignore[arg-type]


for _tag in (_TAG_BOOL, _TAG_INT, _TAG_FLOAT):
    _GoYamlLoader.add_constructor(_tag, _construct_resolved)


def _shares_nodes(document: Any) -> bool:
    """Does a mapping or list occur twice in the loaded document (an alias to it)? Walks
    each container once, so it costs what the document costs unexpanded."""
    seen: set[int] = set()
    pending = [document]
    while pending:
        node = pending.pop()
        if isinstance(node, dict | list):
            if id(node) in seen:
                return True
            seen.add(id(node))
            pending.extend(node.values() if isinstance(node, dict) else node)
    return False


def _yaml_error(path: str, exc: yaml.YAMLError) -> ManifestError:
    # PyYAML's own message quotes the document; say what and where only.
    problem = getattr(exc, "problem", None) or type(exc).__name__
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return ManifestError(f"YAML parse error on {path}: {problem}{where}")


def _load_first_document(text: str, path: str) -> Any:
    """The first YAML document of `text` (go-yaml's Unmarshal reads only that one)."""
    loader = _GoYamlLoader(text)
    try:
        if not loader.check_node():
            return None
        return loader.construct_document(loader.get_node())
    except yaml.YAMLError as exc:
        raise _yaml_error(path, exc) from None
    finally:
        loader.dispose()


def _jsonable(value: Any, path: str) -> Any:
    """The value as Helm would send it: JSON types only, map keys as strings."""
    if isinstance(value, dict):
        # Keys are strings already: the loader converts them.
        return {k: _jsonable(v, path) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(item, path) for item in value]
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ManifestError(f"YAML parse error on {path}: NaN or infinity is not JSON")
        # Go writes an integral float64 as an integer ("8", not "8.0"), and the API
        # server reads it back as one.
        if value.is_integer() and abs(value) < 1e21:
            return int(value)
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, date):
        return value.isoformat()
    return value


def _as_go_string(value: Any, path: str, what: str) -> str:
    """A scalar decoded into a Go string field, the sigs.k8s.io/yaml way."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float32_g(value)
    if isinstance(value, date):
        return value.isoformat()
    raise ManifestError(f"YAML parse error on {path}: {what} must be a string")


@dataclass(frozen=True)
class _Head:
    api_version: str
    kind: str
    name: str
    namespace: str
    annotations: dict[str, str] | None


def _head(document: Any, path: str) -> _Head:
    """Helm's SimpleHead of a document; non-mappings are an error, as in Helm."""
    if document is None:
        return _Head("", "", "", "", None)
    if not isinstance(document, dict):
        raise ManifestError(f"YAML parse error on {path}: a manifest must be a mapping")
    metadata = document.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise ManifestError(f"YAML parse error on {path}: metadata must be a mapping")
    metadata = metadata or {}
    raw_annotations = metadata.get("annotations")
    annotations: dict[str, str] | None = None
    if raw_annotations is not None:
        if not isinstance(raw_annotations, dict):
            raise ManifestError(f"YAML parse error on {path}: annotations must be a mapping")
        annotations = {
            key: _as_go_string(value, path, "an annotation")
            for key, value in raw_annotations.items()
        }
    namespace = metadata.get("namespace")
    return _Head(
        api_version=_as_go_string(document.get("apiVersion"), path, "apiVersion"),
        kind=_as_go_string(document.get("kind"), path, "kind"),
        name=_as_go_string(metadata.get("name"), path, "metadata.name"),
        namespace=namespace if isinstance(namespace, str) else "",
        annotations=annotations,
    )


# --- sorting ------------------------------------------------------------------------------


def _go_atoi(text: str) -> int | None:
    if re.fullmatch(r"[+-]?[0-9]+", text, flags=re.ASCII) is None:
        return None
    value = int(text)
    return value if -(2**63) <= value < 2**63 else None


def _annotation_list(annotations: Mapping[str, str], key: str) -> list[str]:
    if key not in annotations:
        return []
    return [item.strip().lower() for item in annotations[key].split(",")]


def _as_hook(manifest: Manifest) -> Hook | None:
    annotations = manifest.annotations
    events: list[str] = []
    for item in _annotation_list(annotations, HOOK_ANNOTATION):
        event = HOOK_EVENTS.get(item)
        if event is None:
            return None  # Helm skips a hook naming an unknown event, resource and all.
        events.append(event)
    return Hook(
        name=manifest.name,
        kind=manifest.kind,
        path=manifest.path,
        manifest=manifest.content,
        events=events,
        weight=_go_atoi(annotations.get(HOOK_WEIGHT_ANNOTATION, "")) or 0,
        delete_policies=_annotation_list(annotations, HOOK_DELETE_ANNOTATION),
        output_log_policies=_annotation_list(annotations, HOOK_OUTPUT_LOG_ANNOTATION),
    )


def _kind_rank(kind: str, ordering: Sequence[str]) -> tuple[int, str]:
    # Known kinds in list order, then unknown kinds alphabetically.
    try:
        return (ordering.index(kind), "")
    except ValueError:
        return (len(ordering), kind)


def reads_as_string(text: str) -> bool:
    """Whether go-yaml v2 reads `text`, written plain, back as that string (not `y` -> true,
    `08` -> 8, `~` -> null, ...): anything else must be quoted when written out."""
    return _resolve_plain(text)[0] == _TAG_STR


def parse_document(content: str, path: str, *, aliases: bool = True) -> Manifest:
    """One split document as a Manifest (its object and head). `aliases=False` refuses
    documents that use YAML aliases (untrusted output: a few bytes of aliases expand to
    billions of nodes)."""
    document = _load_first_document(content, path)
    if not aliases and _shares_nodes(document):
        raise ManifestError(f"YAML parse error on {path}: aliases (*name) are not accepted")
    head = _head(document, path)
    return Manifest(
        path=path,
        content=content,
        resource=_jsonable(document, path),
        api_version=head.api_version,
        kind=head.kind,
        name=head.name,
        namespace=head.namespace,
        annotations=dict(head.annotations or {}),
    )


def sort_manifests(
    rendered: Mapping[str, str], ordering: Sequence[str] = INSTALL_ORDER
) -> tuple[list[Hook], list[Manifest]]:
    """Helm's SortManifests over rendered templates (template path -> text).

    Returns the hooks and the other manifests, each sorted by kind with `ordering`.
    Raises ManifestError for a document Helm could not parse.
    """
    hooks: list[Hook] = []
    manifests: list[Manifest] = []
    for path in sorted(rendered):
        content = rendered[path]
        if path.endswith(NOTES_SUFFIX) or path.rsplit("/", 1)[-1].startswith("_"):
            continue
        if _is_blank(content):
            continue
        for document in split_manifests(content):
            manifest = parse_document(document, path)
            if HOOK_ANNOTATION not in manifest.annotations:
                manifests.append(manifest)
                continue
            hook = _as_hook(manifest)
            if hook is not None:
                hooks.append(hook)
    hooks.sort(key=lambda hook: _kind_rank(hook.kind, ordering))
    manifests.sort(key=lambda manifest: _kind_rank(manifest.kind, ordering))
    return hooks, manifests


def assemble_manifest(manifests: Iterable[Manifest]) -> str:
    """The `release.manifest` string Helm stores for these (sorted) manifests."""
    return "".join(f"---\n# Source: {m.path}\n{m.content}\n" for m in manifests)


def release_notes(rendered: Mapping[str, str], chart_name: str) -> str:
    """The release notes: the top-level chart's rendered NOTES.txt only (no subchart notes)."""
    return rendered.get(f"{chart_name}/templates/{NOTES_SUFFIX}", "")


def hook_resource(hook: Hook) -> dict[str, Any] | None:
    """The object a hook record describes (None for a comment-only document)."""
    return parse_document(hook.manifest, hook.path).resource


def hooks_for_event(hooks: Iterable[Hook], event: str) -> list[Hook]:
    """The hooks Helm runs for `event`, in its execution order: by weight, then name."""
    chosen = [hook for hook in hooks if event in hook.events]
    return sorted(chosen, key=lambda hook: (hook.weight, hook.name))


def with_default_delete_policy(hook: Hook) -> Hook:
    """The hook as Helm records it once run: no delete policy means before-hook-creation."""
    if hook.delete_policies:
        return hook
    return replace(hook, delete_policies=[DEFAULT_HOOK_DELETE_POLICY])


def _release_documents(release_manifest: str) -> dict[str, str]:
    # Helm re-splits a stored manifest into "manifest-<n>" entries, which it then visits
    # in string order: manifest-10 comes before manifest-2.
    return {f"manifest-{n}": doc for n, doc in enumerate(split_manifests(release_manifest))}


def _resource_policy(manifest: Manifest) -> str | None:
    policy = manifest.annotations.get(RESOURCE_POLICY_ANNOTATION)
    return None if policy is None else policy.strip().lower()


def uninstall_order(release_manifest: str) -> list[Manifest]:
    """The documents of a stored manifest that `helm uninstall` deletes, in its order.

    Documents with any `helm.sh/resource-policy` annotation are not deleted: `keep` ones
    are reported by `kept_on_uninstall`, other values are silently spared, as in Helm.
    """
    _, manifests = sort_manifests(_release_documents(release_manifest), UNINSTALL_ORDER)
    return [m for m in manifests if _resource_policy(m) is None]


def kept_on_uninstall(release_manifest: str) -> list[Manifest]:
    """The documents `helm uninstall` keeps for their `helm.sh/resource-policy: keep`."""
    _, manifests = sort_manifests(_release_documents(release_manifest), UNINSTALL_ORDER)
    return [m for m in manifests if _resource_policy(m) == "keep"]

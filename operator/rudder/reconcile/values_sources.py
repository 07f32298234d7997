"""Compose a release's values: `spec.valuesFrom` (ConfigMaps and Secrets) in order, then
`spec.values` on top, with Helm's merge rules. What a Secret holds never leaves this
module except inside the merged values: errors name the source, never its content."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from rudder.chart.values import merge_values, set_at_path, values_digest
from rudder.kube.client import KubeClient
from rudder.model import ValuesReference


class ValuesSourceError(Exception):
    """A values source is missing or unreadable; `field` names the spec entry."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


# Shorter Secret values are not masked: replacing every "1" or "true" in a message would
# garble it while hiding nothing worth hiding.
MIN_REDACTED_LENGTH = 4
REDACTED = "[redacted]"


@dataclass(frozen=True)
class ComposedValues:
    values: dict[str, Any]
    digest: str
    # Every string that came from a Secret, so messages quoting values can be scrubbed.
    secret_strings: frozenset[str] = frozenset()

    def redact(self, message: str) -> str:
        """`message` with every value that came from a Secret replaced by [redacted]."""
        for secret in sorted(self.secret_strings, key=len, reverse=True):
            message = message.replace(secret, REDACTED)
        return message


def scalar_strings(value: Any) -> set[str]:
    """The string forms of every scalar leaf of a values tree."""
    if isinstance(value, dict):
        return set().union(*(scalar_strings(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(scalar_strings(v) for v in value)) if value else set()
    if value is None or isinstance(value, bool):
        return set()
    return {str(value)}


async def read_source(kube: KubeClient, namespace: str, ref: ValuesReference) -> str | None:
    """The text under `ref.values_key`, or None when the object or key is absent."""
    plural = "configmaps" if ref.kind == "ConfigMap" else "secrets"
    obj = await kube.get_or_none(f"/api/v1/namespaces/{namespace}/{plural}/{ref.name}")
    if obj is None:
        return None
    if ref.kind == "ConfigMap":
        data = obj.get("data") or {}
        if ref.values_key in data:
            return str(data[ref.values_key])
        binary = obj.get("binaryData") or {}
        if ref.values_key in binary:
            return base64.b64decode(binary[ref.values_key]).decode()
        return None
    encoded = (obj.get("data") or {}).get(ref.values_key)
    return None if encoded is None else base64.b64decode(encoded).decode()


async def compose_values(
    kube: KubeClient,
    namespace: str,
    sources: Sequence[ValuesReference],
    inline: dict[str, Any],
) -> ComposedValues:
    merged: dict[str, Any] = {}
    secrets: set[str] = set()
    for index, ref in enumerate(sources):
        field = f"spec.valuesFrom[{index}]"
        text = await read_source(kube, namespace, ref)
        if text is None:
            if ref.optional:
                continue
            raise ValuesSourceError(
                field,
                f"{ref.kind} {namespace}/{ref.name} (key {ref.values_key!r}) named in {field} "
                "was not found",
            )
        if ref.kind == "Secret":
            secrets.add(text.strip())
        if ref.target_path:
            merged = set_at_path(merged, ref.target_path, text)
            continue
        try:
            layer = yaml.safe_load(text) or {}
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise ValuesSourceError(
                field,
                f"{ref.kind} {namespace}/{ref.name} key {ref.values_key!r} is not YAML{where}",
            ) from None  # the YAML error may quote the Secret's content
        if not isinstance(layer, dict):
            raise ValuesSourceError(
                field, f"{ref.kind} {namespace}/{ref.name} key {ref.values_key!r} is not a map"
            )
        if ref.kind == "Secret":
            secrets |= scalar_strings(layer)
        merged = merge_values(merged, layer)
    merged = merge_values(merged, inline)
    masked = frozenset(s for s in secrets if len(s) >= MIN_REDACTED_LENGTH)
    return ComposedValues(merged, values_digest(merged), masked)

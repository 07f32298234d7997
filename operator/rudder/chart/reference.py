"""`oci://host[:port]/path/name[:tag][@sha256:<hex>]` chart references (pure parsing).

The grammar is the distribution reference grammar (the one `docker pull` and Helm use),
restricted to what rudder accepts: an explicit registry host, and sha256 digests only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Final

from rudder.chart.digests import is_sha256_digest
from rudder.chart.errors import INVALID_CHART_REFERENCE, ChartError

SCHEME: Final = "oci://"

_HOST_LABEL: Final = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_HOST: Final = re.compile(
    rf"^(?:{_HOST_LABEL}(?:\.{_HOST_LABEL})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?$"
)
_PATH_COMPONENT: Final = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG: Final = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class OciReference:
    """A parsed chart reference; `digest` wins over `tag` when both are given."""

    registry: str  # host[:port]
    repository: str  # path/name, no leading slash
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        text = f"{SCHEME}{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @property
    def manifest_reference(self) -> str:
        """What goes after `/manifests/` in the registry API: the digest, else the tag."""
        reference = self.digest or self.tag
        assert reference is not None  # parse() guarantees one of them
        return reference

    def pinned(self, digest: str) -> OciReference:
        """The same chart pinned to `digest` (the tag is kept for readers)."""
        if not is_sha256_digest(digest):
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return replace(self, digest=digest)


def parse_reference(text: str) -> OciReference:
    """Parse a chart reference or raise `ChartError(InvalidChartReference)`."""

    def invalid(why: str) -> ChartError:
        return ChartError(INVALID_CHART_REFERENCE, f"invalid chart reference {text!r}: {why}")

    if not text.startswith(SCHEME):
        raise invalid("must start with oci://")
    rest = text[len(SCHEME) :]
    host, slash, path = rest.partition("/")
    if not slash or not path:
        raise invalid("expected oci://host/path/name")
    if "@" in host or not _HOST.match(host):
        raise invalid(f"bad registry host {host!r}")
    digest: str | None = None
    if "@" in path:
        path, _, digest = path.partition("@")
        if not is_sha256_digest(digest):
            raise invalid("the digest must be sha256:<64 lowercase hex>")
    tag: str | None = None
    last_slash = path.rfind("/")
    colon = path.rfind(":")
    if colon > last_slash:
        path, tag = path[:colon], path[colon + 1 :]
        if not _TAG.match(tag):
            raise invalid(f"bad tag {tag!r}")
    components = path.split("/")
    if not all(_PATH_COMPONENT.match(component) for component in components):
        raise invalid(f"bad repository path {path!r}")
    if tag is None and digest is None:
        raise invalid("needs a digest (@sha256:…) or, with allowTag, a tag")
    return OciReference(registry=host, repository=path, tag=tag, digest=digest)

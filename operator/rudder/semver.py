"""Chart versions and version ranges as Helm reads them (pure).

Helm picks a chart version from a repository index with Masterminds' semver constraints,
so ranges here follow that grammar: comparators `= != > < >= <=`, `~` (patch-level
changes), `^` (changes that keep the leftmost non-zero part), wildcards `x X *`, hyphen
ranges `1.2 - 1.4.5`, AND by space or comma, OR by `||`. As there, a prerelease version
matches only a range that names a prerelease itself, and versions may omit minor and
patch (`1.2` is `1.2.0`) or carry a leading `v`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering
from typing import Final

_VERSION: Final = re.compile(
    r"^v?(?P<major>0|[1-9][0-9]*)(?:\.(?P<minor>0|[1-9][0-9]*))?(?:\.(?P<patch>0|[1-9][0-9]*))?"
    r"(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)
# One comparator: an operator, then a version whose parts may be wildcards.
_COMPARATOR: Final = re.compile(
    r"^(?P<op>!=|>=|=>|<=|=<|~>|[=<>~^])?\s*v?(?P<major>[0-9]+|[xX*])"
    r"(?:\.(?P<minor>[0-9]+|[xX*]))?(?:\.(?P<patch>[0-9]+|[xX*]))?"
    r"(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z-.]+)?$"
)
_WILDCARDS: Final = frozenset({"x", "X", "*"})


class VersionError(ValueError):
    """Not a version, or not a range."""


@total_ordering
@dataclass(frozen=True)
class Version:
    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Version:
        match = _VERSION.match(text.strip())
        if match is None:
            raise VersionError(f"{text!r} is not a semantic version")
        pre = match["pre"]
        return cls(
            int(match["major"]),
            int(match["minor"] or 0),
            int(match["patch"] or 0),
            tuple(pre.split(".")) if pre else (),
        )

    def _key(self) -> tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]:
        # A release sorts after its prereleases; numeric identifiers before alphanumeric.
        pre = tuple(
            (0, int(part), "") if part.isdigit() else (1, 0, part) for part in self.prerelease
        )
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, pre)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() < other._key()


@dataclass(frozen=True)
class _Bound:
    op: str  # one of = != > < >= <=, or "out": outside [version, upper) (`!=1.2.x`)
    version: Version
    upper: Version | None = None

    def allows(self, version: Version) -> bool:
        ours = version._key()
        theirs = self.version._key()
        if self.op == "out":
            assert self.upper is not None
            return not theirs <= ours < self.upper._key()
        return {
            "=": ours == theirs,
            "!=": ours != theirs,
            ">": ours > theirs,
            "<": ours < theirs,
            ">=": ours >= theirs,
            "<=": ours <= theirs,
        }[self.op]


@dataclass(frozen=True)
class _Group:
    """Comparators that must all hold."""

    bounds: tuple[_Bound, ...]
    names_prerelease: bool

    def allows(self, version: Version) -> bool:
        if version.prerelease and not self.names_prerelease:
            return False
        return all(bound.allows(version) for bound in self.bounds)


@dataclass(frozen=True)
class VersionRange:
    text: str
    groups: tuple[_Group, ...]  # any one of them

    @classmethod
    def parse(cls, text: str) -> VersionRange:
        if not text.strip():
            raise VersionError("the version range is empty")
        groups = tuple(_group(part, text) for part in text.split("||"))
        return cls(text, groups)

    def allows(self, version: Version) -> bool:
        return any(group.allows(version) for group in self.groups)


def _group(text: str, whole: str) -> _Group:
    # Hyphen ranges first ("1.2 - 1.4"), then comparators split on commas and spaces, an
    # operator standing apart from its version ("> 1.2") joined back to it.
    text = re.sub(r"(\S+)\s+-\s+(\S+)", r">=\1,<=\2", text.strip())
    tokens = [token for token in re.split(r"[\s,]+", text) if token]
    joined: list[str] = []
    for token in tokens:
        if joined and re.fullmatch(r"!=|>=|=>|<=|=<|~>|[=<>~^]", joined[-1]):
            joined[-1] += token
        else:
            joined.append(token)
    if not joined:
        raise VersionError(f"{whole!r} has an empty alternative")
    bounds: list[_Bound] = []
    names_prerelease = False
    for token in joined:
        match = _COMPARATOR.match(token)
        if match is None:
            raise VersionError(f"{whole!r} is not a version range ({token!r})")
        names_prerelease = names_prerelease or bool(match["pre"])
        bounds.extend(_bounds(match))
    return _Group(tuple(bounds), names_prerelease)


def _bounds(match: re.Match[str]) -> list[_Bound]:
    op = {"=>": ">=", "=<": "<=", "~>": "~"}.get(match["op"] or "=", match["op"] or "=")
    parts = [match["major"], match["minor"], match["patch"]]
    # How many leading parts are given as numbers; the rest are wildcards or absent.
    given = 0
    for part in parts:
        if part is None or part in _WILDCARDS:
            break
        given += 1
    numbers = [int(p) if p is not None and p not in _WILDCARDS else 0 for p in parts]
    pre = tuple(match["pre"].split(".")) if match["pre"] else ()
    low = Version(numbers[0], numbers[1], numbers[2], pre if given == 3 else ())
    if given == 0:  # "*", "x": anything (a `!=*` or `<*` matches nothing)
        return [] if op in ("=", ">=", "~", "^") else [_Bound("<", Version(0, 0, 0, ("0",)))]

    def bump(index: int) -> Version:
        major, minor, patch = numbers[:index] + [numbers[index] + 1] + [0] * (2 - index)
        return Version(major, minor, patch)

    exact = given == 3
    if op == "~":  # ~1.2.3 and ~1.2: same minor; ~1: same major
        return [_Bound(">=", low), _Bound("<", bump(1 if given > 1 else 0))]
    if op == "^":  # first non-zero part fixed; ^0.0 and ^0 fix what is given
        keep = next((i for i, n in enumerate(numbers[:given]) if n != 0), given - 1)
        return [_Bound(">=", low), _Bound("<", bump(keep))]
    if exact:
        return [_Bound(op, low)]
    upper = bump(given - 1)  # first version past the wildcard range
    return {
        "=": [_Bound(">=", low), _Bound("<", upper)],
        "!=": [_Bound("out", low, upper)],
        ">": [_Bound(">=", upper)],
        ">=": [_Bound(">=", low)],
        "<": [_Bound("<", low)],
        "<=": [_Bound("<", upper)],
    }[op]

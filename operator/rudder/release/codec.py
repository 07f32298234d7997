"""Helm's release record: the typed model, its JSON, and the Secret that stores it.

The JSON mirrors Helm v4.2.3 (`pkg/release/v1`, chart `pkg/chart/v2`) key for key:
struct fields in Go's declaration order, `omitempty` where Helm has it, map keys sorted,
times in RFC 3339 with nanoseconds, `[]byte` as base64 and Go's string escaping, so
`release_json(release_from_json(x))` reproduces JSON written by the Helm CLI byte for byte.
Keys this model does not know are kept in `extra` and written back, so a record written
by a newer Helm survives a rewrite by rudder.

On the wire a release Secret holds `data.release = base64(base64(gzip(json)))`: Helm's
driver base64-encodes the gzip stream, then the API's `[]byte` encoding adds another.
Helm 3 reads this format too (it ignores the keys Helm 4 added).

Error messages name fields, never values: a release holds the user's values, which may be
secret.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import math
import re
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from json.encoder import encode_basestring
from typing import Any, TypeVar

RELEASE_SECRET_TYPE = "helm.sh/release.v1"  # noqa: S105 (a Secret type, not a password)
SECRET_NAME_PREFIX = "sh.helm.release.v1"  # noqa: S105 (a name prefix)
OWNER = "helm"
# The labels Helm's storage driver owns; a custom label may not use these names.
SYSTEM_LABELS = frozenset({"name", "owner", "status", "version", "createdAt", "modifiedAt"})

_GZIP_MAGIC = b"\x1f\x8b\x08"

T = TypeVar("T")


class ReleaseFormatError(ValueError):
    """Stored release data that is not a Helm release record."""


# --- time ---------------------------------------------------------------------------------

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})"
)


@dataclass(frozen=True, order=True)
class GoTime:
    """An instant as Go's `time.Time` writes it: RFC 3339, nanoseconds, the writer's offset.

    `datetime` holds microseconds; `nanosecond` keeps the three digits below them so a
    time written by Helm is written back unchanged.
    """

    moment: datetime
    nanosecond: int = 0

    def __post_init__(self) -> None:
        if self.moment.tzinfo is None:
            raise ValueError("GoTime needs a timezone-aware datetime")
        if not 0 <= self.nanosecond < 1000:
            raise ValueError("GoTime.nanosecond is the 0..999 ns below the microsecond")

    @classmethod
    def now(cls) -> GoTime:
        return cls(datetime.now(UTC))

    @classmethod
    def parse(cls, text: str) -> GoTime:
        match = _RFC3339.fullmatch(text)
        if match is None:
            raise ValueError("not an RFC 3339 time")
        year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
        digits = (match.group(7) or "").ljust(9, "0")
        zone = match.group(8)
        if zone == "Z":
            tz = UTC
        else:
            sign = -1 if zone[0] == "-" else 1
            offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
            tz = timezone(sign * offset)
        moment = datetime(year, month, day, hour, minute, second, int(digits[:6]), tzinfo=tz)
        return cls(moment, int(digits[6:]))

    def format(self) -> str:
        """Go's RFC3339Nano: trailing zeros of the fraction dropped, `Z` for a zero offset."""
        fraction = f"{self.moment.microsecond:06d}{self.nanosecond:03d}".rstrip("0")
        m = self.moment
        text = f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}"
        if fraction:
            text += "." + fraction
        offset = self.moment.utcoffset() or timedelta(0)
        if offset == timedelta(0):
            return text + "Z"
        minutes = int(offset.total_seconds()) // 60
        sign = "-" if minutes < 0 else "+"
        hours, minutes = divmod(abs(minutes), 60)
        return f"{text}{sign}{hours:02d}:{minutes:02d}"


# Go's zero time.Time, which Helm writes where a time field has no omitempty.
_GO_ZERO_TIME = "0001-01-01T00:00:00Z"


# --- model --------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ChartFile:
    """A template or other file of the chart (`common.File`)."""

    name: str
    data: bytes
    mod_time: GoTime | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ChartMetadata:
    """Chart.yaml (`chart.Metadata`); maintainers and dependencies kept as Helm wrote them."""

    name: str = ""
    home: str = ""
    sources: list[str] = field(default_factory=list)
    version: str = ""
    description: str = ""
    keywords: list[str] = field(default_factory=list)
    maintainers: list[Any] = field(default_factory=list)
    icon: str = ""
    api_version: str = ""
    condition: str = ""
    tags: str = ""
    app_version: str = ""
    deprecated: bool = False
    annotations: dict[str, str] = field(default_factory=dict)
    kube_version: str = ""
    dependencies: list[Any] = field(default_factory=list)
    type: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Chart:
    """The chart stored in a release (`chart.Chart` without its subcharts, as Helm stores it).

    `None` and empty differ on the wire (`null` vs `[]`/`{}`), so both are kept.
    """

    metadata: ChartMetadata | None = None
    lock: dict[str, Any] | None = None  # Chart.lock, kept verbatim
    templates: list[ChartFile] | None = None
    values: dict[str, Any] | None = None
    schema: bytes | None = None
    schema_mod_time: GoTime | None = None
    files: list[ChartFile] | None = None
    mod_time: GoTime | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Info:
    """`release.Info`: when and how the revision was deployed, and its status."""

    first_deployed: GoTime | None = None
    last_deployed: GoTime | None = None
    deleted: GoTime | None = None
    description: str = ""
    status: str = ""
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class HookExecution:
    """`release.HookExecution`: the last run of a hook."""

    started_at: GoTime | None = None
    completed_at: GoTime | None = None
    phase: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Hook:
    """`release.Hook`: a hook resource, its events and policies."""

    name: str = ""
    kind: str = ""
    path: str = ""
    manifest: str = ""
    events: list[str] = field(default_factory=list)
    last_run: HookExecution = field(default_factory=HookExecution)
    weight: int = 0
    delete_policies: list[str] = field(default_factory=list)
    output_log_policies: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Release:
    """`release.Release`, one revision of a release.

    `labels` are the custom labels of the release's Secret (Helm's `Release.Labels`), not
    part of the JSON; the system labels are derived from the other fields.
    """

    name: str
    version: int
    namespace: str
    info: Info | None = None
    chart: Chart | None = None
    config: dict[str, Any] = field(default_factory=dict)
    manifest: str = ""
    hooks: list[Hook] = field(default_factory=list)
    apply_method: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        """`info.status`, "" without info (what Helm writes to the `status` label)."""
        return self.info.status if self.info else ""


# --- decoding: JSON -> model --------------------------------------------------------------


class _Object:
    """One JSON object being decoded: typed access by key, unknown keys left over."""

    def __init__(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise ReleaseFormatError(f"release JSON: {where or 'the document'} is not an object")
        self._rest = dict(value)
        self._where = where

    def _path(self, key: str) -> str:
        return f"{self._where}.{key}" if self._where else key

    def _take(self, key: str, kind: type | tuple[type, ...], label: str) -> Any:
        value = self._rest.pop(key, None)
        # Go decodes `null` as the field's zero value.
        if value is None:
            return None
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            raise ReleaseFormatError(f"release JSON: {self._path(key)} must be {label}")
        return value

    def text(self, key: str) -> str:
        value: str | None = self._take(key, str, "a string")
        return value or ""

    def integer(self, key: str) -> int:
        value: int | None = self._take(key, int, "an integer")
        return value or 0

    def flag(self, key: str) -> bool:
        value: bool | None = self._take(key, bool, "a boolean")
        return bool(value)

    def mapping(self, key: str) -> dict[str, Any] | None:
        value: dict[str, Any] | None = self._take(key, dict, "an object")
        return value

    def array(self, key: str) -> list[Any] | None:
        value: list[Any] | None = self._take(key, list, "an array")
        return value

    def texts(self, key: str) -> list[str]:
        items = self.array(key) or []
        if not all(isinstance(item, str) for item in items):
            raise ReleaseFormatError(f"release JSON: {self._path(key)} must hold strings")
        return list(items)

    def text_map(self, key: str) -> dict[str, str]:
        items = self.mapping(key) or {}
        if not all(isinstance(item, str) for item in items.values()):
            raise ReleaseFormatError(f"release JSON: {self._path(key)} must hold strings")
        return dict(items)

    def time(self, key: str) -> GoTime | None:
        # Helm 3 writes "" for a zero time, Helm 4 omits it; both read back as no time.
        text = self.text(key)
        if text in ("", _GO_ZERO_TIME):
            return None
        try:
            return GoTime.parse(text)
        except ValueError:
            raise ReleaseFormatError(
                f"release JSON: {self._path(key)} is not an RFC 3339 time"
            ) from None

    def blob(self, key: str) -> bytes | None:
        text: str | None = self._take(key, str, "base64 text")
        if text is None:
            return None
        try:
            return base64.b64decode(text, validate=True)
        except binascii.Error:
            raise ReleaseFormatError(f"release JSON: {self._path(key)} is not base64") from None

    def objects(self, key: str, decode: Callable[[Any, str], T]) -> list[T] | None:
        items = self.array(key)
        if items is None:
            return None
        return [decode(item, f"{self._path(key)}[{index}]") for index, item in enumerate(items)]

    def extra(self) -> dict[str, Any]:
        return self._rest


def _chart_file(value: Any, where: str) -> ChartFile:
    obj = _Object(value, where)
    return ChartFile(
        name=obj.text("name"),
        data=obj.blob("data") or b"",
        mod_time=obj.time("modtime"),
        extra=obj.extra(),
    )


def _chart_metadata(value: Any, where: str) -> ChartMetadata:
    obj = _Object(value, where)
    return ChartMetadata(
        name=obj.text("name"),
        home=obj.text("home"),
        sources=obj.texts("sources"),
        version=obj.text("version"),
        description=obj.text("description"),
        keywords=obj.texts("keywords"),
        maintainers=obj.array("maintainers") or [],
        icon=obj.text("icon"),
        api_version=obj.text("apiVersion"),
        condition=obj.text("condition"),
        tags=obj.text("tags"),
        app_version=obj.text("appVersion"),
        deprecated=obj.flag("deprecated"),
        annotations=obj.text_map("annotations"),
        kube_version=obj.text("kubeVersion"),
        dependencies=obj.array("dependencies") or [],
        type=obj.text("type"),
        extra=obj.extra(),
    )


def chart_from_json(value: Any, where: str = "chart") -> Chart:
    """The chart model of Helm's chart JSON (as stored in a release)."""
    obj = _Object(value, where)
    metadata = obj.mapping("metadata")
    return Chart(
        metadata=None if metadata is None else _chart_metadata(metadata, f"{where}.metadata"),
        lock=obj.mapping("lock"),
        templates=obj.objects("templates", _chart_file),
        values=obj.mapping("values"),
        schema=obj.blob("schema"),
        schema_mod_time=obj.time("schemamodtime"),
        files=obj.objects("files", _chart_file),
        mod_time=obj.time("modtime"),
        extra=obj.extra(),
    )


def _info(value: Any, where: str) -> Info:
    obj = _Object(value, where)
    return Info(
        first_deployed=obj.time("first_deployed"),
        last_deployed=obj.time("last_deployed"),
        deleted=obj.time("deleted"),
        description=obj.text("description"),
        status=obj.text("status"),
        notes=obj.text("notes"),
        extra=obj.extra(),
    )


def _hook_execution(value: Any, where: str) -> HookExecution:
    obj = _Object(value, where)
    return HookExecution(
        started_at=obj.time("started_at"),
        completed_at=obj.time("completed_at"),
        phase=obj.text("phase"),
        extra=obj.extra(),
    )


def _hook(value: Any, where: str) -> Hook:
    obj = _Object(value, where)
    last_run = obj.mapping("last_run")
    return Hook(
        name=obj.text("name"),
        kind=obj.text("kind"),
        path=obj.text("path"),
        manifest=obj.text("manifest"),
        events=obj.texts("events"),
        last_run=HookExecution()
        if last_run is None
        else _hook_execution(last_run, f"{where}.last_run"),
        weight=obj.integer("weight"),
        delete_policies=obj.texts("delete_policies"),
        output_log_policies=obj.texts("output_log_policies"),
        extra=obj.extra(),
    )


def release_from_json(value: Any) -> Release:
    """The release model of Helm's release JSON (already parsed)."""
    obj = _Object(value, "")
    info = obj.mapping("info")
    chart = obj.mapping("chart")
    return Release(
        name=obj.text("name"),
        info=None if info is None else _info(info, "info"),
        chart=None if chart is None else chart_from_json(chart),
        config=obj.mapping("config") or {},
        manifest=obj.text("manifest"),
        hooks=obj.objects("hooks", _hook) or [],
        version=obj.integer("version"),
        namespace=obj.text("namespace"),
        apply_method=obj.text("apply_method"),
        extra=obj.extra(),
    )


# --- encoding: model -> JSON --------------------------------------------------------------


def _go_map(value: Any) -> Any:
    """A copy with every object's keys sorted, as Go writes a `map[string]any`."""
    if isinstance(value, dict):
        return {key: _go_map(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_go_map(item) for item in value]
    return value


def _put(out: dict[str, Any], key: str, value: Any) -> None:
    """Set an `omitempty` field: Go leaves out "", 0, false, nil and empty maps/slices."""
    if value is None or value is False or value == "" or value == 0:
        return
    if isinstance(value, dict | list) and not value:
        return
    out[key] = value


def _put_time(out: dict[str, Any], key: str, value: GoTime | None) -> None:
    if value is not None:
        out[key] = value.format()


def _base64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _with_extra(out: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        out.setdefault(key, value)
    return out


def _chart_file_json(file: ChartFile) -> dict[str, Any]:
    out: dict[str, Any] = {"name": file.name, "data": _base64(file.data)}
    _put_time(out, "modtime", file.mod_time)
    return _with_extra(out, file.extra)


def _chart_metadata_json(metadata: ChartMetadata) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _put(out, "name", metadata.name)
    _put(out, "home", metadata.home)
    _put(out, "sources", metadata.sources)
    _put(out, "version", metadata.version)
    _put(out, "description", metadata.description)
    _put(out, "keywords", metadata.keywords)
    _put(out, "maintainers", metadata.maintainers)
    _put(out, "icon", metadata.icon)
    _put(out, "apiVersion", metadata.api_version)
    _put(out, "condition", metadata.condition)
    _put(out, "tags", metadata.tags)
    _put(out, "appVersion", metadata.app_version)
    _put(out, "deprecated", metadata.deprecated)
    _put(out, "annotations", _go_map(metadata.annotations))
    _put(out, "kubeVersion", metadata.kube_version)
    _put(out, "dependencies", metadata.dependencies)
    _put(out, "type", metadata.type)
    return _with_extra(out, metadata.extra)


def chart_to_json(chart: Chart) -> dict[str, Any]:
    """Helm's chart JSON for the chart model (no `omitempty` here except `modtime`)."""
    out: dict[str, Any] = {
        "metadata": None if chart.metadata is None else _chart_metadata_json(chart.metadata),
        "lock": chart.lock,
        "templates": None
        if chart.templates is None
        else [_chart_file_json(f) for f in chart.templates],
        "values": None if chart.values is None else _go_map(chart.values),
        "schema": _base64(chart.schema),
        "schemamodtime": _GO_ZERO_TIME
        if chart.schema_mod_time is None
        else chart.schema_mod_time.format(),
        "files": None if chart.files is None else [_chart_file_json(f) for f in chart.files],
    }
    _put_time(out, "modtime", chart.mod_time)
    return _with_extra(out, chart.extra)


def _info_json(info: Info) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _put_time(out, "first_deployed", info.first_deployed)
    _put_time(out, "last_deployed", info.last_deployed)
    _put_time(out, "deleted", info.deleted)
    _put(out, "description", info.description)
    _put(out, "status", info.status)
    _put(out, "notes", info.notes)
    return _with_extra(out, info.extra)


def _hook_json(hook: Hook) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _put(out, "name", hook.name)
    _put(out, "kind", hook.kind)
    _put(out, "path", hook.path)
    _put(out, "manifest", hook.manifest)
    _put(out, "events", hook.events)
    # last_run has no omitempty, and its phase is always written.
    last_run: dict[str, Any] = {}
    _put_time(last_run, "started_at", hook.last_run.started_at)
    _put_time(last_run, "completed_at", hook.last_run.completed_at)
    last_run["phase"] = hook.last_run.phase
    out["last_run"] = _with_extra(last_run, hook.last_run.extra)
    _put(out, "weight", hook.weight)
    _put(out, "delete_policies", hook.delete_policies)
    _put(out, "output_log_policies", hook.output_log_policies)
    return _with_extra(out, hook.extra)


def release_to_json(release: Release) -> dict[str, Any]:
    """Helm's release JSON for the release model, keys in the order Helm writes them."""
    out: dict[str, Any] = {}
    _put(out, "name", release.name)
    if release.info is not None:
        out["info"] = _info_json(release.info)
    if release.chart is not None:
        out["chart"] = chart_to_json(release.chart)
    _put(out, "config", _go_map(release.config))
    _put(out, "manifest", release.manifest)
    _put(out, "hooks", [_hook_json(hook) for hook in release.hooks])
    _put(out, "version", release.version)
    _put(out, "namespace", release.namespace)
    _put(out, "apply_method", release.apply_method)
    return _with_extra(out, release.extra)


# --- Go's encoding/json output ------------------------------------------------------------

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_HTML_ESCAPES = {
    "&": "\\u0026",
    "<": "\\u003c",
    ">": "\\u003e",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_HTML_UNSAFE = re.compile("[&<>\u2028\u2029]")


def _go_string(text: str) -> str:
    """A JSON string escaped as Go's json.Marshal does (HTML-safe, U+2028/9 escaped)."""
    # Go cannot hold a lone surrogate: its decoder would have turned one into U+FFFD.
    text = _LONE_SURROGATE.sub("\ufffd", text)
    return _HTML_UNSAFE.sub(lambda m: _HTML_ESCAPES[m.group()], encode_basestring(text))


def _go_float(number: float) -> str:
    """A float64 as Go's json.Marshal writes it: shortest digits, exponent only when tiny/huge."""
    if not math.isfinite(number):
        raise ReleaseFormatError("release JSON cannot hold NaN or infinity")
    if number == 0:
        return "-0" if math.copysign(1.0, number) < 0 else "0"
    shortest = Decimal(repr(number)).normalize()
    if 1e-6 <= abs(number) < 1e21:
        return format(shortest, "f")
    sign, digits, exponent = shortest.as_tuple()
    assert isinstance(exponent, int)
    mantissa = "".join(str(d) for d in digits)
    power = exponent + len(digits) - 1
    text = mantissa[0] + ("." + mantissa[1:] if len(mantissa) > 1 else "")
    # Go writes at least two exponent digits, then shortens "e-07" to "e-7".
    exp_text = f"{abs(power):02d}"
    if power < 0 and exp_text.startswith("0"):
        exp_text = exp_text[1:]
    return ("-" if sign else "") + text + ("e-" if power < 0 else "e+") + exp_text


def _write_json(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_go_string(value))
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(_go_float(value))
    elif isinstance(value, dict):
        out.append("{")
        for index, (key, item) in enumerate(value.items()):
            if index:
                out.append(",")
            if not isinstance(key, str):
                raise ReleaseFormatError("release JSON object keys must be strings")
            out.append(_go_string(key))
            out.append(":")
            _write_json(item, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _write_json(item, out)
        out.append("]")
    else:
        raise ReleaseFormatError(f"release JSON cannot hold a {type(value).__name__}")


def go_json(value: Any) -> bytes:
    """Compact JSON exactly as Go's `json.Marshal` would write these (ordered) values."""
    out: list[str] = []
    _write_json(value, out)
    return "".join(out).encode("utf-8")


def release_json(release: Release) -> bytes:
    """The release's JSON, byte for byte as Helm v4 writes it before compression."""
    return go_json(release_to_json(release))


# --- the storage driver's encoding --------------------------------------------------------


def encode_release(release: Release) -> str:
    """`base64(gzip(json))`: the Secret's `data.release` before the API's own base64."""
    # mtime=0 keeps the encoding a pure function of the release, like Go's gzip writer.
    compressed = gzip.compress(release_json(release), compresslevel=9, mtime=0)
    return base64.b64encode(compressed).decode("ascii")


def decode_release(data: str) -> Release:
    """Decode `data.release` (already API-decoded); plain JSON is accepted like Helm does."""
    try:
        raw = base64.b64decode(re.sub(r"[\r\n]", "", data), validate=True)
    except (binascii.Error, ValueError):
        raise ReleaseFormatError("release data is not base64") from None
    if len(raw) > 3 and raw[:3] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error):
            raise ReleaseFormatError("release data is not a valid gzip stream") from None
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        # The message only: the exception object would carry the whole document.
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
        raise ReleaseFormatError(f"release data is not JSON: {reason}") from None
    return release_from_json(document)


# --- the Secret ---------------------------------------------------------------------------


def secret_name(release_name: str, version: int) -> str:
    """`sh.helm.release.v1.<name>.v<version>`, Helm's storage key."""
    return f"{SECRET_NAME_PREFIX}.{release_name}.v{version}"


def release_secret(
    release: Release,
    *,
    namespace: str | None = None,
    extra_labels: Mapping[str, str] | None = None,
    update: bool = False,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The Secret Helm's storage driver would write for `release`.

    Helm labels a Secret it creates with `createdAt` and one it replaces (an update) with
    `modifiedAt`, both Unix seconds; each write replaces every label, so a Secret carries
    the label of its last write only (after `helm install` that is `modifiedAt`, as the
    install updates the record it created). `update` picks which one this write is.
    The Secret lives in `namespace`, by default the release's own.
    """
    custom = {**release.labels, **(extra_labels or {})}
    reserved = sorted(SYSTEM_LABELS.intersection(custom))
    if reserved:
        raise ValueError(f"labels {reserved} are reserved by Helm's storage driver")
    stamp = int((now or datetime.now(UTC)).timestamp())
    labels = {
        **custom,
        ("modifiedAt" if update else "createdAt"): str(stamp),
        "name": release.name,
        "owner": OWNER,
        "status": release.status,
        "version": str(release.version),
    }
    data = base64.b64encode(encode_release(release).encode("ascii")).decode("ascii")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret_name(release.name, release.version),
            "namespace": namespace if namespace is not None else release.namespace,
            "labels": labels,
        },
        "type": RELEASE_SECRET_TYPE,
        "data": {"release": data},
    }


def release_from_secret(secret: Mapping[str, Any]) -> Release:
    """The release a Helm release Secret (as the API returns it) holds.

    The Secret's custom labels become `Release.labels`; Helm's system labels are dropped,
    as Helm's own `Get` does, so writing the release back cannot resurrect stale stamps.
    """
    data = secret.get("data") or {}
    encoded = data.get("release") if isinstance(data, Mapping) else None
    if not isinstance(encoded, str):
        raise ReleaseFormatError("secret has no data.release")
    try:
        inner = base64.b64decode(encoded, validate=True).decode("ascii")
    except (binascii.Error, ValueError):
        raise ReleaseFormatError("secret data.release is not base64") from None
    release = decode_release(inner)
    labels = (secret.get("metadata") or {}).get("labels") or {}
    custom = {k: v for k, v in labels.items() if k not in SYSTEM_LABELS}
    return replace(release, labels=custom)

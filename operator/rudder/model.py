"""The HelmRelease API as typed, immutable Python objects: parsing, defaults and conditions.

Pure: no Kubernetes client, no kopf. The CRD (crds/helmreleases.rudder.dev.yaml) applies the
same defaults on the API server; they are repeated here because an object stored before a
default existed is served without it. tests/test_crd_schema.py keeps the two in step.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Final

from rudder.semver import VersionError, VersionRange

# --- errors ------------------------------------------------------------------------------


class SpecError(ValueError):
    """A spec the schema admitted but rudder cannot act on; `field` is its path (spec.timeout)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# --- durations ---------------------------------------------------------------------------

# What the CRD accepts for every duration field: a subset of Go's syntax (no sign, no ns/us).
DURATION_PATTERN: Final = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"

_DURATION_UNITS: Final = {
    "ns": Fraction(1, 1_000_000_000),
    "us": Fraction(1, 1_000_000),
    "µs": Fraction(1, 1_000_000),  # U+00B5 micro sign
    "μs": Fraction(1, 1_000_000),  # U+03BC Greek mu
    "ms": Fraction(1, 1000),
    "s": Fraction(1),
    "m": Fraction(60),
    "h": Fraction(3600),
}
# One "<number><unit>" term of Go's time.ParseDuration; a number needs a digit on one side.
_DURATION_TERM: Final = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds in a Go duration string ("5m30s", "1.5h", "250ms", "-2s", "0")."""
    body = text[1:] if text[:1] in ("+", "-") else text
    sign = -1 if text.startswith("-") else 1
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(f"invalid duration {text!r}")
    total = Fraction(0)
    position = 0
    while position < len(body):
        term = _DURATION_TERM.match(body, position)
        if term is None:
            raise ValueError(f"invalid duration {text!r}")
        total += Fraction(term.group(1)) * _DURATION_UNITS[term.group(2)]
        position = term.end()
    return float(sign * total)


# --- chart references --------------------------------------------------------------------

_DIGEST: Final = r"sha256:[a-f0-9]{64}"
_TAG: Final = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
# Hostname or IPv4 address, optional port (IPv6 literals are not supported).
_HOST: Final = r"[A-Za-z0-9.-]+(?::[0-9]+)?"
# Path components as the OCI distribution spec defines them (lowercase, separators inside).
_COMPONENT: Final = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"

# The patterns the CRD's CEL rule on spec.chart uses (tests check the CRD holds these).
DIGEST_REF_PATTERN: Final = rf"^oci://{_HOST}(/{_COMPONENT})+(:{_TAG})?@{_DIGEST}$"
TAG_OR_DIGEST_REF_PATTERN: Final = rf"^oci://{_HOST}(/{_COMPONENT})+((:{_TAG})?@{_DIGEST}|:{_TAG})$"

_REFERENCE: Final = re.compile(
    rf"oci://(?P<registry>{_HOST})/(?P<repository>{_COMPONENT}(?:/{_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?"
)


@dataclass(frozen=True)
class ChartReference:
    """An OCI chart reference split into its parts; `digest` is None for a tag-only ref."""

    registry: str  # host[:port]
    repository: str  # path/name, without the registry
    tag: str | None
    digest: str | None  # "sha256:<64 hex>"

    @classmethod
    def parse(cls, ref: str, *, field: str = "spec.chart.ref") -> ChartReference:
        """Split `oci://host[:port]/path/name` followed by `:tag`, `@sha256:…` or both."""
        match = _REFERENCE.fullmatch(ref)
        if match is None or (match["tag"] is None and match["digest"] is None):
            raise SpecError(
                field,
                f"{ref!r} is not oci://<registry>/<repository>@sha256:<64 hex digits> (or :<tag>)",
            )
        return cls(match["registry"], match["repository"], match["tag"], match["digest"])

    @property
    def name(self) -> str:
        """The chart's name as Helm sees it: the last path component."""
        return self.repository.rsplit("/", 1)[-1]

    def pinned(self, digest: str) -> str:
        """The same reference pinned to `digest` (the tag, if any, is kept for people)."""
        tag = f":{self.tag}" if self.tag else ""
        return f"oci://{self.registry}/{self.repository}{tag}@{digest}"


# The CRD's patterns for an HTTP repository chart (tests check the CRD holds these): an
# http(s) URL without user info (credentials go in secretRef), and the archive's digest.
HTTP_REPOSITORY_PATTERN: Final = r"^https?://[^/@\s?#]+(/[^\s]*)?$"
ARCHIVE_DIGEST_PATTERN: Final = rf"^{_DIGEST}$"
# A chart version exactly as semver 2 writes it, optionally with Helm's leading "v".
EXACT_VERSION_PATTERN: Final = (  # no backslashes: it sits in a CEL string literal
    r"^v?(0|[1-9][0-9]*)[.](0|[1-9][0-9]*)[.](0|[1-9][0-9]*)"
    r"(-[0-9A-Za-z-]+([.][0-9A-Za-z-]+)*)?([+][0-9A-Za-z-]+([.][0-9A-Za-z-]+)*)?$"
)
# Fields of one chart form that make no sense with the other.
_HTTP_ONLY: Final = ("name", "version", "digest")
_HTTP_ONLY_FLAGS: Final = ("allowVersionRange", "passCredentials")
_OCI_ONLY_FLAGS: Final = ("allowTag", "insecure")


# --- sizes -------------------------------------------------------------------------------

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?|[kMGT]B?|B)?\s*$")
_FACTORS = {
    None: 1,
    "B": 1,
    "K": 1024,
    "Ki": 1024,
    "k": 1000,
    "kB": 1000,
    "M": 1024**2,
    "Mi": 1024**2,
    "MB": 1000**2,
    "G": 1024**3,
    "Gi": 1024**3,
    "GB": 1000**3,
    "T": 1024**4,
    "Ti": 1024**4,
    "TB": 1000**4,
}


def parse_size(text: str) -> int:
    """Sizes as the flags and the spec write them: '1Gi', '10Mi', '500MB', '4096' -> bytes."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (use e.g. 512Mi, 1Gi, 10MB)")
    number, unit = match.groups()
    return int(float(number) * _FACTORS[unit])


# --- the spec ----------------------------------------------------------------------------

# Defaults shared with the CRD schema (tests/test_crd_schema.py compares them).
DEFAULT_INTERVAL: Final = "10m"
DEFAULT_TIMEOUT: Final = "5m"
DEFAULT_TEST_TIMEOUT: Final = "5m"
DEFAULT_MAX_HISTORY: Final = 10
DEFAULT_VALUES_KEY: Final = "values.yaml"
DEFAULT_KUBECONFIG_KEY: Final = "value"  # as Flux's spec.kubeConfig
MAX_RELEASE_NAME: Final = 53  # Helm's limit (Secret names and labels derive from it)

CRDS_POLICIES: Final = ("Create", "CreateReplace", "Skip")
REMEDIATION_STRATEGIES: Final = ("rollback", "uninstall")
APPROVALS: Final = ("auto", "manual")
# The annotation that approves a preview (its value: the preview digest).
APPROVE_ANNOTATION: Final = "rudder.dev/approve"
DRIFT_MODES: Final = ("enabled", "warn", "disabled")
DELETION_PROPAGATIONS: Final = ("background", "foreground", "orphan")
VALUES_KINDS: Final = ("ConfigMap", "Secret")


@dataclass(frozen=True)
class HttpRepositoryChart:
    """`spec.chart` naming a chart of a classic HTTP repository (index.yaml)."""

    repository: str  # the repository URL; index.yaml lives beneath it
    name: str
    version: str  # exact, or a semver range with allow_version_range
    digest: str | None = None  # sha256 of the .tgz; None only with allow_version_range
    allow_version_range: bool = False
    pass_credentials: bool = False  # credentials also to a chart URL on another host


@dataclass(frozen=True)
class ChartSpec:
    """Where the chart comes from and how to trust it (`spec.chart`): an OCI `ref`, or
    an HTTP repository (`http`; then `ref` is empty and `reference` None)."""

    ref: str
    reference: ChartReference | None
    allow_tag: bool = False
    secret_ref: str | None = None  # Secret (kubernetes.io/dockerconfigjson) name
    cert_secret_ref: str | None = None  # Secret name holding ca.crt
    insecure: bool = False
    verify_cosign_secret: str | None = None  # Secret name holding cosign.pub
    http: HttpRepositoryChart | None = None


@dataclass(frozen=True)
class ValuesReference:
    """One `spec.valuesFrom` entry: a key of a ConfigMap or Secret in the release's namespace."""

    kind: str  # ConfigMap | Secret
    name: str
    values_key: str = DEFAULT_VALUES_KEY
    target_path: str | None = None  # None: merge the YAML at the root
    optional: bool = False


@dataclass(frozen=True)
class DependencyReference:
    """A HelmRelease that must be Ready first (`spec.dependsOn`)."""

    name: str
    namespace: str


@dataclass(frozen=True)
class Remediation:
    """What to do after a failed action: retry `retries` times, then `strategy`."""

    retries: int = 0
    # Install failures are always remediated by uninstalling (there is nothing to roll back).
    strategy: str = "rollback"


@dataclass(frozen=True)
class InstallSpec:
    create_namespace: bool = False
    crds: str = "Create"
    disable_hooks: bool = False
    disable_wait: bool = False
    take_ownership: bool = False
    remediation: Remediation = Remediation(strategy="uninstall")
    preview: bool = False  # compute the preview first and keep its summary in status
    approval: str = "auto"  # manual: wait for rudder.dev/approve=<preview digest>


@dataclass(frozen=True)
class UpgradeSpec:
    force_conflicts: bool = False
    crds: str = "Skip"
    disable_hooks: bool = False
    disable_wait: bool = False
    take_ownership: bool = False
    cleanup_on_fail: bool = False
    remediation: Remediation = Remediation()
    force_replace: bool = False
    preview: bool = False
    approval: str = "auto"


@dataclass(frozen=True)
class RollbackSpec:
    disable_hooks: bool = False
    disable_wait: bool = False


@dataclass(frozen=True)
class TestSpec:
    __test__ = False  # not a pytest test class, whatever its name

    enable: bool = False
    timeout: float = 300.0  # seconds
    ignore_failures: bool = False


@dataclass(frozen=True)
class UninstallSpec:
    keep_history: bool = False
    disable_hooks: bool = False
    deletion_propagation: str = "background"


@dataclass(frozen=True)
class DriftIgnoreTarget:
    """Which objects a drift ignore rule applies to; None matches anything."""

    group: str | None = None
    version: str | None = None
    kind: str | None = None
    name: str | None = None
    namespace: str | None = None


@dataclass(frozen=True)
class DriftIgnoreRule:
    paths: tuple[str, ...]  # JSON pointers, e.g. /spec/replicas
    target: DriftIgnoreTarget | None = None  # None: every object of the release


@dataclass(frozen=True)
class DriftDetectionSpec:
    mode: str = "disabled"
    ignore: tuple[DriftIgnoreRule, ...] = ()


POST_RENDER_STRATEGIES: Final = ("combined", "separate", "nohooks")
MANIFEST_ENCODINGS: Final = ("text", "base64")
_PATCH_TARGET_FIELDS: Final = (
    "group",
    "version",
    "kind",
    "name",
    "namespace",
    "labelSelector",
    "annotationSelector",
)
_IMAGE_FIELDS: Final = ("name", "newName", "newTag", "digest")


@dataclass(frozen=True)
class KustomizeSpec:
    """`postRenderers[].kustomize`: Flux's fields, handed to kustomize as they are."""

    patches: tuple[Mapping[str, Any], ...] = ()  # {patch, target?: {group, kind, ...}}
    images: tuple[Mapping[str, str], ...] = ()  # {name, newName?, newTag?, digest?}

    def kustomization(self) -> dict[str, Any]:
        """The kustomization fields the kustomize module is configured with."""
        return {
            "patches": [dict(p) for p in self.patches],
            "images": [dict(i) for i in self.images],
        }


@dataclass(frozen=True)
class WasmLimits:
    """Limits a HelmRelease asks for; None leaves the plugin's own (capped by the operator)."""

    memory_pages: int | None = None
    timeout: float | None = None  # seconds
    max_output_bytes: int | None = None


@dataclass(frozen=True)
class WasmSpec:
    """`postRenderers[].wasm`: a Helm 4 post-renderer plugin pinned by digest."""

    ref: str
    reference: ChartReference
    args: tuple[str, ...] = ()
    config: Mapping[str, str] = field(default_factory=dict)
    manifests_encoding: str = "text"
    limits: WasmLimits = WasmLimits()
    secret_ref: str | None = None
    cert_secret_ref: str | None = None
    insecure: bool = False
    verify_cosign_secret: str | None = None

    @property
    def plugin_name(self) -> str:
        return self.reference.name


@dataclass(frozen=True)
class PostRendererSpec:
    """One `spec.postRenderers` entry: exactly one of the two is set."""

    kustomize: KustomizeSpec | None = None
    wasm: WasmSpec | None = None


@dataclass(frozen=True)
class KubeConfigSpec:
    """`spec.kubeConfig`: the release goes to the cluster this kubeconfig names."""

    secret_name: str  # a Secret in the HelmRelease's namespace
    key: str = DEFAULT_KUBECONFIG_KEY


@dataclass(frozen=True)
class HelmReleaseSpec:
    """A HelmRelease's spec with every default applied and every derived name resolved."""

    chart: ChartSpec
    release_name: str  # spec.releaseName or metadata.name
    target_namespace: str  # spec.targetNamespace or metadata.namespace
    storage_namespace: str  # spec.storageNamespace or the target namespace
    values: dict[str, Any] = field(default_factory=dict)
    values_from: tuple[ValuesReference, ...] = ()
    interval: float = 600.0  # seconds
    timeout: float = 300.0  # seconds
    suspend: bool = False
    service_account_name: str | None = None
    # The user rudder impersonates for this release, or None to act as itself.
    service_account_user: str | None = None
    depends_on: tuple[DependencyReference, ...] = ()
    max_history: int = DEFAULT_MAX_HISTORY  # 0: keep every revision
    install: InstallSpec = InstallSpec()
    upgrade: UpgradeSpec = UpgradeSpec()
    rollback: RollbackSpec = RollbackSpec()
    test: TestSpec = TestSpec()
    uninstall: UninstallSpec = UninstallSpec()
    drift_detection: DriftDetectionSpec = DriftDetectionSpec()
    post_renderers: tuple[PostRendererSpec, ...] = ()
    post_render_strategy: str = "combined"
    kube_config: KubeConfigSpec | None = None  # None: the cluster rudder runs in


class _Fields:
    """Typed reads of one object of the spec; every error names the field's full path."""

    def __init__(self, data: object, path: str) -> None:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise SpecError(path, "must be an object")
        self.data: Mapping[str, Any] = data
        self.path = path

    def at(self, key: str) -> str:
        return f"{self.path}.{key}"

    def child(self, key: str) -> _Fields:
        return _Fields(self.data.get(key), self.at(key))

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def objects(self, key: str) -> list[_Fields]:
        items = self.data.get(key)
        if items is None:
            return []
        if not isinstance(items, list):
            raise SpecError(self.at(key), "must be a list")
        return [_Fields(item, f"{self.at(key)}[{index}]") for index, item in enumerate(items)]

    def strings(self, key: str) -> tuple[str, ...]:
        items = self.data.get(key)
        if items is None:
            return ()
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise SpecError(self.at(key), "must be a list of strings")
        return tuple(items)

    def string(self, key: str) -> str | None:
        """The string at `key`, or None when absent or empty."""
        value = self.data.get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise SpecError(self.at(key), f"must be a string, not {_json_type(value)}")
        return value

    def required_string(self, key: str) -> str:
        value = self.string(key)
        if value is None:
            raise SpecError(self.at(key), "is required")
        return value

    def boolean(self, key: str, default: bool = False) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise SpecError(self.at(key), f"must be a boolean, not {_json_type(value)}")
        return value

    def integer(self, key: str, default: int, *, minimum: int = 0) -> int:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, int) or isinstance(value, bool):
            raise SpecError(self.at(key), f"must be an integer, not {_json_type(value)}")
        if value < minimum:
            raise SpecError(self.at(key), f"must be at least {minimum}")
        return value

    def enum(self, key: str, allowed: Sequence[str], default: str) -> str:
        value = self.string(key)
        if value is None:
            return default
        if value not in allowed:
            raise SpecError(self.at(key), f"{value!r} is not one of {', '.join(allowed)}")
        return value

    def duration(self, key: str, default: str) -> float:
        """Seconds; zero or negative durations are refused (they would spin or never wait)."""
        text = self.string(key) or default
        try:
            seconds = parse_duration(text)
        except ValueError:
            raise SpecError(
                self.at(key), f"{text!r} is not a duration like 10m, 5m30s or 1h"
            ) from None
        if seconds <= 0:
            raise SpecError(self.at(key), f"{text!r} must be longer than zero")
        return seconds


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _chart(chart: _Fields) -> ChartSpec:
    if chart.has("ref") and chart.has("repository"):
        raise SpecError(
            chart.path,
            "set either ref (an OCI chart) or repository (an HTTP chart repository), not both",
        )
    if chart.has("repository"):
        return _http_chart(chart)
    if not chart.has("ref"):
        raise SpecError(
            chart.at("ref"), "is required (or spec.chart.repository for an HTTP chart repository)"
        )
    for key in _HTTP_ONLY:
        if chart.has(key):
            raise SpecError(
                chart.at(key),
                "belongs to an HTTP repository chart (spec.chart.repository); "
                "spec.chart.ref names the chart itself",
            )
    for key in _HTTP_ONLY_FLAGS:
        if chart.boolean(key):
            raise SpecError(chart.at(key), "applies to spec.chart.repository charts only")
    ref = chart.required_string("ref")
    allow_tag = chart.boolean("allowTag")
    reference = ChartReference.parse(ref, field=chart.at("ref"))
    if reference.digest is None and not allow_tag:
        raise SpecError(
            chart.at("ref"),
            f"{ref!r} names a tag, not a digest; pin it with @sha256:<digest> "
            "or set spec.chart.allowTag: true",
        )
    cosign = chart.child("verify").child("cosign")
    return ChartSpec(
        ref=ref,
        reference=reference,
        allow_tag=allow_tag,
        secret_ref=chart.child("secretRef").string("name"),
        cert_secret_ref=chart.child("certSecretRef").string("name"),
        insecure=chart.boolean("insecure"),
        verify_cosign_secret=cosign.child("publicKeySecretRef").string("name"),
    )


def _http_chart(chart: _Fields) -> ChartSpec:
    repository = chart.required_string("repository")
    if not re.fullmatch(HTTP_REPOSITORY_PATTERN, repository):
        raise SpecError(
            chart.at("repository"),
            "must be an http:// or https:// URL without user info "
            "(credentials go in spec.chart.secretRef)",
        )
    for key in _OCI_ONLY_FLAGS:
        if chart.boolean(key):
            raise SpecError(chart.at(key), "applies to OCI charts (spec.chart.ref) only")
    if chart.has("verify"):
        raise SpecError(chart.at("verify"), "cosign verification applies to OCI charts only")
    name = chart.required_string("name")
    version = chart.required_string("version")
    allow_range = chart.boolean("allowVersionRange")
    digest = chart.string("digest")
    if digest is not None and not re.fullmatch(ARCHIVE_DIGEST_PATTERN, digest):
        raise SpecError(chart.at("digest"), "must be sha256:<64 lowercase hex digits>")
    if allow_range:
        if digest is not None:
            raise SpecError(
                chart.at("digest"),
                "cannot pin a version range; the range is resolved to a digest every interval",
            )
        try:
            VersionRange.parse(version)
        except VersionError as error:
            raise SpecError(chart.at("version"), str(error)) from None
    else:
        if not re.fullmatch(EXACT_VERSION_PATTERN, version):
            raise SpecError(
                chart.at("version"),
                f"{version!r} is not an exact version; "
                "set spec.chart.allowVersionRange: true for a range",
            )
        if digest is None:
            raise SpecError(
                chart.at("digest"),
                "is required unless spec.chart.allowVersionRange is true: the sha256 of the "
                "chart's .tgz, as sha256:<64 hex digits>",
            )
    return ChartSpec(
        ref="",
        reference=None,
        secret_ref=chart.child("secretRef").string("name"),
        cert_secret_ref=chart.child("certSecretRef").string("name"),
        http=HttpRepositoryChart(
            repository=repository,
            name=name,
            version=version,
            digest=digest,
            allow_version_range=allow_range,
            pass_credentials=chart.boolean("passCredentials"),
        ),
    )


def _values_reference(item: _Fields) -> ValuesReference:
    kind = item.enum("kind", VALUES_KINDS, default="")
    if not kind:
        raise SpecError(item.at("kind"), "is required")
    return ValuesReference(
        kind=kind,
        name=item.required_string("name"),
        values_key=item.string("valuesKey") or DEFAULT_VALUES_KEY,
        target_path=item.string("targetPath"),
        optional=item.boolean("optional"),
    )


def _remediation(remediation: _Fields, *, strategy: str | None = None) -> Remediation:
    """`strategy` fixed by the caller (install) or read from the spec (upgrade)."""
    return Remediation(
        retries=remediation.integer("retries", 0),
        strategy=strategy or remediation.enum("strategy", REMEDIATION_STRATEGIES, "rollback"),
    )


def _install(install: _Fields) -> InstallSpec:
    return InstallSpec(
        create_namespace=install.boolean("createNamespace"),
        crds=install.enum("crds", CRDS_POLICIES, "Create"),
        disable_hooks=install.boolean("disableHooks"),
        disable_wait=install.boolean("disableWait"),
        take_ownership=install.boolean("takeOwnership"),
        remediation=_remediation(install.child("remediation"), strategy="uninstall"),
        preview=install.boolean("preview"),
        approval=install.enum("approval", APPROVALS, "auto"),
    )


def _upgrade(upgrade: _Fields) -> UpgradeSpec:
    return UpgradeSpec(
        force_conflicts=upgrade.boolean("forceConflicts"),
        crds=upgrade.enum("crds", CRDS_POLICIES, "Skip"),
        disable_hooks=upgrade.boolean("disableHooks"),
        disable_wait=upgrade.boolean("disableWait"),
        take_ownership=upgrade.boolean("takeOwnership"),
        cleanup_on_fail=upgrade.boolean("cleanupOnFail"),
        force_replace=upgrade.boolean("forceReplace"),
        remediation=_remediation(upgrade.child("remediation")),
        preview=upgrade.boolean("preview"),
        approval=upgrade.enum("approval", APPROVALS, "auto"),
    )


def _drift_detection(drift: _Fields) -> DriftDetectionSpec:
    rules = []
    for rule in drift.objects("ignore"):
        paths = rule.strings("paths")
        if not paths:
            raise SpecError(rule.at("paths"), "must list at least one JSON pointer")
        target = None
        if rule.has("target"):
            selector = rule.child("target")
            target = DriftIgnoreTarget(
                group=selector.string("group"),
                version=selector.string("version"),
                kind=selector.string("kind"),
                name=selector.string("name"),
                namespace=selector.string("namespace"),
            )
        rules.append(DriftIgnoreRule(paths=paths, target=target))
    return DriftDetectionSpec(mode=drift.enum("mode", DRIFT_MODES, "disabled"), ignore=tuple(rules))


def _string_fields(fields: _Fields, names: Sequence[str]) -> dict[str, str]:
    """The string fields `names` of an object that are set; other fields are refused."""
    unknown = sorted(set(fields.data) - set(names))
    if unknown:
        raise SpecError(fields.at(unknown[0]), "is not a known field")
    return {name: value for name in names if (value := fields.string(name)) is not None}


def _kustomize(kustomize: _Fields) -> KustomizeSpec:
    patches = []
    for patch in kustomize.objects("patches"):
        entry: dict[str, Any] = {"patch": patch.required_string("patch")}
        if patch.has("target"):
            entry["target"] = _string_fields(patch.child("target"), _PATCH_TARGET_FIELDS)
        patches.append(entry)
    images = []
    for image in kustomize.objects("images"):
        image.required_string("name")
        images.append(_string_fields(image, _IMAGE_FIELDS))
    if not patches and not images:
        raise SpecError(kustomize.path, "must set patches or images")
    return KustomizeSpec(patches=tuple(patches), images=tuple(images))


def _wasm_limits(limits: _Fields) -> WasmLimits:
    timeout = limits.duration("timeout", "1s") if limits.has("timeout") else None
    raw_output = limits.data.get("maxOutputBytes")
    max_output = None
    if raw_output is not None:
        try:
            max_output = parse_size(str(raw_output))
        except ValueError as error:
            raise SpecError(limits.at("maxOutputBytes"), str(error)) from None
        if max_output <= 0:
            raise SpecError(limits.at("maxOutputBytes"), "must be more than zero")
    pages = limits.integer("memoryPages", 0, minimum=1) if limits.has("memoryPages") else None
    return WasmLimits(memory_pages=pages, timeout=timeout, max_output_bytes=max_output)


def _wasm(wasm: _Fields) -> WasmSpec:
    ref = wasm.required_string("ref")
    reference = ChartReference.parse(ref, field=wasm.at("ref"))
    if reference.digest is None:
        raise SpecError(wasm.at("ref"), f"{ref!r} names a tag; a plugin must be pinned by digest")
    config = wasm.data.get("config") or {}
    if not isinstance(config, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in config.items()
    ):
        raise SpecError(wasm.at("config"), "must be a map of strings")
    return WasmSpec(
        ref=ref,
        reference=reference,
        args=wasm.strings("args"),
        config=dict(config),
        manifests_encoding=wasm.enum("manifestsEncoding", MANIFEST_ENCODINGS, "text"),
        limits=_wasm_limits(wasm.child("limits")),
        secret_ref=wasm.child("secretRef").string("name"),
        cert_secret_ref=wasm.child("certSecretRef").string("name"),
        insecure=wasm.boolean("insecure"),
        verify_cosign_secret=wasm.child("verify")
        .child("cosign")
        .child("publicKeySecretRef")
        .string("name"),
    )


def _post_renderer(item: _Fields) -> PostRendererSpec:
    if item.has("kustomize") == item.has("wasm"):
        raise SpecError(item.path, "must set exactly one of kustomize and wasm")
    if item.has("kustomize"):
        return PostRendererSpec(kustomize=_kustomize(item.child("kustomize")))
    return PostRendererSpec(wasm=_wasm(item.child("wasm")))


def parse_spec(spec: Mapping[str, Any], *, name: str, namespace: str) -> HelmReleaseSpec:
    """The typed spec of HelmRelease `namespace/name`, defaults applied as the CRD does.

    Raises SpecError for what the schema cannot rule out (or an object stored before it).
    """
    fields = _Fields(spec, "spec")
    if not fields.has("chart"):
        raise SpecError("spec.chart", "is required")
    values = spec.get("values")
    if values is not None and not isinstance(values, Mapping):
        raise SpecError("spec.values", "must be an object")  # never echo values: may be secret
    release_name = fields.string("releaseName") or name
    if len(release_name) > MAX_RELEASE_NAME:  # objects stored before the CRD's rule existed
        raise SpecError(
            "spec.releaseName",
            f"the release name must be at most {MAX_RELEASE_NAME} characters; metadata.name "
            "is used when spec.releaseName is empty",
        )
    target_namespace = fields.string("targetNamespace") or namespace
    service_account = fields.string("serviceAccountName")
    test = fields.child("test")
    uninstall = fields.child("uninstall")
    kube_config = None
    if fields.has("kubeConfig"):
        secret = fields.child("kubeConfig").child("secretRef")
        kube_config = KubeConfigSpec(
            secret.required_string("name"), secret.string("key") or DEFAULT_KUBECONFIG_KEY
        )
    rollback = fields.child("rollback")
    return HelmReleaseSpec(
        chart=_chart(fields.child("chart")),
        release_name=release_name,
        target_namespace=target_namespace,
        storage_namespace=fields.string("storageNamespace") or target_namespace,
        values=copy.deepcopy(dict(values or {})),
        values_from=tuple(_values_reference(item) for item in fields.objects("valuesFrom")),
        interval=fields.duration("interval", DEFAULT_INTERVAL),
        timeout=fields.duration("timeout", DEFAULT_TIMEOUT),
        suspend=fields.boolean("suspend"),
        service_account_name=service_account,
        service_account_user=(
            f"system:serviceaccount:{namespace}:{service_account}" if service_account else None
        ),
        depends_on=tuple(
            DependencyReference(
                name=item.required_string("name"),
                namespace=item.string("namespace") or namespace,
            )
            for item in fields.objects("dependsOn")
        ),
        max_history=fields.integer("maxHistory", DEFAULT_MAX_HISTORY),
        kube_config=kube_config,
        install=_install(fields.child("install")),
        upgrade=_upgrade(fields.child("upgrade")),
        rollback=RollbackSpec(
            disable_hooks=rollback.boolean("disableHooks"),
            disable_wait=rollback.boolean("disableWait"),
        ),
        test=TestSpec(
            enable=test.boolean("enable"),
            timeout=test.duration("timeout", DEFAULT_TEST_TIMEOUT),
            ignore_failures=test.boolean("ignoreFailures"),
        ),
        uninstall=UninstallSpec(
            keep_history=uninstall.boolean("keepHistory"),
            disable_hooks=uninstall.boolean("disableHooks"),
            deletion_propagation=uninstall.enum(
                "deletionPropagation", DELETION_PROPAGATIONS, "background"
            ),
        ),
        drift_detection=_drift_detection(fields.child("driftDetection")),
        post_renderers=tuple(_post_renderer(item) for item in fields.objects("postRenderers")),
        post_render_strategy=fields.enum("postRenderStrategy", POST_RENDER_STRATEGIES, "combined"),
    )


# --- conditions ----------------------------------------------------------------------------


class ConditionType:
    """The condition types a HelmRelease reports (kstatus: Ready, Reconciling, Stalled)."""

    READY: Final = "Ready"
    RECONCILING: Final = "Reconciling"  # present (True) only while work is in progress
    STALLED: Final = "Stalled"  # present (True) only when nothing changes without a new spec
    RELEASED: Final = "Released"
    CONFLICTED: Final = "Conflicted"
    DRIFTED: Final = "Drifted"
    TEST_SUCCESS: Final = "TestSuccess"
    REMEDIATED: Final = "Remediated"


class Reason:
    """The reasons (CamelCase, as metav1.Condition requires) conditions carry."""

    PROGRESSING: Final = "Progressing"
    INSTALL_SUCCEEDED: Final = "InstallSucceeded"
    INSTALL_FAILED: Final = "InstallFailed"
    UPGRADE_SUCCEEDED: Final = "UpgradeSucceeded"
    UPGRADE_FAILED: Final = "UpgradeFailed"
    UNINSTALL_SUCCEEDED: Final = "UninstallSucceeded"
    UNINSTALL_FAILED: Final = "UninstallFailed"
    CHART_NOT_FOUND: Final = "ChartNotFound"
    DIGEST_MISMATCH: Final = "DigestMismatch"
    INVALID_MEDIA_TYPE: Final = "InvalidMediaType"
    VERIFICATION_FAILED: Final = "VerificationFailed"
    REGISTRY_UNAVAILABLE: Final = "RegistryUnavailable"
    REGISTRY_AUTH_FAILED: Final = "RegistryAuthFailed"
    CHART_TOO_LARGE: Final = "ChartTooLarge"
    VERSION_NOT_FOUND: Final = "VersionNotFound"
    VALUES_SOURCE_NOT_FOUND: Final = "ValuesSourceNotFound"
    RENDER_FAILED: Final = "RenderFailed"
    VALUES_INVALID: Final = "ValuesInvalid"
    APPLY_CONFLICT: Final = "ApplyConflict"
    RELEASE_OWNED_ELSEWHERE: Final = "ReleaseOwnedElsewhere"
    ACCESS_DENIED: Final = "AccessDenied"
    RETRIES_EXCEEDED: Final = "RetriesExceeded"
    DEPENDENCY_NOT_READY: Final = "DependencyNotReady"
    SUSPENDED: Final = "Suspended"
    INVALID_SPEC: Final = "InvalidSpec"
    NOT_IMPLEMENTED: Final = "NotImplemented"


CONDITION_STATUSES: Final = ("True", "False", "Unknown")
# metav1.Condition's limit on message; longer ones would make the API server refuse the write.
MAX_CONDITION_MESSAGE: Final = 32768


@dataclass(frozen=True)
class Condition:
    """One entry of status.conditions (the metav1.Condition shape)."""

    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str = ""
    observed_generation: int | None = None
    last_transition_time: str = ""  # RFC 3339, seconds; set_condition stamps it

    def to_status(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": self.last_transition_time,
        }
        if self.observed_generation is not None:
            entry["observedGeneration"] = self.observed_generation
        return entry

    @classmethod
    def from_status(cls, entry: Mapping[str, Any]) -> Condition:
        generation = entry.get("observedGeneration")
        return cls(
            type=str(entry.get("type", "")),
            status=str(entry.get("status", "Unknown")),
            reason=str(entry.get("reason", "")),
            message=str(entry.get("message", "")),
            observed_generation=generation if isinstance(generation, int) else None,
            last_transition_time=str(entry.get("lastTransitionTime", "")),
        )


def format_time(moment: datetime.datetime) -> str:
    """metav1.Time's wire form: RFC 3339 in UTC, whole seconds (naive means UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: Iterable[Condition], new: Condition, now: datetime.datetime
) -> list[Condition]:
    """`conditions` with `new` in place of its type (appended if absent).

    lastTransitionTime moves to `now` only when the status changes, so setting a condition
    that is already there yields a list equal to the input: callers compare to skip writes.
    """
    new = dataclasses.replace(new, message=new.message[:MAX_CONDITION_MESSAGE])
    result: list[Condition] = []
    found = False
    for condition in conditions:
        if condition.type != new.type:
            result.append(condition)
            continue
        if found:
            continue  # a duplicate of the type: the list is keyed by type
        found = True
        unchanged = condition.status == new.status and condition.last_transition_time
        since = condition.last_transition_time if unchanged else format_time(now)
        result.append(dataclasses.replace(new, last_transition_time=since))
    if not found:
        result.append(dataclasses.replace(new, last_transition_time=format_time(now)))
    return result


def remove_condition(conditions: Iterable[Condition], type_: str) -> list[Condition]:
    return [condition for condition in conditions if condition.type != type_]


def find_condition(conditions: Iterable[Condition], type_: str) -> Condition | None:
    return next((condition for condition in conditions if condition.type == type_), None)


def conditions_from_status(status: Mapping[str, Any] | None) -> list[Condition]:
    """The conditions stored in a status; malformed entries (no type) are skipped."""
    entries = (status or {}).get("conditions") or []
    return [
        Condition.from_status(entry)
        for entry in entries
        if isinstance(entry, Mapping) and entry.get("type")
    ]


def conditions_to_status(conditions: Iterable[Condition]) -> list[dict[str, Any]]:
    return [condition.to_status() for condition in conditions]

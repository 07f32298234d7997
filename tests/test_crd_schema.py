"""The HelmRelease CRD, read as a file: structural, documented, and in step with the model.

What the API server does with it (validation, defaulting, explain, printer columns) is
checked against a real one in e2e/test_crd_validation.py.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from rudder import model
from rudder.model import parse_spec

CRD_PATH = Path(__file__).resolve().parent.parent / "crds" / "helmreleases.rudder.dev.yaml"
DIGEST = "sha256:" + "0123456789abcdef" * 4
MINIMAL = {"chart": {"ref": f"oci://registry.example.com/charts/podinfo@{DIGEST}"}}
HTTP_MINIMAL = {
    "chart": {
        "repository": "https://charts.example.com/stable",
        "name": "podinfo",
        "version": "6.14.1",
        "digest": DIGEST,
    }
}

Schema = dict[str, Any]


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    loaded = yaml.safe_load(CRD_PATH.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def version(crd: dict[str, Any]) -> dict[str, Any]:
    versions = crd["spec"]["versions"]
    assert [v["name"] for v in versions] == ["v1alpha1"]
    result: dict[str, Any] = versions[0]
    return result


@pytest.fixture(scope="module")
def root(version: dict[str, Any]) -> Schema:
    result: Schema = version["schema"]["openAPIV3Schema"]
    return result


@pytest.fixture(scope="module")
def spec_schema(root: Schema) -> Schema:
    result: Schema = root["properties"]["spec"]
    return result


def walk(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    """Every schema node with its path: `.field` for properties, `[]` for items, `{}` for maps."""
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


def node_at(schema: Schema, path: str) -> Schema | None:
    """The node for `.a.b[].c` (a map's keys are names too), or None when there is none."""
    node: Schema | None = schema
    for name, is_item in re.findall(r"\.([^.\[]+)|(\[\])", path):
        if node is None:
            return None
        if is_item:
            node = node.get("items")
        elif name in node.get("properties", {}):
            node = node["properties"][name]
        else:
            node = node.get("additionalProperties")
            node = node if isinstance(node, dict) else None
    return node


def apply_defaults(value: Any, schema: Schema) -> Any:
    """Structural defaulting as the API server does it: a missing property takes its default,
    then the (possibly defaulted) value is defaulted in turn."""
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for name, child in properties.items():
            if name not in value and "default" in child:
                value[name] = copy.deepcopy(child["default"])
        for name, child in properties.items():
            if name in value:
                apply_defaults(value[name], child)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            apply_defaults(item, schema["items"])
    return value


def parse(spec: dict[str, Any]) -> model.HelmReleaseSpec:
    return parse_spec(spec, name="web", namespace="apps")


# --- identity -------------------------------------------------------------------------------


def test_names_scope_and_version(crd: dict[str, Any], version: dict[str, Any]) -> None:
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == "helmreleases.rudder.dev"
    assert crd["spec"]["group"] == "rudder.dev"
    assert crd["spec"]["scope"] == "Namespaced"
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["singular"]) == (
        "HelmRelease",
        "helmreleases",
        "helmrelease",
    )
    assert names["shortNames"] == ["rhr"]
    assert names["categories"] == ["rudder"]
    assert version["served"] is True
    assert version["storage"] is True
    assert version["subresources"] == {"status": {}}


def test_the_printer_columns_are_the_six_named(version: dict[str, Any]) -> None:
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns == {
        "Ready": '.status.conditions[?(@.type=="Ready")].status',
        "Status": '.status.conditions[?(@.type=="Ready")].message',
        "Revision": ".status.release.revision",
        "Chart": ".status.chart.nameVersion",
        "Digest": ".status.chart.shortDigest",
        "Age": ".metadata.creationTimestamp",
    }
    assert list(columns) == ["Ready", "Status", "Revision", "Chart", "Digest", "Age"]


def test_printer_columns_point_at_fields_the_status_schema_has(root: Schema) -> None:
    for path in (
        ".status.release.revision",
        ".status.chart.nameVersion",
        ".status.chart.shortDigest",
        ".status.conditions[].message",
        ".status.conditions[].status",
    ):
        assert node_at(root, path) is not None, path


# --- structural and documented --------------------------------------------------------------

JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "boolean": bool,
    "integer": int,
    "number": (int, float),
    "object": dict,
    "array": list,
}


def test_every_node_has_a_type(root: Schema) -> None:
    for path, node in walk(root):
        if node.get("x-kubernetes-int-or-string"):
            continue
        assert node.get("type") in JSON_TYPES, f"{path or '<root>'}"


def test_objects_say_what_they_hold(root: Schema) -> None:
    """An object with neither properties, additionalProperties nor preserve-unknown-fields
    would have everything in it pruned; only metadata is exempt (the server knows it)."""
    for path, node in walk(root):
        if node["type"] != "object" or path == ".metadata":
            continue
        kinds = [k for k in ("properties", "additionalProperties") if k in node]
        preserved = node.get("x-kubernetes-preserve-unknown-fields") is True
        assert len(kinds) == 1 or (preserved and not kinds), path


def test_arrays_have_item_schemas(root: Schema) -> None:
    for path, node in walk(root):
        if node["type"] == "array":
            assert isinstance(node.get("items"), dict), path


def test_required_fields_exist(root: Schema) -> None:
    for path, node in walk(root):
        for name in node.get("required", []):
            assert name in node.get("properties", {}), f"{path}.{name}"


def test_every_field_is_described_for_kubectl_explain(root: Schema) -> None:
    undocumented = [
        path
        for path, node in walk(root)
        if path not in {"", ".metadata"}
        and not path.endswith(("[]", "{}"))
        and not str(node.get("description", "")).strip()
    ]
    assert undocumented == []


def test_defaults_and_enums_fit_their_types(root: Schema) -> None:
    for path, node in walk(root):
        expected = JSON_TYPES[node["type"]]
        values = ([node["default"]] if "default" in node else []) + node.get("enum", [])
        for value in values:
            assert isinstance(value, expected), path
            if node["type"] == "integer":
                assert not isinstance(value, bool), path
        if "default" in node and "enum" in node:
            assert node["default"] in node["enum"], path
        if "default" in node and "pattern" in node:
            assert re.fullmatch(node["pattern"], node["default"]), path


def test_the_conditions_list_is_keyed_by_type(root: Schema) -> None:
    conditions = node_at(root, ".status.conditions")
    assert conditions is not None
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert "type" in conditions["items"]["required"]
    assert conditions["items"]["properties"]["status"]["enum"] == ["True", "False", "Unknown"]


def test_the_status_schema_is_explicit(root: Schema) -> None:
    status = [path for path, _ in walk(root) if path.startswith(".status")]
    assert status
    for path, node in walk(root):
        if path.startswith(".status"):
            assert not node.get("x-kubernetes-preserve-unknown-fields"), path


def test_values_are_free_form(spec_schema: Schema) -> None:
    values = spec_schema["properties"]["values"]
    assert values["type"] == "object"
    assert values["x-kubernetes-preserve-unknown-fields"] is True


def test_chart_and_one_of_its_forms_are_required(root: Schema, spec_schema: Schema) -> None:
    assert root["required"] == ["spec"]
    assert spec_schema["required"] == ["chart"]
    chart = spec_schema["properties"]["chart"]
    assert "required" not in chart  # ref or repository: a rule says which
    rules = [rule["rule"] for rule in chart["x-kubernetes-validations"]]
    assert rules[0] == "has(self.ref) != has(self.repository)"
    items = spec_schema["properties"]["valuesFrom"]["items"]
    assert sorted(items["required"]) == ["kind", "name"]


# --- every field DESIGN.md lists ------------------------------------------------------------

# The API example of DESIGN.md (rudder's design notes), as a user would write it.
DESIGN_EXAMPLE = f"""
spec:
  chart:
    ref: oci://registry.example.com/charts/podinfo@{DIGEST}
    allowTag: false
    secretRef: {{name: regcred}}
    certSecretRef: {{name: registry-ca}}
    insecure: false
    verify:
      cosign: {{publicKeySecretRef: {{name: cosign-pub}}}}
  releaseName: podinfo
  targetNamespace: apps
  storageNamespace: apps
  values: {{}}
  valuesFrom:
    - {{kind: ConfigMap, name: common, valuesKey: values.yaml, targetPath: "", optional: false}}
  interval: 10m
  timeout: 5m
  suspend: false
  serviceAccountName: ""
  dependsOn: [{{name: db, namespace: data}}]
  maxHistory: 10
  install:   {{createNamespace: false, crds: Create, disableHooks: false, disableWait: false,
              takeOwnership: false, remediation: {{retries: 0}}}}
  upgrade:   {{forceConflicts: false, crds: Skip, disableHooks: false, disableWait: false,
              takeOwnership: false, cleanupOnFail: false,
              remediation: {{retries: 0, strategy: rollback}}}}
  rollback:  {{disableHooks: false, disableWait: false}}
  test:      {{enable: false, timeout: 5m, ignoreFailures: false}}
  uninstall: {{keepHistory: false, disableHooks: false, deletionPropagation: background}}
  driftDetection:
    mode: disabled
    ignore: [{{paths: ["/spec/replicas"], target: {{kind: Deployment}}}}]
"""

# A status carrying every field the operator reports.
STATUS_EXAMPLE = f"""
observedGeneration: 3
conditions:
  - {{type: Ready, status: "True", reason: UpgradeSucceeded, message: Upgraded podinfo,
     observedGeneration: 3, lastTransitionTime: "2025-01-02T03:04:05Z"}}
chart: {{ref: "oci://registry.example.com/charts/podinfo@{DIGEST}", digest: "{DIGEST}",
        name: podinfo, version: 6.7.0, appVersion: 6.7.0, nameVersion: "podinfo:6.7.0",
        shortDigest: "sha256:0123456789ab", resolvedAt: "2025-01-02T03:04:05Z"}}
release: {{name: podinfo, namespace: apps, revision: 2, status: deployed,
          lastDeployed: "2025-01-02T03:04:05Z"}}
history:
  - {{revision: 2, chartDigest: "{DIGEST}", chartVersion: 6.7.0, valuesDigest: "sha256:ab",
     status: deployed, firstDeployed: "2025-01-01T00:00:00Z", lastDeployed: "2025-01-02T03:04:05Z"}}
conflicts:
  - {{apiVersion: apps/v1, kind: Deployment, namespace: apps, name: podinfo,
     field: .spec.replicas, manager: kubectl}}
resources:
  counts: {{Current: 3, InProgress: 1}}
  notReady:
    - {{apiVersion: apps/v1, kind: Deployment, namespace: apps, name: podinfo,
       status: InProgress, message: "1 of 2 replicas ready"}}
drift:
  - {{apiVersion: v1, kind: ConfigMap, namespace: apps, name: podinfo, fields: [/data/color]}}
failures: 1
installFailures: 0
upgradeFailures: 1
lastAttempted: {{generation: 3, chartDigest: "{DIGEST}", valuesDigest: "sha256:ab"}}
lastHandledRequestedAt: "2025-01-02T03:00:00Z"
"""


def leaf_paths(value: Any, path: str = "") -> Iterator[str]:
    if isinstance(value, dict) and value:
        for key, child in value.items():
            yield from leaf_paths(child, f"{path}.{key}")
    elif isinstance(value, list) and value:
        for item in value:
            yield from leaf_paths(item, f"{path}[]")
    else:
        yield path


def test_every_spec_field_of_the_design_exists(root: Schema) -> None:
    example = yaml.safe_load(DESIGN_EXAMPLE)
    paths = set(leaf_paths(example))
    assert len(paths) > 40
    missing = sorted(path for path in paths if node_at(root, path) is None)
    assert missing == []


def test_every_status_field_exists(root: Schema) -> None:
    paths = set(leaf_paths(yaml.safe_load(STATUS_EXAMPLE)))
    assert len(paths) > 45
    missing = sorted(path for path in paths if node_at(root, f".status{path}") is None)
    assert missing == []


def test_the_design_example_parses() -> None:
    spec = parse(yaml.safe_load(DESIGN_EXAMPLE)["spec"])
    assert spec.release_name == "podinfo"
    assert spec.drift_detection.ignore[0].paths == ("/spec/replicas",)


# --- one source of truth for defaults -------------------------------------------------------


def test_the_servers_defaults_are_the_parsers_defaults(spec_schema: Schema) -> None:
    defaulted = apply_defaults(copy.deepcopy(MINIMAL), spec_schema)
    assert defaulted["interval"] == "10m"  # the defaulting above did something
    assert defaulted["install"]["remediation"] == {"retries": 0}
    assert parse(defaulted) == parse(copy.deepcopy(MINIMAL))


def test_defaults_inside_list_items_agree_too(spec_schema: Schema) -> None:
    spec = {**MINIMAL, "valuesFrom": [{"kind": "Secret", "name": "db"}]}
    defaulted = apply_defaults(copy.deepcopy(spec), spec_schema)
    assert defaulted["valuesFrom"] == [
        {"kind": "Secret", "name": "db", "valuesKey": "values.yaml", "optional": False}
    ]
    assert parse(defaulted) == parse(spec)


# Optional spec fields the CRD leaves without a default, and why. Every other optional
# scalar has one, so the parser's defaults are all visible in objects read back.
NO_DEFAULT = {
    ".chart.ref": "one of ref and repository, a rule says",
    ".chart.repository": "one of ref and repository, a rule says",
    ".chart.name": "required with repository, a rule says",
    ".chart.version": "required with repository, a rule says",
    ".chart.digest": "required with repository unless allowVersionRange, a rule says",
    ".releaseName": "derived: metadata.name",
    ".targetNamespace": "derived: metadata.namespace",
    ".storageNamespace": "derived: targetNamespace",
    ".serviceAccountName": "absent means rudder's own identity",
    ".valuesFrom[].targetPath": "absent means merge at the root",
    ".dependsOn[].namespace": "derived: metadata.namespace",
    ".driftDetection.ignore[].target.group": "selector: absent matches all",
    ".driftDetection.ignore[].target.version": "selector: absent matches all",
    ".driftDetection.ignore[].target.kind": "selector: absent matches all",
    ".driftDetection.ignore[].target.name": "selector: absent matches all",
    ".driftDetection.ignore[].target.namespace": "selector: absent matches all",
    **{
        f".postRenderers[].kustomize.patches[].target.{name}": "selector: absent matches all"
        for name in model._PATCH_TARGET_FIELDS
    },
    **{
        f".postRenderers[].kustomize.images[].{name}": "kustomize: absent keeps the chart's"
        for name in ("newName", "newTag", "digest")
    },
    **{
        f".postRenderers[].wasm.limits.{name}": "absent: the plugin's, capped by the operator"
        for name in ("memoryPages", "timeout", "maxOutputBytes")
    },
}


def optional_scalars(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    required = set(schema.get("required", []))
    for name, child in schema.get("properties", {}).items():
        child_path = f"{path}.{name}"
        if child["type"] == "object":
            yield from optional_scalars(child, child_path)
        elif child["type"] == "array":
            if child["items"]["type"] == "object":
                yield from optional_scalars(child["items"], f"{child_path}[]")
        elif name not in required:
            yield child_path, child


def test_every_optional_setting_has_a_default_unless_derived(spec_schema: Schema) -> None:
    undefaulted = {path for path, node in optional_scalars(spec_schema) if "default" not in node}
    assert undefaulted == set(NO_DEFAULT)


def test_objects_holding_defaults_are_defaulted_themselves(spec_schema: Schema) -> None:
    """A default inside an absent object applies only if the object defaults to {}."""
    for name in ("install", "upgrade", "rollback", "test", "uninstall", "driftDetection"):
        assert spec_schema["properties"][name]["default"] == {}, name
    for name in ("install", "upgrade"):
        assert spec_schema["properties"][name]["properties"]["remediation"]["default"] == {}


def other_value(node: Schema) -> Any:
    """A valid value different from the node's default."""
    default = node["default"]
    if "enum" in node:
        return next(value for value in node["enum"] if value != default)
    if node["type"] == "boolean":
        return not default
    if node["type"] == "integer":
        return default + 1
    if node.get("pattern") == model.DURATION_PATTERN:
        return "17s"
    return f"other-{default}"


def set_path(spec: dict[str, Any], path: str, value: Any) -> None:
    """Set `.a.b[].c` in spec, stepping into the first item of lists."""
    target: Any = spec
    parts = re.findall(r"\.(\w+)(\[\])?", path)
    for index, (name, is_list) in enumerate(parts):
        last = index == len(parts) - 1
        if last:
            target[name] = value
        elif is_list:
            target = target[name][0]
        else:
            target = target.setdefault(name, {})


def test_the_parser_reads_every_defaulted_field(spec_schema: Schema) -> None:
    """Changing any defaulted field changes the parsed spec: none is ignored by the model."""
    base = {
        **MINIMAL,
        "valuesFrom": [{"kind": "ConfigMap", "name": "common"}],
        "driftDetection": {"ignore": [{"paths": ["/spec/replicas"]}]},
        "postRenderers": [{"wasm": {"ref": f"oci://registry.example.com/plugins/x@{DIGEST}"}}],
        "kubeConfig": {"secretRef": {"name": "remote"}},
    }
    defaulted = [
        (path, node)
        for path, node in walk(spec_schema)
        if "default" in node and node["default"] != {}
    ]
    assert len(defaulted) > 20
    # The HTTP repository's own fields are read on an HTTP chart (on an OCI one they are
    # refused); a version range is pinned by no digest.
    http_base = {**base, **copy.deepcopy(HTTP_MINIMAL)}
    for path, node in defaulted:
        http = path in (".chart.allowVersionRange", ".chart.passCredentials")
        before = http_base if http else base
        changed = copy.deepcopy(before)
        set_path(changed, path, other_value(node))
        if path == ".chart.allowVersionRange":
            del changed["chart"]["digest"]
        assert parse(changed) != parse(before), path


# --- the same rules as the model ------------------------------------------------------------


def test_duration_fields_use_the_models_pattern(spec_schema: Schema) -> None:
    durations = [
        path for path, node in walk(spec_schema) if node.get("pattern") == model.DURATION_PATTERN
    ]
    assert sorted(durations) == [
        ".interval",
        ".postRenderers[].wasm.limits.timeout",
        ".test.timeout",
        ".timeout",
    ]


def test_enums_match_the_models(spec_schema: Schema) -> None:
    def enum(path: str) -> tuple[str, ...]:
        node = node_at(spec_schema, path)
        assert node is not None, path
        return tuple(node["enum"])

    assert enum(".install.crds") == model.CRDS_POLICIES
    assert enum(".upgrade.crds") == model.CRDS_POLICIES
    assert enum(".upgrade.remediation.strategy") == model.REMEDIATION_STRATEGIES
    assert enum(".driftDetection.mode") == model.DRIFT_MODES
    assert enum(".uninstall.deletionPropagation") == model.DELETION_PROPAGATIONS
    assert enum(".valuesFrom[].kind") == model.VALUES_KINDS
    assert enum(".postRenderStrategy") == model.POST_RENDER_STRATEGIES
    assert enum(".postRenderers[].wasm.manifestsEncoding") == model.MANIFEST_ENCODINGS


def test_the_chart_ref_rules_use_the_models_patterns(spec_schema: Schema) -> None:
    every = spec_schema["properties"]["chart"]["x-kubernetes-validations"]
    rules = [rule for rule in every if rule.get("fieldPath") == ".ref"]
    patterns = [re.findall(r"matches\('([^']*)'\)", rule["rule"]) for rule in rules]
    assert patterns == [
        [model.TAG_OR_DIGEST_REF_PATTERN],
        [model.TAG_OR_DIGEST_REF_PATTERN, model.DIGEST_REF_PATTERN],
    ]
    for rule in rules:
        assert rule["fieldPath"] == ".ref"
        assert "spec.chart.ref" in rule["message"]
    assert "allowTag" in rules[1]["rule"]


def test_the_release_name_follows_helms_rules(root: Schema, spec_schema: Schema) -> None:
    release_name = spec_schema["properties"]["releaseName"]
    assert release_name["maxLength"] == 53
    helm_pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
    assert release_name["pattern"] == helm_pattern
    [rule] = root["x-kubernetes-validations"]
    assert "size(self.metadata.name) <= 53" in rule["rule"]
    assert "has(self.spec.releaseName)" in rule["rule"]
    assert "metadata.name" in rule["message"]


def test_the_http_repository_rules_use_the_models_patterns(spec_schema: Schema) -> None:
    chart = spec_schema["properties"]["chart"]
    properties = chart["properties"]
    assert properties["repository"]["pattern"] == model.HTTP_REPOSITORY_PATTERN
    assert properties["digest"]["pattern"] == model.ARCHIVE_DIGEST_PATTERN
    [version_rule] = [
        r for r in chart["x-kubernetes-validations"] if r.get("fieldPath") == ".version"
    ]
    assert re.findall(r"matches\('([^']*)'\)", version_rule["rule"]) == [
        model.EXACT_VERSION_PATTERN
    ]
    for pattern in (model.HTTP_REPOSITORY_PATTERN, model.EXACT_VERSION_PATTERN):
        assert "'" not in pattern  # it sits inside a CEL string literal
    assert "\\" not in model.EXACT_VERSION_PATTERN  # no escapes there either


def test_every_rule_names_the_fields_it_is_about(spec_schema: Schema) -> None:
    for rule in spec_schema["properties"]["chart"]["x-kubernetes-validations"]:
        assert "spec.chart" in rule["message"], rule["rule"]


def test_an_http_repository_example_parses() -> None:
    spec = parse(copy.deepcopy(HTTP_MINIMAL))
    assert spec.chart.http is not None
    assert spec.chart.http.digest == DIGEST
    assert spec.chart.reference is None

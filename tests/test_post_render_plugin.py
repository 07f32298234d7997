"""Post-renderer plugins as artifacts (plugin.yaml, archive, manifest) and as spec."""

from __future__ import annotations

import dataclasses
import io
import tarfile
from typing import Any

import pytest
import yaml

from rudder.chart.archive import ArchiveLimits
from rudder.chart.errors import INVALID_PLUGIN, ChartError
from rudder.chart.manifest import Descriptor, ImageManifest
from rudder.model import SpecError, parse_spec
from rudder.postrender.pipeline import inputs_digest
from rudder.postrender.plugin_artifact import (
    PLUGIN_ARTIFACT_TYPE,
    TITLE,
    parse_plugin_yaml,
    plugin_layer,
    unpack,
)

DIGEST = "sha256:" + "ab" * 32
LIMITS = ArchiveLimits(1024**2, 4 * 1024**2)
PLUGIN_YAML: dict[str, Any] = {
    "apiVersion": "v1",
    "name": "add-label",
    "type": "postrenderer/v1",
    "runtime": "extism/v1",
    "version": "0.1.0",
    "runtimeConfig": {"memory": {"maxPages": 300}, "timeout": 5000, "config": {"a": "b"}},
}


def archive(files: dict[str, bytes], links: tuple[str, ...] = ()) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name in links:
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = "plugin.wasm"
            tar.addfile(info)
    return out.getvalue()


def package(metadata: dict[str, Any] = PLUGIN_YAML, prefix: str = "add-label/") -> dict:
    return {
        f"{prefix}plugin.yaml": yaml.safe_dump(metadata).encode(),
        f"{prefix}plugin.wasm": b"\0asm\1\0\0\0",
    }


def test_helms_package_layout_unpacks_to_the_module_and_its_runtime_config() -> None:
    plugin = unpack(archive(package()), "add-label", DIGEST, LIMITS, "ref")
    assert (plugin.name, plugin.version, plugin.digest) == ("add-label", "0.1.0", DIGEST)
    assert plugin.wasm == b"\0asm\1\0\0\0"
    assert plugin.wasm_digest.startswith("sha256:")
    assert plugin.runtime.max_pages == 300
    assert plugin.runtime.timeout_ms == 5000
    assert plugin.runtime.config == {"a": "b"}
    assert plugin.runtime.entry == "helm_plugin_main"
    assert unpack(archive(package(prefix="")), "add-label", DIGEST, LIMITS, "ref").name


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"type": "cli/v1"}, "type: 'cli/v1'"),
        ({"runtime": "subprocess"}, "runtime: 'subprocess'"),
        ({"name": "other"}, "the last path component of the ref"),
        ({"apiVersion": "legacy"}, "apiVersion"),
        ({"version": ""}, "no version"),
        ({"runtimeConfig": {"timeout": "soon"}}, "runtimeConfig is malformed"),
        ({"runtimeConfig": {"entryFuncName": "../x"}}, "runtimeConfig is malformed"),
    ],
)
def test_only_extism_postrenderers_named_as_referenced_are_accepted(
    change: dict[str, Any], says: str
) -> None:
    text = yaml.safe_dump({**PLUGIN_YAML, **change}).encode()
    with pytest.raises(ChartError) as failure:
        parse_plugin_yaml(text, "add-label", "oci://r/p/add-label@x")
    assert failure.value.reason == INVALID_PLUGIN
    assert says in failure.value.message


@pytest.mark.parametrize(
    "files",
    [
        {"add-label/plugin.yaml": yaml.safe_dump(PLUGIN_YAML).encode()},
        {"../plugin.yaml": b"x", "add-label/plugin.wasm": b"x"},
    ],
    ids=["no-module", "climbs-out"],
)
def test_archives_without_a_module_or_with_unsafe_paths_are_refused(files: dict) -> None:
    with pytest.raises(ChartError) as failure:
        unpack(archive(files), "add-label", DIGEST, LIMITS, "ref")
    assert failure.value.reason == INVALID_PLUGIN
    assert not failure.value.retriable


def test_links_are_refused_even_inside_the_plugin() -> None:
    with pytest.raises(ChartError, match="is a link"):
        unpack(archive(package(), links=("add-label/alias",)), "add-label", DIGEST, LIMITS, "r")


def test_archives_over_the_size_limit_are_refused() -> None:
    big = package()
    big["add-label/plugin.wasm"] = bytes(range(256)) * 4096 * 8  # 8 MiB, incompressible-ish
    with pytest.raises(ChartError, match="limit"):
        unpack(archive(big), "add-label", DIGEST, LIMITS, "ref")


def layer(title: str, media_type: str = "application/vnd.oci.image.layer.v1.tar+gzip"):
    return Descriptor(media_type, DIGEST, 10, annotations={TITLE: title})


def manifest(*layers: Descriptor, artifact_type: str | None = PLUGIN_ARTIFACT_TYPE):
    config = Descriptor("application/vnd.oci.empty.v1+json", DIGEST, 2)
    return ImageManifest(
        "application/vnd.oci.image.manifest.v1+json", config, layers, artifact_type
    )


def test_the_plugin_layer_is_the_one_titled_name_version_tgz() -> None:
    wanted = layer("add-label-0.1.0.tgz")
    found = plugin_layer(manifest(layer("README.md"), wanted), "add-label", "ref")
    assert found == wanted
    legacy = dataclasses.replace(
        manifest(wanted, artifact_type=None),
        config=Descriptor(PLUGIN_ARTIFACT_TYPE, DIGEST, 2),
    )
    assert plugin_layer(legacy, "add-label", "ref") == wanted


@pytest.mark.parametrize(
    "bad",
    [
        manifest(
            layer("add-label-0.1.0.tgz"), artifact_type="application/vnd.cncf.helm.config.v1+json"
        ),
        manifest(layer("other-0.1.0.tgz")),
        manifest(layer("add-label-0.1.0.tgz", media_type="application/octet-stream")),
    ],
    ids=["a-chart", "another-plugin", "wrong-layer-type"],
)
def test_other_artifacts_are_not_plugins(bad: ImageManifest) -> None:
    with pytest.raises(ChartError) as failure:
        plugin_layer(bad, "add-label", "ref")
    assert failure.value.reason == INVALID_PLUGIN


# --- the spec -----------------------------------------------------------------------------

CHART = {"ref": f"oci://registry.example.com/charts/shop@{DIGEST}"}
WASM_REF = f"oci://registry.example.com/plugins/add-label@{DIGEST}"


def spec(**fields: Any):
    return parse_spec({"chart": CHART, **fields}, name="shop", namespace="team")


@pytest.mark.parametrize(
    ("post_renderers", "field"),
    [
        ([{}], "spec.postRenderers[0]"),
        (
            [{"kustomize": {"images": [{"name": "x"}]}, "wasm": {"ref": WASM_REF}}],
            "spec.postRenderers[0]",
        ),
        ([{"wasm": {"ref": WASM_REF.split("@")[0] + ":v1"}}], "spec.postRenderers[0].wasm.ref"),
        ([{"kustomize": {}}], "spec.postRenderers[0].kustomize"),
        (
            [{"kustomize": {"patches": [{"patch": "x", "target": {"kinds": "A"}}]}}],
            "spec.postRenderers[0].kustomize.patches[0].target.kinds",
        ),
        ([{"wasm": {"ref": WASM_REF, "config": {"a": 1}}}], "spec.postRenderers[0].wasm.config"),
        (
            [{"wasm": {"ref": WASM_REF, "limits": {"maxOutputBytes": "lots"}}}],
            "spec.postRenderers[0].wasm.limits.maxOutputBytes",
        ),
    ],
    ids=["empty", "both", "tag", "nothing-to-do", "unknown-target-field", "config-int", "size"],
)
def test_invalid_post_renderers_are_refused_naming_the_field(
    post_renderers: list, field: str
) -> None:
    with pytest.raises(SpecError) as failure:
        spec(postRenderers=post_renderers)
    assert failure.value.field == field


def test_the_inputs_digest_covers_post_renderers_and_nothing_else_changes() -> None:
    plain = spec()
    assert inputs_digest("sha256:values", plain) == "sha256:values"
    one = spec(postRenderers=[{"wasm": {"ref": WASM_REF, "args": ["a"]}}])
    other_args = spec(postRenderers=[{"wasm": {"ref": WASM_REF, "args": ["b"]}}])
    separate = spec(
        postRenderStrategy="separate", postRenderers=[{"wasm": {"ref": WASM_REF, "args": ["a"]}}]
    )
    digests = {inputs_digest("sha256:values", s) for s in (plain, one, other_args, separate)}
    assert len(digests) == 4
    assert inputs_digest("sha256:values", one) == inputs_digest("sha256:values", one)
    assert inputs_digest("sha256:other", one) != inputs_digest("sha256:values", one)


@pytest.mark.parametrize(
    ("runtime", "says"),
    [
        ({"hostFunctions": ["http_get"]}, "host functions"),
        ({"fileSystem": {"createTempDir": True}}, "temporary directory"),
        ({"memory": {"maxPages": True}}, "malformed"),
    ],
    ids=["host-functions", "filesystem", "bool-pages"],
)
def test_plugins_asking_for_what_the_sandbox_does_not_offer_are_refused(
    runtime: dict[str, Any], says: str
) -> None:
    text = yaml.safe_dump({**PLUGIN_YAML, "runtimeConfig": runtime}).encode()
    with pytest.raises(ChartError, match=says):
        parse_plugin_yaml(text, "add-label", "ref")

"""Guards the private native call rudder renders with: the options the Python signature of
helm-python-sdk does not expose (kube_version, api_versions) must still reach Helm's
engine. If an upgrade of the binding drops or renames them, this fails instead of rudder
silently rendering with Helm's built-in Capabilities."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import helm_python
import pytest
from helm_python import _native

from rudder.chart.render import RenderRequest, render_options

CAPS_TEMPLATE = """apiVersion: v1
kind: ConfigMap
metadata:
  name: caps
data:
  gitVersion: {{ .Capabilities.KubeVersion.GitVersion | quote }}
  hasWidget: {{ .Capabilities.APIVersions.Has "test.rudder.dev/v1/Widget" | quote }}
  revision: {{ .Release.Revision | quote }}
  isUpgrade: {{ .Release.IsUpgrade | quote }}
"""


@pytest.fixture(scope="module")
def chart(tmp_path_factory: pytest.TempPathFactory) -> helm_python.Chart:
    root = tmp_path_factory.mktemp("chart")
    helm_python.Chart.create("caps", root)
    templates = Path(root, "caps", "templates")
    shutil.rmtree(templates)
    templates.mkdir()
    (templates / "caps.yaml").write_text(CAPS_TEMPLATE)
    return helm_python.Chart.load(Path(root, "caps"))


def render(chart: helm_python.Chart, request: RenderRequest) -> str:
    out = json.loads(
        _native.call_string("helm_render", chart._raw(), None, json.dumps(render_options(request)))
    )
    return str(out["caps/templates/caps.yaml"])


def test_binding_version_is_the_pinned_one() -> None:
    assert helm_python.__version__ == "0.2.2"
    assert helm_python.helm_sdk_version() == "v4.2.3"


def test_kube_version_and_api_versions_reach_the_engine(chart: helm_python.Chart) -> None:
    request = RenderRequest(
        release_name="r",
        namespace="ns",
        revision=4,
        is_install=False,
        kube_version="v1.29.7",
        api_versions=["v1", "test.rudder.dev/v1", "test.rudder.dev/v1/Widget"],
    )
    text = render(chart, request)
    assert 'gitVersion: "v1.29.7"' in text
    assert 'hasWidget: "true"' in text
    assert 'revision: "4"' in text
    assert 'isUpgrade: "true"' in text


def test_an_api_version_not_passed_is_absent(chart: helm_python.Chart) -> None:
    request = RenderRequest("r", "ns", 1, True, "v1.29.7", ["v1"])
    assert 'hasWidget: "false"' in render(chart, request)


def test_unknown_options_are_rejected_not_ignored(chart: helm_python.Chart) -> None:
    # If the binding ever ignored unknown options, a renamed option would go unnoticed.
    with pytest.raises(helm_python.HelmError, match="unknown field"):
        _native.call_string("helm_render", chart._raw(), None, json.dumps({"kube_versionn": "x"}))

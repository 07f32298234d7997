"""A corpus of schema-valid but wrong HelmReleases, applied together with a healthy one.

Each wrong one must end with a condition that names its cause, leave nothing half-applied
or pending, and not disturb the healthy one; the operator's memory must stay bounded while
it serves a chart of 2,000 objects and a release too large for a Secret.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from charts import push, write_chart
from conftest import Cluster
from helpers import (
    apply_helmrelease,
    get_json,
    helmrelease,
    release_secrets,
    unique,
    wait_for_condition,
)
from operator_process import OperatorProcess

pytestmark = pytest.mark.e2e

CONFIG_MAP = """apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-settings
data:
  greeting: {{ required "values.greeting is required" .Values.greeting | quote }}
"""
# 2,000 small objects from one template.
MANY = """{{- range $i := until 2000 }}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ $.Release.Name }}-{{ $i }}
data:
  index: {{ $i | quote }}
{{- end }}
"""
# Two ConfigMaps that embed a file of random (incompressible) text: each fits in a
# ConfigMap, but the release (manifest plus the chart's own files) cannot fit in a Secret.
HUGE = """{{- range $i := until 2 }}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ $.Release.Name }}-blob-{{ $i }}
data:
  noise: {{ $.Files.Get "noise.txt" | quote }}
{{- end }}
"""
RSS_BOUND_MIB = 600


def push_non_chart(registry: str, repository: str) -> str:
    """An image-like OCI artifact (not a Helm chart); its digest-pinned reference."""

    def blob(data: bytes) -> dict[str, Any]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        start = urllib.request.Request(
            f"http://{registry}/v2/{repository}/blobs/uploads/", method="POST"
        )
        with urllib.request.urlopen(start) as response:  # noqa: S310 - loopback registry
            location = response.headers["Location"]
        if location.startswith("/"):
            location = f"http://{registry}{location}"
        separator = "&" if "?" in location else "?"
        upload = urllib.request.Request(  # noqa: S310 - the loopback registry's upload URL
            f"{location}{separator}digest={digest}",
            data=data,
            method="PUT",
            headers={"Content-Type": "application/octet-stream"},
        )
        urllib.request.urlopen(upload).close()  # noqa: S310
        return {"digest": digest, "size": len(data)}

    config = blob(json.dumps({"architecture": "amd64", "os": "linux"}).encode())
    layer = blob(b"not a chart at all")
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer}],
        }
    ).encode()
    put = urllib.request.Request(
        f"http://{registry}/v2/{repository}/manifests/v1",
        data=manifest,
        method="PUT",
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    urllib.request.urlopen(put).close()  # noqa: S310
    return f"oci://{registry}/{repository}@sha256:{hashlib.sha256(manifest).hexdigest()}"


def rss_mib(rudder: OperatorProcess) -> float:
    assert rudder.process is not None
    status = Path(f"/proc/{rudder.process.pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def spec(ref: str, **extra: Any) -> dict[str, Any]:
    return {"chart": {"ref": ref, "insecure": True}, "timeout": "180s", **extra}


@pytest.fixture(scope="module")
def refs(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("corpus-charts")
    small = write_chart(root / "small", "corpus", "1.0.0", {"settings.yaml": CONFIG_MAP}, {})
    many = write_chart(root / "many", "many", "1.0.0", {"many.yaml": MANY}, {})
    huge = write_chart(root / "huge", "huge", "1.0.0", {"huge.yaml": HUGE}, {})
    (huge / "noise.txt").write_text(base64.b64encode(os.urandom(600_000)).decode())
    small_ref = push(cluster.registry, small)
    return {
        "small": small_ref,
        "missing": small_ref.rsplit("@", 1)[0] + "@sha256:" + "0" * 64,
        "not-a-chart": push_non_chart(cluster.registry, "charts/not-a-chart"),
        "many": push(cluster.registry, many),
        "huge": push(cluster.registry, huge),
    }


def test_each_bad_input_gets_a_clear_condition_and_the_healthy_one_is_served(
    cluster: Cluster, rudder: OperatorProcess, refs: dict[str, str]
) -> None:
    ns = unique("corpus")
    cluster.kubectl("create", "namespace", ns)
    before = rss_mib(rudder)
    started = time.monotonic()
    cases: dict[str, dict[str, Any]] = {
        "missing-chart": spec(refs["missing"], values={"greeting": "x"}),
        "not-a-chart": spec(refs["not-a-chart"]),
        "broken-values": spec(refs["small"]),  # `greeting` is required by the template
        "huge-values": spec(
            refs["small"],
            values={"greeting": "big", "blob": base64.b64encode(os.urandom(450_000)).decode()},
        ),
        "many-objects": spec(refs["many"]),
        "too-large": spec(refs["huge"]),
        "healthy": spec(refs["small"], values={"greeting": "hello"}),
    }
    for name, case in cases.items():
        if name == "huge-values":  # too big for client-side apply's last-applied annotation
            cluster.kubectl("apply", "--server-side", "-f", "-", input=helmrelease(name, ns, case))
        else:
            apply_helmrelease(cluster, name, ns, case)

    expected_failures = {
        "missing-chart": ("ChartNotFound", "sha256:0000"),
        "not-a-chart": ("InvalidMediaType", "application/vnd.oci.image"),
        "broken-values": ("RenderFailed", "values.greeting is required"),
        "too-large": ("ReleaseTooLarge", "a release Secret holds at most 1 MiB"),
    }
    healthy = wait_for_condition(cluster, ns, "healthy", "Ready", timeout=120)
    assert healthy["status"]["release"]["revision"] == 1
    for name, (reason, words) in expected_failures.items():
        hr = wait_for_condition(cluster, ns, name, "Ready", status="False", reason=reason)
        ready = next(c for c in hr["status"]["conditions"] if c["type"] == "Ready")
        assert words in ready["message"], f"{name}: {ready['message']}"
        assert not release_secrets(cluster, ns, name), f"{name}: a release record was written"

    # Nothing of the release too large to record was applied.
    assert not get_json(cluster, "configmap", "too-large-blob-0", "-n", ns)
    huge_values = wait_for_condition(cluster, ns, "huge-values", "Ready", timeout=120)
    assert huge_values["status"]["release"]["status"] == "deployed"
    many = wait_for_condition(cluster, ns, "many-objects", "Ready", timeout=300)
    seconds = time.monotonic() - started
    listed = get_json(cluster, "configmaps", "-n", ns, "-l", "app.kubernetes.io/managed-by=Helm")
    names = {item["metadata"]["name"] for item in listed["items"]}
    assert {f"many-objects-{i}" for i in range(2000)} <= names
    assert many["status"]["release"]["revision"] == 1
    after = rss_mib(rudder)
    print(f"corpus: all settled in {seconds:.1f}s; operator RSS {before:.0f} -> {after:.0f} MiB")
    assert after < RSS_BOUND_MIB, f"operator RSS {after:.0f} MiB after the corpus"

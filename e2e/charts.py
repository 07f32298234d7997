"""Test charts, written as files and pushed to the local registry with helm-python-sdk."""

from __future__ import annotations

import hashlib
import json
import tempfile
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import helm_python
import yaml

WIDGET_CRD = """apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.test.rudder.dev
spec:
  group: test.rudder.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, listKind: WidgetList}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              x-kubernetes-preserve-unknown-fields: true
"""

APP_TEMPLATES = {
    "serviceaccount.yaml": """apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ .Release.Name }}
""",
    "configmap.yaml": """apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-config
data:
  greeting: {{ .Values.greeting | quote }}
  kubeVersion: {{ .Capabilities.KubeVersion.GitVersion | quote }}
""",
    "deployment.yaml": """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
  labels: {app: {{ .Release.Name }}}
spec:
  {{- if hasKey .Values "replicas" }}
  replicas: {{ .Values.replicas }}
  {{- end }}
  selector:
    matchLabels: {app: {{ .Release.Name }}}
  template:
    metadata:
      labels: {app: {{ .Release.Name }}}
    spec:
      serviceAccountName: {{ .Release.Name }}
      containers:
        - name: app
          image: {{ .Values.image | quote }}
          ports: [{containerPort: 8080}]
""",
    "service.yaml": """apiVersion: v1
kind: Service
metadata:
  name: {{ .Release.Name }}
spec:
  selector: {app: {{ .Release.Name }}}
  ports: [{port: 80, targetPort: 8080}]
""",
    "ingress.yaml": """apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {{ .Release.Name }}
spec:
  rules:
    - host: {{ .Release.Name }}.example.test
      http:
        paths:
          - path: /
            pathType: Prefix
            backend:
              service:
                name: {{ .Release.Name }}
                port: {number: 80}
""",
    "widget.yaml": """apiVersion: test.rudder.dev/v1
kind: Widget
metadata:
  name: {{ .Release.Name }}-widget
spec:
  size: {{ .Values.widgetSize }}
""",
    "NOTES.txt": "Thanks for installing {{ .Release.Name }}.\n",
}

APP_VALUES = {"greeting": "hello", "image": "example.test/app:1.0", "widgetSize": 1}


def write_chart(
    root: Path,
    name: str,
    version: str,
    templates: Mapping[str, str],
    values: Mapping[str, object],
    *,
    crds: Mapping[str, str] | None = None,
    schema: Mapping[str, object] | None = None,
) -> Path:
    chart = root / name
    (chart / "templates").mkdir(parents=True, exist_ok=True)
    (chart / "Chart.yaml").write_text(
        yaml.safe_dump(
            {"apiVersion": "v2", "name": name, "version": version, "appVersion": version}
        )
    )
    (chart / "values.yaml").write_text(yaml.safe_dump(dict(values)))
    for filename, text in templates.items():
        (chart / "templates" / filename).write_text(text)
    if crds:
        (chart / "crds").mkdir(exist_ok=True)
        for filename, text in crds.items():
            (chart / "crds" / filename).write_text(text)
    if schema is not None:
        (chart / "values.schema.json").write_text(json.dumps(schema))
    return chart


def push(registry: str, chart_dir: Path, repository: str = "charts") -> str:
    """Package and push; return the digest-pinned `oci://` reference."""
    with tempfile.TemporaryDirectory() as out:
        archive = helm_python.package(chart_dir, destination=out)
        with helm_python.RegistryClient(plain_http=True) as client:
            client.push(archive, f"oci://{registry}/{repository}")
    meta = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    name, version = meta["name"], meta["version"]
    request = urllib.request.Request(
        f"http://{registry}/v2/{repository}/{name}/manifests/{version}",
        method="GET",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    with urllib.request.urlopen(request) as response:  # noqa: S310 - loopback registry
        digest = "sha256:" + hashlib.sha256(response.read()).hexdigest()
    return f"oci://{registry}/{repository}/{name}@{digest}"


def app_chart(
    root: Path,
    version: str = "1.0.0",
    *,
    extra_templates: Mapping[str, str] | None = None,
    drop: tuple[str, ...] = (),
) -> Path:
    templates = {k: v for k, v in APP_TEMPLATES.items() if k not in drop}
    templates.update(extra_templates or {})
    return write_chart(
        root, "app", version, templates, APP_VALUES, crds={"widget.yaml": WIDGET_CRD}
    )

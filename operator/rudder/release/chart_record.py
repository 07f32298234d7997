"""The chart as Helm stores it inside a release record, built from the chart archive.

Helm's loader sorts an archive's entries into Chart.yaml (metadata), Chart.lock (lock),
values.yaml (values, parsed), values.schema.json (schema, raw bytes), templates/*
(templates) and everything else of the top-level chart (files, crds/ included); subcharts
under charts/ are not stored. Each file keeps the modification time of its tar entry.
Metadata and values come from Helm's own parse (helm-python-sdk), so they match the CLI's.
"""

from __future__ import annotations

import base64
import datetime
import io
import tarfile
from typing import Any

import helm_python
import yaml

from rudder.release.codec import Chart, GoTime, chart_from_json

_SPECIAL = {"Chart.yaml", "Chart.lock", "values.yaml", "values.schema.json"}


def _modtime(member: tarfile.TarInfo) -> str:
    stamp = datetime.datetime.fromtimestamp(member.mtime, tz=datetime.UTC)
    return GoTime.parse(stamp.isoformat().replace("+00:00", "Z")).format()


def _entries(archive: bytes) -> list[tuple[str, bytes, tarfile.TarInfo]]:
    """(path inside the chart, data, tar entry) for every regular file of the top chart."""
    out = []
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            _, _, inside = member.name.partition("/")  # strip the "<chart>/" prefix
            if not inside or inside.startswith("charts/"):
                continue
            handle = tar.extractfile(member)
            if handle is None:
                continue
            out.append((inside, handle.read(), member))
    return out


def chart_from_archive(archive: bytes, loaded: helm_python.Chart) -> Chart:
    templates: list[dict[str, Any]] = []
    files: list[dict[str, Any]] = []
    chart_json: dict[str, Any] = {
        "metadata": loaded.metadata,
        "lock": None,
        "templates": templates,
        "values": loaded.values,
        "schema": None,
        "files": files,
    }
    for name, data, member in _entries(archive):
        record = {
            "name": name,
            "data": base64.b64encode(data).decode(),
            "modtime": _modtime(member),
        }
        if name == "Chart.yaml":
            chart_json["modtime"] = record["modtime"]
        elif name == "Chart.lock":
            chart_json["lock"] = yaml.safe_load(data)
        elif name == "values.schema.json":
            chart_json["schema"] = record["data"]
            chart_json["schemamodtime"] = record["modtime"]
        elif name.startswith("templates/"):
            templates.append(record)
        elif name not in _SPECIAL:
            files.append(record)
    return chart_from_json(chart_json)

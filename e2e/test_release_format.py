"""The release format against the real Helm CLIs on the real control plane.

(a) A release the Helm 4 CLI installs: its Secret decodes, re-encodes byte for byte, and
    rudder's own split/sort/assemble of the same render gives the manifest, hooks and
    notes Helm stored.
(b) Release Secrets rudder writes: `helm list/history/get/status` of Helm 4 and Helm 3
    read them as Helm's own, and the Helm 4 CLI can upgrade on top of them.
"""

from __future__ import annotations

import base64
import gzip
import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import helm_python
import pytest

from conftest import Cluster
from rudder.chart.values import coalesce_values
from rudder.release.codec import (
    GoTime,
    HookExecution,
    Info,
    Release,
    chart_from_json,
    decode_release,
    go_json,
    release_from_json,
    release_from_secret,
    release_json,
    release_secret,
    release_to_json,
)
from rudder.release.manifest import (
    assemble_manifest,
    release_notes,
    sort_manifests,
    with_default_delete_policy,
)

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "releases"
CHART = FIXTURES / "showcase"
VALUES = FIXTURES / "showcase-values.json"
OWNER_LABEL = "rudder.dev/e2e-owner"


@pytest.fixture(scope="module")
def namespace(cluster: Cluster) -> Iterator[str]:
    name = f"release-format-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def release_secrets(cluster: Cluster, namespace: str, release: str) -> list[dict[str, Any]]:
    listed = cluster.kubectl(
        "get", "secrets", "-n", namespace, "-l", f"owner=helm,name={release}", "-o", "json"
    )
    items: list[dict[str, Any]] = json.loads(listed.stdout)["items"]
    return sorted(items, key=lambda item: int(item["metadata"]["labels"]["version"]))


def stored_json(secret: dict[str, Any]) -> bytes:
    """The release JSON inside a Secret: API base64, Helm's base64, gzip."""
    inner = base64.b64decode(secret["data"]["release"])
    return gzip.decompress(base64.b64decode(inner))


def render(values: dict[str, Any], name: str, namespace: str, revision: int) -> dict[str, str]:
    with helm_python.Chart.load(CHART) as chart:
        rendered: dict[str, str] = chart.render(
            values, name=name, namespace=namespace, revision=revision, is_install=revision == 1
        )
        return rendered


# --- (a) what the CLI writes ----------------------------------------------------------------


def test_a_cli_release_decodes_and_rudder_assembles_the_manifest_helm_stored(
    cluster: Cluster, namespace: str
) -> None:
    cluster.helm("install", "cli-made", str(CHART), "-n", namespace, "-f", str(VALUES))
    (secret,) = release_secrets(cluster, namespace, "cli-made")
    assert secret["type"] == "helm.sh/release.v1"
    assert secret["metadata"]["name"] == "sh.helm.release.v1.cli-made.v1"
    labels = secret["metadata"]["labels"]
    assert {k: labels[k] for k in ("name", "owner", "status", "version")} == {
        "name": "cli-made",
        "owner": "helm",
        "status": "deployed",
        "version": "1",
    }
    # Install creates the record (createdAt), then replaces it (modifiedAt, all labels anew).
    assert set(labels) == {"name", "owner", "status", "version", "modifiedAt"}

    raw = stored_json(secret)
    assert release_json(release_from_json(json.loads(raw))) == raw

    release = release_from_secret(secret)
    assert release == decode_release(base64.b64decode(secret["data"]["release"]).decode())
    assert (release.name, release.version, release.status) == ("cli-made", 1, "deployed")
    assert [hook.last_run.phase for hook in release.hooks] == ["Succeeded", "Succeeded"]

    values = json.loads(VALUES.read_text())
    rendered = render(values, "cli-made", namespace, 1)
    hooks, manifests = sort_manifests(rendered)
    assert assemble_manifest(manifests) == release.manifest
    # Running a hook records the default delete policy on it, as rudder's runner must too.
    assert [replace(h, last_run=HookExecution()) for h in release.hooks] == [
        with_default_delete_policy(hook) for hook in hooks
    ]
    assert release.info is not None
    assert release.info.notes == release_notes(rendered, "showcase")


# --- (b) what rudder writes -----------------------------------------------------------------


def showcase_chart() -> dict[str, Any]:
    """Helm's chart JSON for the showcase chart, from helm-python-sdk's view of it."""
    with helm_python.Chart.load(CHART) as chart:
        return {
            "metadata": chart.metadata,
            "lock": None,
            "templates": [
                {"name": t["name"], "data": base64.b64encode(t["data"].encode()).decode()}
                for t in chart.templates
            ],
            "values": chart.values,
            "schema": None,
            "files": None,
        }


def rudder_revision(
    namespace: str, version: int, config: dict[str, Any], status: str, description: str
) -> Release:
    rendered = render(config, "rudder-made", namespace, version)
    hooks, manifests = sort_manifests(rendered)
    first = GoTime(datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC), 789)
    return Release(
        name="rudder-made",
        version=version,
        namespace=namespace,
        info=Info(
            first_deployed=first,
            last_deployed=GoTime(datetime(2025, 3, version, 12, 30, tzinfo=UTC)),
            description=description,
            status=status,
            notes=release_notes(rendered, "showcase"),
        ),
        chart=chart_from_json(showcase_chart()),
        config=config,
        manifest=assemble_manifest(manifests),
        hooks=[
            replace(
                h, last_run=HookExecution(started_at=first, completed_at=first, phase="Succeeded")
            )
            for h in hooks
        ],
        apply_method="ssa",
    )


@pytest.fixture(scope="module")
def rudder_made(cluster: Cluster, namespace: str) -> list[Release]:
    revisions = [
        rudder_revision(namespace, 1, {"replicas": 1}, "superseded", "Install complete"),
        rudder_revision(
            namespace,
            2,
            {"replicas": 4, "greeting": "<hi> & 😀", "extra": {"name": None}},
            "deployed",
            "Upgrade complete",
        ),
    ]
    secrets = [
        release_secret(revision, extra_labels={OWNER_LABEL: "e2e"}, update=index == 0)
        for index, revision in enumerate(revisions)
    ]
    cluster.kubectl(
        "create",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": secrets}),
    )
    return revisions


@pytest.mark.parametrize("cli", ["helm", "helm3"])
def test_b_both_clis_list_and_show_history_of_rudders_release(
    cluster: Cluster, namespace: str, rudder_made: list[Release], cli: str
) -> None:
    listed = json.loads(cluster.run(cli, "list", "-n", namespace, "-o", "json").stdout)
    (entry,) = [item for item in listed if item["name"] == "rudder-made"]
    assert entry["namespace"] == namespace
    assert entry["revision"] == "2"
    assert entry["status"] == "deployed"
    assert entry["chart"] == "showcase-1.2.3"
    assert entry["app_version"] == "4.5"
    assert entry["updated"].startswith("2025-03-02 12:30:00")

    history = json.loads(
        cluster.run(cli, "history", "rudder-made", "-n", namespace, "-o", "json").stdout
    )
    assert [(h["revision"], h["status"], h["description"], h["chart"]) for h in history] == [
        (1, "superseded", "Install complete", "showcase-1.2.3"),
        (2, "deployed", "Upgrade complete", "showcase-1.2.3"),
    ]


@pytest.mark.parametrize("cli", ["helm", "helm3"])
def test_b_both_clis_get_values_manifest_notes_and_hooks_of_rudders_release(
    cluster: Cluster, namespace: str, rudder_made: list[Release], cli: str
) -> None:
    latest = rudder_made[-1]

    def get(*args: str) -> str:
        return cluster.run(cli, "get", *args, "rudder-made", "-n", namespace).stdout

    assert json.loads(get("values", "-o", "json")) == latest.config
    assert json.loads(get("values", "--revision", "1", "-o", "json")) == rudder_made[0].config
    assert latest.chart is not None
    assert latest.chart.values is not None
    computed = json.loads(get("values", "--all", "-o", "json"))
    assert computed == coalesce_values(latest.chart.values, latest.config)
    assert get("manifest") == latest.manifest + "\n"
    assert latest.info is not None
    assert get("notes").endswith(latest.info.notes + "\n")
    hooks_text = get("hooks")
    assert all(hook.manifest in hooks_text for hook in latest.hooks)


def test_b_helm4_status_re_encodes_rudders_release_byte_for_byte(
    cluster: Cluster, namespace: str, rudder_made: list[Release]
) -> None:
    # `helm status -o json` prints Helm's own encoding of the decoded record, chart stripped.
    status = cluster.helm("status", "rudder-made", "-n", namespace, "-o", "json").stdout
    expected = go_json(release_to_json(replace(rudder_made[-1], chart=None))) + b"\n"
    assert status.encode() == expected


def test_b_helm3_status_reads_rudders_release(
    cluster: Cluster, namespace: str, rudder_made: list[Release]
) -> None:
    status = json.loads(
        cluster.helm3("status", "rudder-made", "-n", namespace, "-o", "json").stdout
    )
    latest = rudder_made[-1]
    assert latest.info is not None
    assert (status["name"], status["version"], status["namespace"]) == ("rudder-made", 2, namespace)
    assert status["info"]["status"] == "deployed"
    assert status["info"]["notes"] == latest.info.notes
    assert status["info"]["first_deployed"] == "2025-03-01T12:00:00.123456789Z"
    assert status["config"] == latest.config
    assert status["manifest"] == latest.manifest


def test_b_the_helm4_cli_upgrades_on_top_of_rudders_release(
    cluster: Cluster, namespace: str, rudder_made: list[Release]
) -> None:
    cluster.helm("upgrade", "rudder-made", str(CHART), "-n", namespace, "--set", "replicas=2")
    revisions = [release_from_secret(s) for s in release_secrets(cluster, namespace, "rudder-made")]
    assert [(r.version, r.status) for r in revisions] == [
        (1, "superseded"),
        (2, "superseded"),
        (3, "deployed"),
    ]
    # Helm keeps the custom label it found on the record it upgraded from.
    assert revisions[2].labels == {OWNER_LABEL: "e2e"}
    assert revisions[2].config == {"replicas": 2}
    assert revisions[2].info is not None
    assert rudder_made[0].info is not None
    assert revisions[2].info.first_deployed == rudder_made[0].info.first_deployed
    history = json.loads(
        cluster.helm3("history", "rudder-made", "-n", namespace, "-o", "json").stdout
    )
    assert [h["status"] for h in history] == ["superseded", "superseded", "deployed"]

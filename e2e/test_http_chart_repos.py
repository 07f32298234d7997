"""Charts from classic HTTP chart repositories, installed by the real operator on the local
control plane and compared with the real Helm CLI (`helm repo add` + `helm install`).

The repositories are directories written by `helm package` and `helm repo index` and served
by e2e/chart_repo_server.py (aiohttp file responses: ETag, Last-Modified, 304s), one open
and one behind Basic auth. ChartMuseum, which the issue names, could not be built here: the
Go module proxy refuses every version of helm.sh/chartmuseum (and its storage module).
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from charts import APP_TEMPLATES, APP_VALUES, write_chart
from conftest import Cluster
from helpers import (
    apply_helmrelease,
    condition,
    get_json,
    release_secrets,
    unique,
    wait_for,
    wait_for_condition,
)
from localcluster import free_port
from operator_process import OperatorProcess
from test_tenant_chart_access import tenant, tenant_mode

pytestmark = pytest.mark.e2e

USER, PASSWORD = "chart-reader", "e2e-repo-password-7f3a"
TEMPLATES = {
    k: APP_TEMPLATES[k] for k in ("serviceaccount.yaml", "configmap.yaml", "deployment.yaml")
}
SERVER = Path(__file__).resolve().parent / "chart_repo_server.py"


@dataclass
class StaticRepo:
    """A directory of packaged charts and its index, served over HTTP."""

    root: Path
    url: str
    log: Path
    process: subprocess.Popen[bytes]

    def requests(self, path: str) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        lines = self.log.read_text().splitlines()
        return [entry for line in lines if (entry := json.loads(line))["path"] == path]


def _serve(root: Path, credentials: tuple[str, str] | None) -> StaticRepo:
    port = free_port()
    log = root.parent / f"{root.name}.log"
    argv = [sys.executable, str(SERVER), f"--root={root}", f"--port={port}", f"--log={log}"]
    if credentials:
        argv += [f"--user={credentials[0]}", f"--password={credentials[1]}"]
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            urllib.request.urlopen(f"{url}/index.yaml", timeout=1)  # noqa: S310 - loopback
        except urllib.error.HTTPError:
            return True  # 401 or 404: it answers
        except OSError:
            return False
        return True

    wait_for(up, timeout=20, what=f"the chart repository on {url}")
    return StaticRepo(root, url, log, process)


def publish(cluster: Cluster, repo: StaticRepo, name: str, version: str, greeting: str) -> str:
    """Package a chart into the repository with the Helm CLI, re-index; its sha256 digest."""
    values = {**APP_VALUES, "greeting": greeting}
    source = write_chart(
        repo.root.parent / f"src-{name}-{version}", name, version, TEMPLATES, values
    )
    cluster.helm("package", str(source), "-d", str(repo.root))
    cluster.helm("repo", "index", str(repo.root))
    archive = (repo.root / f"{name}-{version}.tgz").read_bytes()
    return "sha256:" + hashlib.sha256(archive).hexdigest()


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StaticRepo, StaticRepo]]:
    base = tmp_path_factory.mktemp("http-repos")
    (base / "open").mkdir()
    (base / "private").mkdir()
    open_repo = _serve(base / "open", None)
    private_repo = _serve(base / "private", (USER, PASSWORD))
    try:
        yield open_repo, private_repo
    finally:
        for repo in (open_repo, private_repo):
            repo.process.terminate()
            repo.process.wait(timeout=10)


def _secret(cluster: Cluster, namespace: str, name: str, data: dict[str, str]) -> None:
    manifest = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }
    cluster.kubectl("create", "namespace", namespace, check=False)
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def _spec(repo: StaticRepo, name: str, version: str, **chart: Any) -> dict[str, Any]:
    return {
        "chart": {"repository": repo.url, "name": name, "version": version, **chart},
        "values": {"greeting": "from-rudder"},
        "timeout": "90s",
    }


def _same_as_helm(cluster: Cluster, namespace: str, release: str, *install: str) -> None:
    """`helm install` of the same chart version and values stores the same manifest."""
    cli_namespace = f"{namespace}-cli"
    cluster.helm("install", release, *install, "-n", cli_namespace, "--create-namespace",
                 "--set", "greeting=from-rudder", "--wait", "--timeout", "90s")  # fmt: skip
    ours = cluster.helm("get", "manifest", release, "-n", namespace).stdout
    theirs = cluster.helm("get", "manifest", release, "-n", cli_namespace).stdout
    assert ours == theirs
    ours_meta = json.loads(cluster.helm("list", "-n", namespace, "-o", "json").stdout)
    theirs_meta = json.loads(cluster.helm("list", "-n", cli_namespace, "-o", "json").stdout)
    assert [r["chart"] for r in ours_meta] == [r["chart"] for r in theirs_meta]
    cluster.helm("uninstall", release, "-n", cli_namespace)


def test_a_pinned_chart_from_a_static_index_installs_as_helm_installs_it(
    cluster: Cluster, rudder: OperatorProcess, repos: tuple[StaticRepo, StaticRepo]
) -> None:
    repo, _ = repos
    name = f"web{uuid.uuid4().hex[:6]}"
    digest = publish(cluster, repo, name, "1.0.0", "v1")
    namespace = unique("http")
    apply_helmrelease(cluster, "web", namespace, _spec(repo, name, "1.0.0", digest=digest))

    hr = wait_for_condition(
        cluster, namespace, "web", "Ready", reason="InstallSucceeded", timeout=120
    )
    chart = hr["status"]["chart"]
    assert (chart["digest"], chart["version"], chart["name"]) == (digest, "1.0.0", name)
    assert chart["repository"] == repo.url
    assert chart["url"] == f"{repo.url}/{name}-1.0.0.tgz"
    assert "ref" not in chart
    assert hr["status"]["lastAttempted"]["chartDigest"] == digest
    config = get_json(cluster, "configmap", "web-config", "-n", namespace)
    assert config["data"]["greeting"] == "from-rudder"

    alias = f"open-{uuid.uuid4().hex[:6]}"
    cluster.helm("repo", "add", alias, repo.url)
    _same_as_helm(cluster, namespace, "web", f"{alias}/{name}", "--version", "1.0.0")


def test_a_version_range_behind_basic_auth_follows_new_versions(
    cluster: Cluster, rudder: OperatorProcess, repos: tuple[StaticRepo, StaticRepo]
) -> None:
    _, repo = repos
    name = f"api{uuid.uuid4().hex[:6]}"
    first = publish(cluster, repo, name, "1.0.0", "v1")
    namespace = unique("http-auth")
    _secret(cluster, namespace, "repo-auth", {"username": USER, "password": "wrong-password-1"})
    spec = _spec(repo, name, "^1", allowVersionRange=True, secretRef={"name": "repo-auth"})
    apply_helmrelease(cluster, "api", namespace, {**spec, "interval": "3s"})

    # Wrong password: retried, said plainly, the password nowhere.
    hr = wait_for_condition(cluster, namespace, "api", "Ready", status="False",
                            reason="RegistryAuthFailed", timeout=60)  # fmt: skip
    assert condition(hr, "Stalled").get("status") != "True"
    assert "refused the credentials of spec.chart.secretRef" in condition(hr, "Ready")["message"]
    seen = json.dumps(hr) + cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    assert "wrong-password-1" not in seen
    assert release_secrets(cluster, namespace, "api") == []

    _secret(cluster, namespace, "repo-auth", {"username": USER, "password": PASSWORD})
    hr = wait_for_condition(
        cluster, namespace, "api", "Ready", reason="InstallSucceeded", timeout=120
    )
    assert (hr["status"]["chart"]["version"], hr["status"]["chart"]["digest"]) == ("1.0.0", first)

    # A new version inside the range is published: the next interval upgrades to it.
    second = publish(cluster, repo, name, "1.1.0", "v2")
    publish(cluster, repo, name, "2.0.0", "v3")  # outside the range

    def upgraded() -> dict[str, Any] | None:
        current = get_json(cluster, "helmrelease", "api", "-n", namespace)
        chart = current.get("status", {}).get("chart", {})
        ready = condition(current, "Ready")
        if chart.get("digest") == second and ready.get("status") == "True":
            return current
        return None

    hr = wait_for(upgraded, timeout=120, what="the range to move to 1.1.0")
    assert hr["status"]["chart"]["version"] == "1.1.0"
    assert hr["status"]["chart"]["url"] == f"{repo.url}/{name}-1.1.0.tgz"
    assert hr["status"]["release"]["revision"] == 2

    # The index is revalidated, not downloaded again: the server answers 304s.
    def revalidated() -> bool:
        return any(r["status"] == 304 for r in repo.requests("/index.yaml"))

    wait_for(revalidated, timeout=60, interval=1, what="a 304 for index.yaml")
    assert all(r["authorization"] for r in repo.requests("/index.yaml") if r["status"] != 401)

    alias = f"private-{uuid.uuid4().hex[:6]}"
    cluster.helm("repo", "add", alias, repo.url, "--username", USER, "--password", PASSWORD)
    _same_as_helm(cluster, namespace, "api", f"{alias}/{name}", "--version", "^1")


def test_chart_failures_name_their_reason_and_install_nothing(
    cluster: Cluster, rudder: OperatorProcess, repos: tuple[StaticRepo, StaticRepo]
) -> None:
    repo, _ = repos
    name = f"bad{uuid.uuid4().hex[:6]}"
    digest = publish(cluster, repo, name, "1.0.0", "v1")
    other = "sha256:" + "0" * 64
    namespace = unique("http-bad")
    cases = {
        "mismatch": (_spec(repo, name, "1.0.0", digest=other), "DigestMismatch", True),
        "no-version": (_spec(repo, name, "^5", allowVersionRange=True), "VersionNotFound", False),
        "no-chart": (_spec(repo, "absent", "1.0.0", digest=digest), "ChartNotFound", False),
    }
    for release, (spec, _, _) in cases.items():
        apply_helmrelease(cluster, release, namespace, spec)
    started = time.monotonic()
    for release, (_, reason, stalled) in cases.items():
        hr = wait_for_condition(cluster, namespace, release, "Ready", status="False",
                                reason=reason, timeout=60)  # fmt: skip
        assert (condition(hr, "Stalled").get("status") == "True") == stalled, release
        assert release_secrets(cluster, namespace, release) == []
    assert time.monotonic() - started < 60


def test_in_tenant_mode_a_cached_archive_needs_the_tenants_own_access(
    cluster: Cluster,
    rudder: OperatorProcess,
    repos: tuple[StaticRepo, StaticRepo],
    tmp_path: Path,
) -> None:
    """The owner's chart is cached by its digest; another tenant naming that digest gets it
    neither without the repository's credentials nor through an index of its own that
    claims the digest for other bytes."""
    open_repo, private = repos
    name = f"sec{uuid.uuid4().hex[:6]}"
    digest = publish(cluster, private, name, "1.0.0", "private")
    # The other tenant's repository: an index claiming the private digest for its own bytes.
    decoy = open_repo.root / f"decoy-{name}"
    decoy.mkdir()
    publish(cluster, open_repo, name, "1.0.0", "decoy")
    (open_repo.root / f"{name}-1.0.0.tgz").rename(decoy / "chart.tgz")
    claim = {"name": name, "version": "1.0.0", "digest": digest.removeprefix("sha256:"),
             "urls": ["chart.tgz"], "apiVersion": "v2"}  # fmt: skip
    index = {"apiVersion": "v1", "entries": {name: [claim]}}
    (decoy / "index.yaml").write_text(yaml.safe_dump(index))

    with tenant_mode(cluster, rudder, tmp_path):
        owner, other = tenant(cluster, "http-owner"), tenant(cluster, "http-other")
        try:
            _secret(cluster, owner, "repo-auth", {"username": USER, "password": PASSWORD})
            mine = _spec(private, name, "1.0.0", digest=digest, secretRef={"name": "repo-auth"})
            apply_helmrelease(cluster, "mine", owner, mine)
            wait_for_condition(cluster, owner, "mine", "Ready", timeout=120)  # now cached

            anonymous = _spec(private, name, "1.0.0", digest=digest)
            claimed = {
                **anonymous,
                "chart": {**anonymous["chart"], "repository": f"{open_repo.url}/{decoy.name}"},
            }
            attempts = {"anonymous": (anonymous, "RegistryAuthFailed"),
                        "claimed": (claimed, "DigestMismatch")}  # fmt: skip
            for release, (spec, _) in attempts.items():
                apply_helmrelease(cluster, release, other, spec)
            for release, (_, reason) in attempts.items():
                hr = wait_for_condition(cluster, other, release, "Ready", status="False",
                                        reason=reason, timeout=90)  # fmt: skip
                assert PASSWORD not in json.dumps(hr)
                assert release_secrets(cluster, other, release) == []
                assert not get_json(cluster, "configmap", f"{release}-config", "-n", other)
            assert (
                condition(get_json(cluster, "helmrelease", "mine", "-n", owner), "Ready")["status"]
                == "True"
            )
        finally:
            for namespace in (owner, other):
                cluster.kubectl("delete", "namespace", namespace, "--timeout=60s", check=False)

"""The status pages in a real browser: headless Chromium loads them from rudder's own server
(fed by a fake source of 2,000 HelmReleases, no cluster needed), takes screenshots into
artifacts/status-page.png (the overview), artifacts/status-page-release.png (one
release) and artifacts/status-page-preview.png (a release's preview), and dumps the DOM it
built — which must hold the hostile name and messages as text, with no script element and
the pages' own titles untouched.

Needs Debian's `chromium` package; skipped (with the reason) when no Chromium is installed.
"""

from __future__ import annotations

import asyncio
import datetime
import shutil
import struct
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp
import markupsafe
import pytest

from rudder.kube.ssa import ObjectRef
from rudder.observe import server
from rudder.observe.preview_page import PreviewView
from rudder.reconcile.preview_diff import CHANGED, REMOVED, ObjectChange, Preview

pytestmark = pytest.mark.timeout(300)

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
SCREENSHOT = ARTIFACTS / "status-page.png"
RELEASE_SHOT = ARTIFACTS / "status-page-release.png"
PREVIEW_SHOT = ARTIFACTS / "status-page-preview.png"
N = 2_000
WIDTH, HEIGHT = 1280, 900
PAYLOAD = "<script>document.title='pwned'</script>"
HOSTILE_NAME = f"evil{PAYLOAD}"
HOSTILE_MESSAGE = f"values rejected: {PAYLOAD}<b>bold?</b>"
DIGEST = "sha256:" + "3f" * 32
NOW = datetime.datetime.now(datetime.UTC)


def ago(minutes: float) -> str:
    return (NOW - datetime.timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def hr(
    namespace: str,
    name: str,
    conditions: list[dict[str, Any]],
    *,
    spec: dict[str, Any] | None = None,
    **status: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "rudder.dev/v1alpha1",
        "kind": "HelmRelease",
        "metadata": {"namespace": namespace, "name": name, "generation": 2},
        "spec": spec or {},
        "status": {"observedGeneration": 2, "conditions": conditions, **status},
    }


def cond(kind: str, status: str, reason: str = "", message: str = "") -> dict[str, Any]:
    return {"type": kind, "status": status, "reason": reason or kind, "message": message}


RELEASES = [
    hr(
        "apps",
        "podinfo",
        [cond("Ready", "True", "ReconciliationSucceeded", "Release reconciled: revision 3")],
        chart={"name": "podinfo", "version": "6.7.0", "digest": DIGEST},
        release={"revision": 3},
    ),
    hr(
        "data",
        "postgres",
        [
            cond("Ready", "Unknown", "Progressing", "Waiting for 1 of 5 objects to be Current"),
            cond("Reconciling", "True", "Progressing"),
        ],
        chart={"name": "postgresql", "version": "15.5.1", "digest": DIGEST},
        release={"revision": 7},
        resources={
            "notReady": [
                {
                    "kind": "StatefulSet",
                    "namespace": "data",
                    "name": "postgres",
                    "status": "InProgress",
                    "message": "Ready: 1/3",
                }
            ]
        },
    ),
    hr(
        "shop",
        "web",
        [
            cond("Ready", "False", "Conflict", "2 fields of 1 object are owned by other managers"),
            cond("Stalled", "True", "Conflict", "2 fields of 1 object are owned by other managers"),
        ],
        chart={"nameVersion": "web:1.2.3", "shortDigest": "sha256:0123456789ab"},
        release={"revision": 1},
        conflicts=[
            {
                "kind": "Deployment",
                "namespace": "shop",
                "name": "web",
                "field": ".spec.replicas",
                "manager": "kubectl-scale",
            },
            {
                "kind": "Deployment",
                "namespace": "shop",
                "name": "web",
                "field": '.spec.template.spec.containers[name="web"].image',
                "manager": "kubectl-set",
            },
        ],
    ),
    hr(
        "tenant-a",
        HOSTILE_NAME,
        [cond("Ready", "False", "RenderFailed", HOSTILE_MESSAGE), cond("Stalled", "True")],
        chart={"name": "tenant", "version": "0.1.0", "digest": DIGEST},
    ),
    hr("tenant-b", "paused", [cond("Ready", "True")], spec={"suspend": True}),
]

EVENTS: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("apps", "podinfo"): [
        {
            "type": "Normal",
            "reason": "UpgradeSucceeded",
            "message": "upgraded podinfo to revision 3",
            "lastTimestamp": ago(2),
        },
        {
            "type": "Warning",
            "reason": "UpgradeFailed",
            "message": "timed out waiting for Deployment apps/podinfo",
            "lastTimestamp": ago(14),
            "count": 2,
        },
    ],
    ("tenant-a", HOSTILE_NAME): [
        {
            "type": "Warning",
            "reason": "RenderFailed",
            "message": HOSTILE_MESSAGE,
            "lastTimestamp": ago(0.5),
        }
    ],
}


FILLER = [
    hr(
        f"team-{i % 40:02d}",
        f"service-{i:04d}",
        [cond("Ready", "True", "UpgradeSucceeded", f"Upgraded service-{i:04d} revision 2")],
        chart={"nameVersion": "service:2.0.0", "digest": DIGEST},
        release={"revision": 2},
    )
    for i in range(N - len(RELEASES))
]


class FakeSource:
    async def helmreleases(self) -> list[dict[str, Any]]:
        return RELEASES + FILLER

    async def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return EVENTS.get((namespace, name), [])

    async def preview(self, namespace: str, name: str) -> PreviewView | None:
        """An upgrade's preview, with a hostile value in a diff and a Secret in it."""
        deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}}
        objects = (
            ObjectChange(
                ObjectRef("v1", "ConfigMap", namespace, f"{name}-config"),
                CHANGED,
                {"data": {"greeting": "hello", "color": "blue", "motd": "welcome"}},
                {"data": {"greeting": PAYLOAD, "color": "blue", "motd": "welcome"}},
            ),
            ObjectChange(
                ObjectRef("apps/v1", "Deployment", namespace, name),
                CHANGED,
                {**deployment, "spec": {"replicas": 3}},
                {**deployment, "spec": {"replicas": 5}},
                conflicts=(".spec.replicas owned by kubectl-scale",),
            ),
            ObjectChange(
                ObjectRef("v1", "Secret", namespace, f"{name}-db"),
                CHANGED,
                {"data": {"password": "aHVudGVyMg=="}},
                {"data": {"password": "c3dvcmRmaXNo"}},
            ),
            ObjectChange(
                ObjectRef("v1", "Service", namespace, f"{name}-old"),
                REMOVED,
                {"spec": {"ports": [{"port": 80}]}},
            ),
        )
        preview = Preview("upgrade", 3, DIGEST, DIGEST, objects, ("Job/migrate (pre-upgrade)",))
        return preview.view(namespace, name)


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium installed (Debian package `chromium`)")


async def browse(binary: str, profile: Path, *args: str) -> bytes:
    """Run headless Chromium without blocking the loop that serves the page."""
    process = await asyncio.create_subprocess_exec(
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, stderr.decode(errors="replace")[-2000:]
    return stdout


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


async def test_status_page_screenshot_and_escaping(tmp_path: Path) -> None:
    binary = chromium()
    source = FakeSource()
    runner = await server.start("127.0.0.1:0", source, lambda: True, previews=source)
    base = f"http://127.0.0.1:{runner.port}"
    hostile_page = f"{base}/releases/tenant-a/{urllib.parse.quote(HOSTILE_NAME, safe='')}"
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{base}/") as response:
            assert response.status == 200
            raw = await response.text()
        # The raw HTML holds the hostile texts escaped, and no live <script> or <b> of theirs.
        assert "<script" not in raw.lower()
        assert str(markupsafe.escape(HOSTILE_NAME)) in raw
        assert len(raw.encode()) < 500_000

        ARTIFACTS.mkdir(exist_ok=True)
        for shot in (SCREENSHOT, RELEASE_SHOT, PREVIEW_SHOT):
            shot.unlink(missing_ok=True)
        window = f"--window-size={WIDTH},{HEIGHT}"
        await browse(binary, tmp_path / "p1", f"--screenshot={SCREENSHOT}", window, f"{base}/")
        dom = (await browse(binary, tmp_path / "p2", "--dump-dom", f"{base}/")).decode()
        await browse(binary, tmp_path / "p3", f"--screenshot={RELEASE_SHOT}", window, hostile_page)
        release_dom = (await browse(binary, tmp_path / "p4", "--dump-dom", hostile_page)).decode()
        conflicted = f"{base}/releases/shop/web"
        conflicted_dom = (await browse(binary, tmp_path / "p5", "--dump-dom", conflicted)).decode()
        previewed = f"{base}/releases/shop/web/preview"
        await browse(binary, tmp_path / "p6", f"--screenshot={PREVIEW_SHOT}", window, previewed)
        preview_dom = (await browse(binary, tmp_path / "p7", "--dump-dom", previewed)).decode()
    finally:
        await runner.stop()

    for shot in (SCREENSHOT, RELEASE_SHOT, PREVIEW_SHOT):
        data = shot.read_bytes()
        assert png_size(data) == (WIDTH, HEIGHT)
        assert len(data) > 20_000, f"{shot.name} suspiciously small ({len(data)} bytes)"

    # The overview: a compact table, what needs a look first, 100 rows of 2,000.
    assert "<script" not in dom.lower()
    assert "<title>rudder — HelmReleases</title>" in dom
    assert f"{N} total" in dom
    assert "page 1 of 20" in dom
    assert dom.count("<tr>") == 101
    assert dom.index("RenderFailed") < dom.index("service-0000")  # failed before ready
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom

    # A release page: the hostile texts as text, the title intact.
    assert "<script" not in release_dom.lower()
    assert "pwned" not in release_dom.split("</title>")[0].replace(
        "&lt;script&gt;document.title='pwned'&lt;/script&gt;", ""
    )
    # (the browser writes the apostrophes back as they are)
    assert "values rejected: &lt;script&gt;document.title='pwned'&lt;/script&gt;" in release_dom
    for text in ("kubectl-scale", "kubectl-set", ".spec.replicas", "Conflicts (2)"):
        assert text in conflicted_dom

    # The preview: diffs as text, coloured by line, a Secret's values never shown.
    assert "<script" not in preview_dom.lower()
    assert "upgrade to revision 3" in preview_dom
    assert '<span class="del">-  greeting: hello</span>' in preview_dom
    assert "+  greeting: &lt;script&gt;document.title='pwned'&lt;/script&gt;" in preview_dom
    assert '<span class="add">+  replicas: 5</span>' in preview_dom
    assert "conflict: .spec.replicas owned by kubectl-scale" in preview_dom
    assert "password: (secret value, changed)" in preview_dom
    assert "aHVudGVyMg" not in preview_dom
    assert "c3dvcmRmaXNo" not in preview_dom
    assert "Job/migrate (pre-upgrade)" in preview_dom

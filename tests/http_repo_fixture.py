"""A classic HTTP chart repository for tests: an aiohttp server on a free loopback port
serving files from memory with ETag / Last-Modified (and 304s), optionally behind Basic or
Bearer auth, recording every request it answers.

Import explicitly: `from http_repo_fixture import RepoServer, index_yaml, ...`.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from registry_fixture import package_chart, write_chart


@dataclass(frozen=True)
class Seen:
    path: str
    authorization: str | None
    if_none_match: str | None
    status: int


@dataclass
class RepoServer:
    basic: tuple[str, str] | None = None
    token: str | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    _modified: dict[str, float] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    port: int = 0

    async def start(self) -> RepoServer:
        app = web.Application()
        app.router.add_get("/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def put(self, path: str, data: bytes) -> None:
        self.files[path.lstrip("/")] = data
        self._modified[path.lstrip("/")] = time.time()

    def requests_for(self, path: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.path == path.lstrip("/")]

    def _authorized(self, header: str | None) -> bool:
        if self.basic is None and self.token is None:
            return True
        accepted = set()
        if self.basic is not None:
            pair = f"{self.basic[0]}:{self.basic[1]}".encode()
            accepted.add(f"Basic {base64.b64encode(pair).decode()}")
        if self.token is not None:
            accepted.add(f"Bearer {self.token}")
        return header in accepted

    async def _handle(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        authorization = request.headers.get("Authorization")
        if_none_match = request.headers.get("If-None-Match")

        def answer(response: web.Response) -> web.Response:
            self.seen.append(Seen(path, authorization, if_none_match, response.status))
            return response

        if not self._authorized(authorization):
            return answer(web.Response(status=401, headers={"WWW-Authenticate": "Basic"}))
        data = self.files.get(path)
        if data is None:
            return answer(web.Response(status=404))
        etag = f'"{hashlib.sha256(data).hexdigest()[:16]}"'
        modified = email.utils.formatdate(self._modified[path], usegmt=True)
        if if_none_match == etag:
            return answer(web.Response(status=304, headers={"ETag": etag}))
        headers = {"ETag": etag, "Last-Modified": modified}
        return answer(web.Response(body=data, headers=headers))


def index_yaml(entries: Sequence[Mapping[str, Any]]) -> bytes:
    """An index.yaml as `helm repo index` writes it (descriptions and all)."""
    charts: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        charts.setdefault(str(entry["name"]), []).append(
            {"apiVersion": "v2", "description": "A chart for tests", **entry}
        )
    return yaml.safe_dump(
        {"apiVersion": "v1", "entries": charts, "generated": "2026-01-01T00:00:00Z"}
    ).encode()


def chart_archive(root: Path, name: str, version: str, greeting: str = "hello") -> bytes:
    """A packaged chart whose ConfigMap says `greeting` (so versions differ in content)."""
    chart = write_chart(root, name, version)
    (chart / "values.yaml").write_text(f"greeting: {greeting}\n")
    return package_chart(chart, root / f"{name}-{version}-out").read_bytes()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

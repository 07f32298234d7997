"""A tiny in-memory OCI registry over HTTP, for checking the requests rudder makes where
Distribution 2.8 cannot serve them: the OCI 1.1 referrers API, and Bearer-token auth
through a token service. Everything else is tested against the real registry.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

OCI_INDEX = "application/vnd.oci.image.index.v1+json"


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


@dataclass
class FakeRegistry:
    manifests: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # ref -> body, type
    blobs: dict[str, bytes] = field(default_factory=dict)
    referrers: dict[str, bytes] | None = None  # digest -> index; None: no referrers API
    token_user: str | None = None  # set with token_password to demand Bearer tokens
    token_password: str | None = None
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._tokens: set[str] = set()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def add_blob(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.blobs[digest] = data
        return digest

    def add_manifest(self, body: bytes, media_type: str, tag: str | None = None) -> str:
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        self.manifests[digest] = (body, media_type)
        if tag is not None:
            self.manifests[tag] = (body, media_type)
        return digest

    def __enter__(self) -> FakeRegistry:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _authorized(self, header: str) -> bool:
        if self.token_user is None:
            return True
        return header.startswith("Bearer ") and header.removeprefix("Bearer ") in self._tokens

    def _issue_token(self, header: str) -> str | None:
        expected = f"{self.token_user}:{self.token_password}".encode()
        if header != "Basic " + base64.b64encode(expected).decode():
            return None
        token = f"token-{len(self._tokens)}"
        self._tokens.add(token)
        return token


def _handler(registry: FakeRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(url.query)
            registry.seen.append(Seen("GET", url.path, query, dict(self.headers.items())))
            if url.path == "/token":
                token = registry._issue_token(self.headers.get("Authorization", ""))
                if token is None:
                    self._send(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', "application/json")
                else:
                    self._send(200, json.dumps({"token": token}).encode(), "application/json")
                return
            if not registry._authorized(self.headers.get("Authorization", "")):
                realm = f"http://{registry.host}/token"
                self._send(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', "application/json",
                           {"Www-Authenticate": f'Bearer realm="{realm}",service="fake",'
                                                f'scope="repository:charts:pull"'})  # fmt: skip
                return
            parts = url.path.split("/")
            # /v2/<repo...>/<kind>/<reference>
            kind, reference = parts[-2], parts[-1]
            if kind == "manifests" and reference in registry.manifests:
                body, media_type = registry.manifests[reference]
                self._send(200, body, media_type)
            elif kind == "blobs" and reference in registry.blobs:
                self._send(200, registry.blobs[reference], "application/octet-stream")
            elif kind == "referrers" and registry.referrers is not None:
                empty = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})
                self._send(200, registry.referrers.get(reference, empty.encode()), OCI_INDEX)
            else:
                self._send(404, b'{"errors":[{"code":"NOT_FOUND"}]}', "application/json")

        def _send(
            self,
            status: int,
            body: bytes,
            content_type: str,
            headers: dict[str, str] | None = None,
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

    return Handler

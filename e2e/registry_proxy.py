"""A tiny HTTP proxy in front of a real registry, for tests: it records every request and,
when told to, flips one byte of the responses whose path matches (a tampering registry or
man in the middle).

    with RegistryProxy("127.0.0.1:5000") as proxy:
        ref = f"oci://{proxy.host}/charts/app@sha256:..."
        proxy.tamper = lambda path: "/blobs/" in path
        ...
        assert proxy.count("/blobs/") == 1

Plain HTTP to a plain-HTTP upstream only; GET and HEAD are enough for pulls.
"""

from __future__ import annotations

import http.client
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

# Headers that describe one hop or the body's framing; the proxy sets its own.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "te", "trailer",
     "upgrade", "proxy-authenticate", "proxy-authorization"}
)  # fmt: skip


class RegistryProxy:
    def __init__(self, upstream: str, port: int = 0) -> None:
        """Listen on 127.0.0.1:`port` (0: any free port; give the old one to "restart")."""
        self.upstream = upstream
        self.tamper: Callable[[str], bool] | None = None
        self._requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    @property
    def requests(self) -> list[tuple[str, str]]:
        """(method, path) of every request so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def count(self, pattern: str = "") -> int:
        """Requests whose path matches the regular expression `pattern`."""
        return sum(1 for _, path in self.requests if re.search(pattern, path))

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()

    def start(self) -> RegistryProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> RegistryProxy:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _record(self, method: str, path: str) -> None:
        with self._lock:
            self._requests.append((method, path))

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self._forward()

            def do_HEAD(self) -> None:
                self._forward()

            def log_message(self, format: str, *args: object) -> None:
                pass  # the request list is the log

            def _forward(self) -> None:
                proxy._record(self.command, self.path)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                headers["Host"] = proxy.upstream
                connection = http.client.HTTPConnection(proxy.upstream, timeout=30)
                try:
                    connection.request(self.command, self.path, headers=headers)
                    response = connection.getresponse()
                    body = response.read()
                except OSError:
                    self.send_error(502, "upstream unavailable")
                    return
                finally:
                    connection.close()
                if body and proxy.tamper is not None and proxy.tamper(self.path):
                    flipped = bytearray(body)
                    flipped[len(flipped) // 2] ^= 0x01
                    body = bytes(flipped)
                self.send_response(response.status, response.reason)
                for name, value in response.getheaders():
                    if name.lower() not in _HOP_BY_HOP:
                        self.send_header(name, value)
                length = response.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

        return Handler

"""A static chart repository for the e2e tests: a directory as `helm repo index` left it,
served over HTTP by aiohttp's file responses (their ETag, Last-Modified and 304 answers
are aiohttp's, not ours), optionally behind Basic auth. Every answer is logged as a JSON
line {path, status, authorization} so tests can see conditional requests and who got
credentials.

    python e2e/chart_repo_server.py --root DIR --port PORT --log FILE [--user U --password P]
"""

from __future__ import annotations

import argparse
import base64
import json
from pathlib import Path

from aiohttp import web


def make_app(root: Path, log: Path, credentials: tuple[str, str] | None) -> web.Application:
    expected = None
    if credentials is not None:
        pair = f"{credentials[0]}:{credentials[1]}".encode()
        expected = f"Basic {base64.b64encode(pair).decode()}"

    async def serve(request: web.Request) -> web.StreamResponse:
        if expected is not None and request.headers.get("Authorization") != expected:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="charts"'})
        path = (root / request.match_info["path"]).resolve()
        if not path.is_file() or root not in path.parents:
            return web.Response(status=404)
        return web.FileResponse(path)

    async def record(request: web.Request, response: web.StreamResponse) -> None:
        entry = {
            "path": request.path,
            "status": response.status,
            "authorization": "Authorization" in request.headers,
            "ifNoneMatch": request.headers.get("If-None-Match"),
        }
        with log.open("a") as out:
            out.write(json.dumps(entry) + "\n")

    app = web.Application()
    app.router.add_get("/{path:.*}", serve)
    app.on_response_prepare.append(record)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--user")
    parser.add_argument("--password")
    args = parser.parse_args()
    credentials = (args.user, args.password) if args.user else None
    app = make_app(args.root.resolve(), args.log, credentials)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()

"""GETs against classic HTTP chart repositories (blocking; run in worker threads).

A conditional GET for index.yaml (ETag / Last-Modified answered with 304), a bounded GET
for archives. Credentials are a Basic or Bearer Authorization header, sent only where the
caller says; requests drops it itself on a redirect to another host or to plain HTTP.
Every failure is a `ChartError` naming the URL without user info or query, never a
credential or the server's response body.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import requests

from rudder.chart import metrics
from rudder.chart.errors import (
    CHART_NOT_FOUND,
    CHART_TOO_LARGE,
    REGISTRY_AUTH_FAILED,
    REGISTRY_UNAVAILABLE,
    ChartError,
)
from rudder.chart.registry import BodyTooLarge, read_limited, ssl_reason
from rudder.chart.repo_index import display_url

_UNAUTHORIZED: Final = (401, 403)
_MISSING: Final = (404, 410)


@dataclass(frozen=True)
class RepoCredentials:
    """spec.chart.secretRef of an HTTP repository: username/password, or a bearer token."""

    username: str = field(default="", repr=False)
    password: str = field(default="", repr=False)
    token: str = field(default="", repr=False)

    def header(self) -> dict[str, str]:
        if self.token:
            return {"Authorization": f"Bearer {self.token}"}
        pair = f"{self.username}:{self.password}".encode()
        return {"Authorization": f"Basic {base64.b64encode(pair).decode()}"}


@dataclass(frozen=True)
class Transport:
    """How to reach a repository: credentials and the CA bundle to trust."""

    credentials: RepoCredentials | None = None
    ca_bundle: Path | None = None
    key: str = ""  # a hash of credentials and CA: what may share cached answers


# The whole request (connect and every read) may take this many per-read timeouts.
WHOLE_REQUEST_TIMEOUTS: Final = 4


@dataclass(frozen=True)
class Answer:
    body: bytes = field(repr=False)
    not_modified: bool = False
    etag: str | None = None
    last_modified: str | None = None


def get(
    url: str,
    transport: Transport,
    *,
    subject: str,
    max_bytes: int,
    timeout: float,
    send_credentials: bool,
    validators: Mapping[str, str] | None = None,
    what: str = "chart",
) -> Answer:
    """GET `url`: the body (at most `max_bytes`), or `not_modified` for a 304."""
    headers = {"Accept": "*/*", "User-Agent": "rudder"}
    if validators:
        headers.update(validators)
    if send_credentials and transport.credentials is not None:
        headers.update(transport.credentials.header())
    shown = display_url(url)

    def unavailable(why: str) -> ChartError:
        return ChartError(REGISTRY_UNAVAILABLE, f"{subject}: {shown} is unavailable: {why}")

    verify: bool | str = str(transport.ca_bundle) if transport.ca_bundle else True
    deadline = time.monotonic() + timeout * WHOLE_REQUEST_TIMEOUTS
    with requests.Session() as session:
        try:
            response = session.get(
                url, headers=headers, timeout=timeout, stream=True, verify=verify
            )
        except requests.exceptions.SSLError as error:
            raise unavailable(f"TLS verification failed ({ssl_reason(error)})") from None
        except requests.exceptions.Timeout:
            raise unavailable("the request timed out") from None
        except requests.exceptions.RequestException as error:
            raise unavailable(f"connection failed ({type(error).__name__})") from None
        except OSError as error:  # e.g. an unreadable CA bundle
            raise unavailable(f"cannot set up the connection ({error.strerror})") from None
        with response:
            status = response.status_code
            if status == 304 and validators:
                return Answer(b"", not_modified=True)
            if status in _UNAUTHORIZED:
                raise _auth_failed(subject, shown, status, transport, send_credentials)
            if status in _MISSING:
                raise ChartError(CHART_NOT_FOUND, f"{subject}: {shown} not found (HTTP {status})")
            if status != 200:
                raise unavailable(f"the server answered HTTP {status}")
            try:
                body = read_limited(response, max_bytes, deadline)
            except BodyTooLarge:
                flag = "--max-chart-size" if what == "chart" else "--max-index-size"
                raise ChartError(
                    CHART_TOO_LARGE,
                    f"{subject}: the {what} at {shown} is over the {max_bytes}-byte limit ({flag})",
                    retriable=what != "chart",
                ) from None
            except requests.exceptions.Timeout:
                raise unavailable("the response took too long to arrive") from None
            except requests.exceptions.RequestException as error:
                why = f"reading the response failed ({type(error).__name__})"
                raise unavailable(why) from None
            metrics.PULLED_BYTES.inc(len(body))
            return Answer(
                body,
                etag=response.headers.get("ETag"),
                last_modified=response.headers.get("Last-Modified"),
            )


def _auth_failed(
    subject: str, shown: str, status: int, transport: Transport, sent: bool
) -> ChartError:
    if transport.credentials is None:
        why = "requires credentials (set spec.chart.secretRef)"
    elif not sent:
        why = (
            "requires credentials, which go to a host other than the repository's only "
            "with spec.chart.passCredentials: true"
        )
    else:
        why = "refused the credentials of spec.chart.secretRef"
    return ChartError(REGISTRY_AUTH_FAILED, f"{subject}: {shown} {why} (HTTP {status})")

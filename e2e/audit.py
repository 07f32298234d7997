"""Read the API server's audit log: what did rudder's own ServiceAccount ask for?"""

from __future__ import annotations

import datetime
import json
import time
from dataclasses import dataclass
from pathlib import Path

RUDDER_USER = "system:serviceaccount:rudder-system:rudder"
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


@dataclass(frozen=True)
class Request:
    verb: str
    resource: str
    subresource: str
    namespace: str
    name: str
    dry_run: bool
    uri: str
    at: datetime.datetime
    code: int = 0  # the response's HTTP status (409: a create lost to another writer)

    @property
    def is_write(self) -> bool:
        return self.verb in WRITE_VERBS and not self.dry_run


def requests(audit_log: Path, *, user: str = RUDDER_USER, since: datetime.datetime | None = None,
             impersonated: bool = True) -> list[Request]:  # fmt: skip
    """Completed requests by `user` (also when it impersonated someone, unless told not to)."""
    out = []
    with audit_log.open() as lines:
        for line in lines:
            event = json.loads(line)
            if event.get("stage") != "ResponseComplete":
                continue
            if event.get("user", {}).get("username") != user:
                continue
            if not impersonated and event.get("impersonatedUser"):
                continue
            at = datetime.datetime.fromisoformat(
                event["requestReceivedTimestamp"].replace("Z", "+00:00")
            )
            if since is not None and at < since:
                continue
            ref = event.get("objectRef") or {}
            uri = event.get("requestURI", "")
            out.append(
                Request(
                    verb=event.get("verb", ""),
                    resource=ref.get("resource", ""),
                    subresource=ref.get("subresource", ""),
                    namespace=ref.get("namespace", ""),
                    name=ref.get("name", ""),
                    dry_run="dryRun=" in uri,
                    uri=uri,
                    at=at,
                    code=int((event.get("responseStatus") or {}).get("code") or 0),
                )
            )
    return out


def settle() -> None:
    """The audit backend writes in batches of at most one second: let the last one land."""
    time.sleep(2.5)


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)

"""The Lease bodies leader election writes."""

from __future__ import annotations

import aiohttp
import pytest

from rudder.kube.election import ElectionSettings, LeaderElector, lease_body

ME = ElectionSettings(namespace="rudder-system", name="rudder-leader", identity="me")


def existing(holder: str, transitions: int = 2) -> dict[str, object]:
    return {
        "metadata": {"name": "rudder-leader", "resourceVersion": "41"},
        "spec": {
            "holderIdentity": holder,
            "leaseTransitions": transitions,
            "acquireTime": "then",
            "leaseDurationSeconds": 15,
        },
    }


def test_a_new_lease_names_this_candidate() -> None:
    body = lease_body(ME, None, now="t")
    assert body["spec"] == {
        "holderIdentity": "me",
        "leaseDurationSeconds": 15,
        "renewTime": "t",
        "acquireTime": "t",
        "leaseTransitions": 0,
    }
    assert "resourceVersion" not in body["metadata"]


def test_taking_over_counts_a_transition_and_keeps_the_resource_version() -> None:
    body = lease_body(ME, existing("other"), now="t")
    assert body["spec"]["holderIdentity"] == "me"
    assert body["spec"]["leaseTransitions"] == 3
    assert body["spec"]["acquireTime"] == "t"
    assert body["metadata"]["resourceVersion"] == "41"


def test_renewing_keeps_the_acquire_time() -> None:
    body = lease_body(ME, existing("me"), now="later")
    assert body["spec"]["acquireTime"] == "then"
    assert body["spec"]["leaseTransitions"] == 2
    assert body["spec"]["renewTime"] == "later"


def test_release_frees_the_lease_at_once() -> None:
    body = lease_body(ME, existing("me"), now="t", release=True)
    assert body["spec"]["holderIdentity"] == ""
    assert body["spec"]["leaseDurationSeconds"] == 1


class Unreachable:
    """An API client whose every call fails the way aiohttp does when the API server
    drops the connection (not an OSError)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.calls = 0

    async def request(self, *args: object, **kwargs: object) -> dict[str, object]:
        self.calls += 1
        raise self.error


@pytest.mark.parametrize(
    "error",
    [aiohttp.ServerDisconnectedError(), aiohttp.ClientPayloadError("cut"), TimeoutError()],
)
async def test_a_dropped_connection_is_a_failed_attempt_not_a_crash(error: BaseException) -> None:
    kube = Unreachable(error)
    elector = LeaderElector(kube, ME)  # type: ignore[arg-type]
    assert await elector.try_acquire_or_renew() is False
    assert kube.calls == 1

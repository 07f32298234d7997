"""Which failures of an action are the API server's (retried, not counted as attempts)."""

from __future__ import annotations

import aiohttp
import pytest

from rudder.kube.client import ApiError
from rudder.reconcile.deploy import is_transient


@pytest.mark.parametrize("code", [429, 500, 502, 503, 504])
def test_server_side_failures_are_transient(code: int) -> None:
    assert is_transient(ApiError(code, {}, "PATCH", "/x"))


@pytest.mark.parametrize("code", [400, 403, 404, 409, 422])
def test_answers_about_what_was_sent_are_not(code: int) -> None:
    assert not is_transient(ApiError(code, {}, "PATCH", "/x"))


@pytest.mark.parametrize(
    "error",
    [
        aiohttp.ClientConnectionError("connection refused"),
        aiohttp.ServerDisconnectedError(),
        TimeoutError(),
        ConnectionResetError(),
    ],
)
def test_an_unreachable_api_server_is_transient(error: BaseException) -> None:
    assert is_transient(error)


def test_other_errors_are_not() -> None:
    assert not is_transient(ValueError("bad manifest"))

"""spec.kubeConfig's kubeconfig, read as data: one context, embedded credentials only."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from rudder.reconcile.clusters import KubeConfigError, display_server, parse_kubeconfig


def kubeconfig(user: dict[str, Any], cluster: dict[str, Any] | None = None) -> bytes:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "far", "cluster": cluster or {"server": "https://far.example:6443",
                                                        "certificate-authority-data": "Q0E="}},
                {"name": "other", "cluster": {"server": "https://other.example"}},
            ],
            "users": [{"name": "me", "user": user}, {"name": "them", "user": {"token": "x"}}],
            "contexts": [
                {"name": "far", "context": {"cluster": "far", "user": "me"}},
                {"name": "other", "context": {"cluster": "other", "user": "them"}},
            ],
            "current-context": "far",
        }
    ).encode()  # fmt: skip


def test_only_the_current_context_is_kept() -> None:
    parsed = parse_kubeconfig(kubeconfig({"token": "t"}), allow_exec=False)
    assert [c["name"] for c in parsed["clusters"]] == ["far"]
    assert [u["name"] for u in parsed["users"]] == ["me"]
    assert parsed["current-context"] == "far"


@pytest.mark.parametrize(
    ("user", "cluster", "words"),
    [
        ({"tokenFile": "/var/run/secrets/kubernetes.io/serviceaccount/token"}, None, "tokenFile"),
        ({"client-certificate": "/etc/cert", "client-key-data": "a"}, None, "client-certificate"),
        (
            {"token": "t"},
            {"server": "https://x", "certificate-authority": "/ca"},
            "certificate-authority",
        ),
        ({"exec": {"command": "/bin/sh"}}, None, "--allow-kubeconfig-exec"),
        ({"auth-provider": {"name": "oidc"}}, None, "auth-provider"),
        ({"token": "t", "as": "system:admin"}, None, "serviceAccountName"),
        ({"token": "t"}, {"certificate-authority-data": "Q0E="}, "no cluster with a server"),
    ],
)
def test_what_would_run_programs_or_read_rudders_files_is_refused(
    user: dict[str, Any], cluster: dict[str, Any] | None, words: str
) -> None:
    with pytest.raises(KubeConfigError, match=words) as refused:
        parse_kubeconfig(kubeconfig(user, cluster), allow_exec=False)
    assert refused.value.reason == "InvalidKubeConfig"
    assert refused.value.stalled


def test_exec_is_allowed_when_the_operator_says_so() -> None:
    parsed = parse_kubeconfig(kubeconfig({"exec": {"command": "aws"}}), allow_exec=True)
    assert parsed["users"][0]["user"]["exec"] == {"command": "aws"}


def test_garbage_is_refused_without_echoing_it() -> None:
    for data in (b"{not: yaml: at all", b"- a list", b"current-context: nowhere\n"):
        with pytest.raises(KubeConfigError) as refused:
            parse_kubeconfig(data, allow_exec=False)
        assert "not: yaml" not in refused.value.message


def test_a_server_is_shown_without_user_info() -> None:
    assert (
        display_server("https://me:pw@far.example:6443/k8s?x=1") == "https://far.example:6443/k8s"
    )

"""Credentials from a dockerconfigjson Secret, matched by registry host."""

from __future__ import annotations

import base64
import json

import pytest

from rudder.chart.dockerconfig import Credentials, DockerConfigError, credentials_for


def _config(auths: dict[str, object]) -> bytes:
    return json.dumps({"auths": auths}).encode()


def test_auth_field_is_decoded_and_matched_on_host_and_port() -> None:
    auth = base64.b64encode(b"robot:pa:ss").decode()  # passwords may contain ':'
    elsewhere = base64.b64encode(b"x:y").decode()
    config = _config(
        {
            "https://registry.example.com:5000/v2/": {"auth": auth},
            "registry.example.com": {"auth": elsewhere},
        }
    )
    assert credentials_for(config, "registry.example.com:5000") == Credentials("robot", "pa:ss")
    assert credentials_for(config, "other.example.com") is None


def test_username_and_password_fields_and_docker_hub_aliases() -> None:
    config = _config({"https://index.docker.io/v1/": {"username": "me", "password": "pw"}})
    assert credentials_for(config, "docker.io") == Credentials("me", "pw")
    assert credentials_for(config, "registry-1.docker.io") == Credentials("me", "pw")


def test_registry_token_is_kept_as_a_bearer_token() -> None:
    config = _config({"ghcr.io": {"registrytoken": "tok"}})
    assert credentials_for(config, "ghcr.io") == Credentials(registry_token="tok")


def test_secrets_never_show_in_repr_or_errors() -> None:
    credentials = credentials_for(_config({"h": {"username": "u", "password": "hunter2"}}), "h")
    assert "hunter2" not in repr(credentials)
    with pytest.raises(DockerConfigError) as caught:
        credentials_for(_config({"h": {"auth": "hunter2-not-base64!"}}), "h")
    assert "hunter2" not in str(caught.value)
    with pytest.raises(DockerConfigError) as caught:
        credentials_for(b'{"auths": {"h": "hunter2"', "h")
    assert "hunter2" not in str(caught.value)


def test_entry_without_usable_credentials_is_an_error() -> None:
    with pytest.raises(DockerConfigError, match="no username"):
        credentials_for(_config({"h": {"email": "a@b"}}), "h")

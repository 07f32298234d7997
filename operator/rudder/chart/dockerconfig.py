"""Registry credentials from a `kubernetes.io/dockerconfigjson` Secret's `.dockerconfigjson`.

Entries are matched on host[:port] the way the kubelet and Docker do: keys may carry a
scheme and a path (`https://index.docker.io/v1/`). An entry gives a username and password
(`auth` = base64 "user:password", or `username`/`password`) used for Basic auth or to
obtain a bearer token, or a `registrytoken` sent as a bearer token as is.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any, Final

_DOCKER_HUB_ALIASES: Final = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)


class DockerConfigError(ValueError):
    """The Secret's content is unusable; the message never quotes the content."""


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = field(default="", repr=False)
    registry_token: str = field(default="", repr=False)


def credentials_for(config_json: bytes, registry: str) -> Credentials | None:
    """The credentials the config holds for `registry` (host[:port]), or None."""
    try:
        document = json.loads(config_json)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise DockerConfigError("the secret's .dockerconfigjson is not valid JSON") from None
    if not isinstance(document, dict):
        raise DockerConfigError("the secret's .dockerconfigjson is not a JSON object")
    auths = document.get("auths", {})
    if not isinstance(auths, dict):
        raise DockerConfigError("the secret's .dockerconfigjson has no 'auths' map")
    wanted = _normal_host(registry)
    for key, entry in auths.items():
        if isinstance(key, str) and _normal_host(key) == wanted and isinstance(entry, dict):
            return _entry_credentials(entry, key)
    return None


def _normal_host(key: str) -> str:
    host = key.lower()
    for scheme in ("https://", "http://"):
        host = host.removeprefix(scheme)
    host = host.split("/", 1)[0]
    return "docker.io" if host in _DOCKER_HUB_ALIASES else host


def _entry_credentials(entry: dict[str, Any], key: str) -> Credentials:
    token = entry.get("registrytoken")
    if isinstance(token, str) and token:
        return Credentials(registry_token=token)
    username, password = entry.get("username"), entry.get("password")
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise DockerConfigError(f"the 'auth' of entry {key!r} is not base64") from None
        username, separator, password = decoded.partition(":")
        if not separator:
            raise DockerConfigError(f"the 'auth' of entry {key!r} is not 'user:password'")
    if not isinstance(username, str) or not isinstance(password, str) or not username:
        raise DockerConfigError(f"entry {key!r} has no username and password")
    return Credentials(username=username, password=password)

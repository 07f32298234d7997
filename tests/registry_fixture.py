"""A throwaway OCI registry for chart-source tests: Debian's docker-registry (CNCF
Distribution 2.8) on a free loopback port, optionally behind htpasswd auth or TLS, plus
helpers that push charts with helm-python-sdk and write raw OCI content.

Import explicitly: `from registry_fixture import LocalRegistry, push_chart, ...`.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import helm_python
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parent.parent
# The request-counting, byte-flipping proxy lives with the e2e helpers; share it.
if str(REPO / "e2e") not in sys.path:
    sys.path.append(str(REPO / "e2e"))

DOCKER_REGISTRY = shutil.which("docker-registry") or "/usr/bin/docker-registry"
TOOLS = Path(os.environ.get("RUDDER_CACHE", Path.home() / ".cache" / "rudder")) / "tools"
COSIGN = TOOLS / "cosign"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Tls:
    ca_pem: bytes
    cert: Path
    key: Path


def make_tls(directory: Path) -> Tls:
    """A private CA and a serving certificate for 127.0.0.1 it signed."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rudder test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "server.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Tls(
        ca_pem=ca.public_bytes(serialization.Encoding.PEM),
        cert=directory / "server.crt",
        key=directory / "server.key",
    )


class RegistryApi:
    """Raw access to a registry's HTTP API (any registry: throwaway or the cluster's)."""

    def __init__(
        self,
        host: str,
        *,
        user: str | None = None,
        password: str | None = None,
        ca_pem: bytes | None = None,
    ) -> None:
        self.host = host
        self.user = user
        self.password = password
        self.ca_pem = ca_pem

    @property
    def url(self) -> str:
        return f"{'https' if self.ca_pem else 'http'}://{self.host}"

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        all_headers = dict(headers or {})
        if self.user is not None and self.password is not None:
            token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            all_headers["Authorization"] = f"Basic {token}"
        request = urllib.request.Request(  # noqa: S310 - the test's own registry URL
            self.url + path, data=body, method=method, headers=all_headers
        )
        context = None
        if self.ca_pem is not None:
            context = ssl.create_default_context(cadata=self.ca_pem.decode())
        try:
            with urllib.request.urlopen(request, context=context) as response:  # noqa: S310
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def upload_blob(self, repository: str, data: bytes) -> str:
        digest = digest_of(data)
        status, headers, _ = self.request("POST", f"/v2/{repository}/blobs/uploads/")
        assert status == 202, status
        location = headers["Location"]
        separator = "&" if "?" in location else "?"
        path = location.removeprefix(self.url) + f"{separator}digest={digest}"
        status, _, body = self.request(
            "PUT", path, data, {"Content-Type": "application/octet-stream"}
        )
        assert status == 201, (status, body)
        return digest

    def put_manifest(
        self, repository: str, reference: str, body: bytes, media_type: str = OCI_MANIFEST
    ) -> str:
        status, _, answer = self.request(
            "PUT", f"/v2/{repository}/manifests/{reference}", body, {"Content-Type": media_type}
        )
        assert status == 201, (status, answer)
        return digest_of(body)

    def get_manifest(self, repository: str, reference: str) -> bytes:
        status, _, body = self.request(
            "GET",
            f"/v2/{repository}/manifests/{reference}",
            headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"},
        )
        assert status == 200, status
        return body


class LocalRegistry(RegistryApi):
    """A Distribution registry process; `stop()` and `start()` again keep port and data."""

    def __init__(
        self,
        directory: Path,
        *,
        user: str | None = None,
        password: str | None = None,
        tls: Tls | None = None,
    ) -> None:
        self.port = free_port()
        super().__init__(
            f"127.0.0.1:{self.port}",
            user=user,
            password=password,
            ca_pem=tls.ca_pem if tls else None,
        )
        self.directory = directory
        self.log = directory / "registry.log"
        self._process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        http: dict[str, object] = {"addr": self.host}
        if tls is not None:
            http["tls"] = {"certificate": str(tls.cert), "key": str(tls.key)}
        config: dict[str, object] = {
            "version": 0.1,
            "log": {"level": "info"},
            "storage": {
                "filesystem": {"rootdirectory": str(directory / "data")},
                "delete": {"enabled": True},
            },
            "http": http,
        }
        if user is not None and password is not None:
            hashed = subprocess.run(
                ["htpasswd", "-Bbn", user, password], check=True, capture_output=True, text=True
            ).stdout
            (directory / "htpasswd").write_text(hashed)
            config["auth"] = {"htpasswd": {"realm": "basic", "path": str(directory / "htpasswd")}}
        (directory / "config.yml").write_text(yaml.safe_dump(config))

    def start(self) -> LocalRegistry:
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [DOCKER_REGISTRY, "serve", str(self.directory / "config.yml")],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("docker-registry did not start listening")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None


# -- charts ----------------------------------------------------------------------------------


def write_chart(
    root: Path,
    name: str,
    version: str,
    *,
    app_version: str = "1.0",
    extra_files: Mapping[str, bytes] | None = None,
) -> Path:
    chart = root / f"{name}-{version}-src" / name
    (chart / "templates").mkdir(parents=True, exist_ok=True)
    (chart / "Chart.yaml").write_text(
        yaml.safe_dump(
            {"apiVersion": "v2", "name": name, "version": version, "appVersion": app_version}
        )
    )
    (chart / "values.yaml").write_text("greeting: hello\n")
    (chart / "templates" / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    )
    for relative, data in (extra_files or {}).items():
        (chart / relative).parent.mkdir(parents=True, exist_ok=True)
        (chart / relative).write_bytes(data)
    return chart


def package_chart(chart_dir: Path, destination: Path) -> Path:
    destination.mkdir(parents=True, exist_ok=True)
    return Path(helm_python.package(chart_dir, destination=destination))


def push_chart(registry: RegistryApi, chart_dir: Path, repository: str = "charts") -> str:
    """Package and push with helm-python-sdk; the digest-pinned `oci://` reference."""
    with tempfile.TemporaryDirectory() as out:
        archive = package_chart(chart_dir, Path(out))
        if registry.ca_pem is not None:
            # The binding ignores its TLS options on push (x509 errors even with
            # insecure_skip_tls_verify); write what helm would, through the raw API.
            meta = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
            config = json.dumps(meta).encode()
            push_artifact(
                registry, f"{repository}/{meta['name']}", meta["version"],
                config=config, config_media_type=HELM_CONFIG,
                layers=[(archive.read_bytes(), HELM_CHART)],
            )  # fmt: skip
        else:
            credentials = Path(out) / "registry.json"
            with helm_python.RegistryClient(
                plain_http=True, credentials_file=credentials
            ) as client:
                if registry.user is not None and registry.password is not None:
                    client.login(registry.host, registry.user, registry.password, plain_http=True)
                client.push(archive, f"oci://{registry.host}/{repository}")
    meta = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    path = f"{repository}/{meta['name']}"
    digest = digest_of(registry.get_manifest(path, meta["version"]))
    return f"oci://{registry.host}/{path}@{digest}"


def push_artifact(
    registry: RegistryApi,
    repository: str,
    tag: str,
    *,
    config: bytes,
    config_media_type: str,
    layers: list[tuple[bytes, str]],
) -> str:
    """Write any image manifest (for content helm would never push); its digest."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": config_media_type,
            "digest": registry.upload_blob(repository, config),
            "size": len(config),
        },
        "layers": [
            {"mediaType": media_type, "digest": registry.upload_blob(repository, data),
             "size": len(data)}
            for data, media_type in layers
        ],
    }  # fmt: skip
    return registry.put_manifest(repository, tag, json.dumps(manifest).encode())


PLUGIN_ARTIFACT_TYPE = "application/vnd.helm.plugin.v1+json"


def push_plugin(
    registry: RegistryApi,
    name: str,
    archive: bytes,
    version: str = "0.1.0",
    repository: str = "plugins",
) -> str:
    """A Helm 4 plugin archive as Helm lays plugins out in OCI (pkg/registry/plugin.go):
    artifactType, an empty config, one `<name>-<version>.tgz` layer. The pinned ref."""
    path = f"{repository}/{name}"
    config = b"{}"
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": PLUGIN_ARTIFACT_TYPE,
        "config": {
            "mediaType": "application/vnd.oci.empty.v1+json",
            "digest": registry.upload_blob(path, config),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": registry.upload_blob(path, archive),
                "size": len(archive),
                "annotations": {"org.opencontainers.image.title": f"{name}-{version}.tgz"},
            }
        ],
    }
    digest = registry.put_manifest(path, version, json.dumps(manifest).encode())
    return f"oci://{registry.host}/{path}@{digest}"


def docker_config(host: str, user: str, password: str) -> bytes:
    """A `.dockerconfigjson` as `kubectl create secret docker-registry` writes it."""
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    return json.dumps(
        {"auths": {host: {"username": user, "password": password, "auth": auth}}}
    ).encode()


# -- cosign ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CosignKey:
    private: Path
    public_pem: bytes


def _cosign_env(home: Path) -> dict[str, str]:
    return {**os.environ, "COSIGN_PASSWORD": "test-key-password", "HOME": str(home)}


def cosign_key_pair(directory: Path, cosign: Path = COSIGN) -> CosignKey:
    """`cosign generate-key-pair` (an encrypted ECDSA P-256 key and its cosign.pub)."""
    directory.mkdir(parents=True)
    subprocess.run(
        [str(cosign), "generate-key-pair"], cwd=directory, env=_cosign_env(directory),
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return CosignKey(directory / "cosign.key", (directory / "cosign.pub").read_bytes())


def cosign_sign(key: CosignKey, ref: str, signature_format: str, cosign: Path = COSIGN) -> None:
    """`cosign sign` with no transparency log, as rudder's key-based offline policy expects.

    `signature_format` "bundle" is cosign v3's default (a Sigstore bundle referrer);
    "legacy" is `--new-bundle-format=false` (the `.sig` tag)."""
    argv = [str(cosign), "sign", "--key", str(key.private), "--use-signing-config=false",
            "--tlog-upload=false", "--allow-insecure-registry", "-y"]  # fmt: skip
    if signature_format == "legacy":
        argv.append("--new-bundle-format=false")
    result = subprocess.run(
        [*argv, ref.removeprefix("oci://")],
        env=_cosign_env(key.private.parent), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr

"""Cosign signature checks of both formats, and the referrers-API lookup.

Signatures here are made in the test with `cryptography`, to reach the cases cosign would
never produce (a wrong predicate, a tampered payload). That real cosign output verifies
is shown in test_chart_cosign_cli.py, which signs with the cosign CLI.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fake_registry import FakeRegistry
from registry_fixture import HELM_CHART, HELM_CONFIG, OCI_MANIFEST, package_chart, write_chart
from rudder.chart.cosign import (
    BUNDLE_MEDIA_TYPE,
    COSIGN_SIGN_PREDICATE,
    SignatureRejected,
    dsse_pae,
    key_fingerprint,
    load_public_key,
    verify_bundle,
    verify_simple_signing,
)
from rudder.chart.errors import VERIFICATION_FAILED, ChartError
from rudder.chart.source import ChartRequest, ChartSource

DIGEST = "sha256:" + "1" * 64
OTHER = "sha256:" + "2" * 64


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> str:
    return base64.b64encode(key.sign(data, ec.ECDSA(hashes.SHA256()))).decode()


def _simple_signing_payload(digest: str) -> bytes:
    return json.dumps(
        {"critical": {"identity": {"docker-reference": "r/app"},
                      "image": {"docker-manifest-digest": digest},
                      "type": "cosign container image signature"}, "optional": None}
    ).encode()  # fmt: skip


def _bundle(
    key: ec.EllipticCurvePrivateKey,
    digest: str,
    *,
    predicate: str = COSIGN_SIGN_PREDICATE,
    sign_over_pae: bool = True,
) -> bytes:
    statement = json.dumps(
        {"_type": "https://in-toto.io/Statement/v1",
         "subject": [{"digest": {"sha256": digest.removeprefix("sha256:")}}],
         "predicateType": predicate, "predicate": {}}
    ).encode()  # fmt: skip
    payload_type = "application/vnd.in-toto+json"
    signed = dsse_pae(payload_type, statement) if sign_over_pae else statement
    return json.dumps(
        {"mediaType": BUNDLE_MEDIA_TYPE,
         "verificationMaterial": {"publicKey": {"hint": "x"}},
         "dsseEnvelope": {"payload": base64.b64encode(statement).decode(),
                          "payloadType": payload_type,
                          "signatures": [{"sig": _sign(key, signed)}]}}
    ).encode()  # fmt: skip


# -- the pure checks --------------------------------------------------------------------------


def test_dsse_pae_matches_the_specification_example() -> None:
    # DSSE protocol.md: PAE("http://example.com/HelloWorld", "hello world")
    assert dsse_pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_legacy_signature_of_this_digest_verifies() -> None:
    key = _key()
    payload = _simple_signing_payload(DIGEST)
    verify_simple_signing(payload, _sign(key, payload), DIGEST, load_public_key(_pem(key)))


def test_legacy_signature_refusals() -> None:
    key, stranger = _key(), _key()
    payload = _simple_signing_payload(DIGEST)
    public = load_public_key(_pem(key))
    with pytest.raises(SignatureRejected, match="does not verify"):
        verify_simple_signing(payload, _sign(stranger, payload), DIGEST, public)
    with pytest.raises(SignatureRejected, match="does not verify"):
        verify_simple_signing(payload + b" ", _sign(key, payload), DIGEST, public)
    other = _simple_signing_payload(OTHER)
    with pytest.raises(SignatureRejected, match=f"for {OTHER}"):
        verify_simple_signing(other, _sign(key, other), DIGEST, public)


def test_bundle_signed_over_pae_verifies() -> None:
    key = _key()
    verify_bundle(_bundle(key, DIGEST), DIGEST, load_public_key(_pem(key)))


@pytest.mark.parametrize(
    ("bundle_args", "message"),
    [
        ({"digest": OTHER}, f"about {OTHER}"),
        ({"predicate": "https://slsa.dev/provenance/v1"}, "predicate type"),
        ({"sign_over_pae": False}, "no signature in the DSSE envelope verifies"),
    ],
)
def test_bundle_refusals(bundle_args: dict[str, object], message: str) -> None:
    key = _key()
    args: dict[str, object] = {"digest": DIGEST} | bundle_args
    bundle = _bundle(key, **args)  # type: ignore[arg-type]
    with pytest.raises(SignatureRejected, match=message):
        verify_bundle(bundle, DIGEST, load_public_key(_pem(key)))


def test_a_bundle_checked_with_another_key_is_refused() -> None:
    with pytest.raises(SignatureRejected, match="verifies"):
        verify_bundle(_bundle(_key(), DIGEST), DIGEST, load_public_key(_pem(_key())))


def test_only_ecdsa_p256_public_keys_are_accepted() -> None:
    rsa_pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ValueError, match="P-256"):
        load_public_key(rsa_pem)
    with pytest.raises(ValueError, match="PEM"):
        load_public_key(b"not a key")
    key = _key()
    assert key_fingerprint(load_public_key(_pem(key))) == key_fingerprint(key.public_key())


# -- the referrers API (Distribution 2.8 has none, so a tiny server stands in) -----------------


def _serve_signed_chart(
    fake: FakeRegistry, tmp_path: Path, signer: ec.EllipticCurvePrivateKey
) -> tuple[str, str]:
    """Serve a chart and a bundle referrer signing it; (manifest digest, archive digest)."""
    archive = package_chart(write_chart(tmp_path, "app", "1.0.0"), tmp_path / "out").read_bytes()
    archive_digest = fake.add_blob(archive)
    config = json.dumps({"name": "app", "version": "1.0.0"}).encode()
    manifest = json.dumps(
        {"schemaVersion": 2,
         "config": {"mediaType": HELM_CONFIG, "digest": fake.add_blob(config), "size": len(config)},
         "layers": [{"mediaType": HELM_CHART, "digest": archive_digest, "size": len(archive)}]}
    ).encode()  # fmt: skip
    digest = fake.add_manifest(manifest, OCI_MANIFEST, tag="1.0.0")
    bundle = _bundle(signer, digest)
    empty = b"{}"
    referrer = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": BUNDLE_MEDIA_TYPE,
         "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                    "digest": fake.add_blob(empty), "size": 2},
         "layers": [{"mediaType": BUNDLE_MEDIA_TYPE, "digest": fake.add_blob(bundle),
                     "size": len(bundle)}],
         "subject": {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(manifest)}}
    ).encode()  # fmt: skip
    referrer_digest = fake.add_manifest(referrer, OCI_MANIFEST)
    assert fake.referrers is not None
    fake.referrers[digest] = json.dumps(
        {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
         "manifests": [{"mediaType": OCI_MANIFEST, "digest": referrer_digest,
                        "size": len(referrer), "artifactType": BUNDLE_MEDIA_TYPE}]}
    ).encode()  # fmt: skip
    return digest, archive_digest


async def test_bundles_are_found_through_the_referrers_api(tmp_path: Path) -> None:
    key = _key()
    with FakeRegistry(referrers={}) as fake:
        digest, _ = _serve_signed_chart(fake, tmp_path, key)
        source = ChartSource(tmp_path / "cache", 10**8, 10**7, 10**8)
        request = ChartRequest(f"oci://{fake.host}/charts/app@{digest}", insecure=True,
                               cosign_public_key_pem=_pem(key))  # fmt: skip
        chart = await source.get(request)

    assert chart.metadata.name == "app"
    asked = [seen for seen in fake.seen if "/referrers/" in seen.path]
    assert len(asked) == 1
    assert asked[0].path == f"/v2/charts/app/referrers/{digest}"
    assert asked[0].query == {"artifactType": [BUNDLE_MEDIA_TYPE]}
    assert "application/vnd.oci.image.index.v1+json" in asked[0].headers["Accept"]
    # The API answered, so neither the referrers tag nor the legacy .sig tag was needed.
    assert not any("/manifests/sha256-" in seen.path for seen in fake.seen)


async def test_a_referrer_signed_by_another_key_is_refused(tmp_path: Path) -> None:
    with FakeRegistry(referrers={}) as fake:
        digest, archive_digest = _serve_signed_chart(fake, tmp_path, signer=_key())
        source = ChartSource(tmp_path / "cache", 10**8, 10**7, 10**8)
        request = ChartRequest(f"oci://{fake.host}/charts/app@{digest}", insecure=True,
                               cosign_public_key_pem=_pem(_key()))  # fmt: skip
        with pytest.raises(ChartError) as caught:
            await source.get(request)
    assert caught.value.reason == VERIFICATION_FAILED
    assert not caught.value.retriable
    assert digest in caught.value.message
    # Nothing of the chart itself was downloaded for a chart that failed verification.
    assert not any(seen.path.endswith(archive_digest) for seen in fake.seen)

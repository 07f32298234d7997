"""Key-based, offline verification of the two signature formats cosign writes (pure).

- Legacy "simple signing": the signed payload is a JSON document naming the image by
  `critical.image.docker-manifest-digest`; the signature (base64 DER ECDSA over the
  payload's SHA-256) sits in a layer annotation of the `.sig` manifest.
- cosign v3's default, a Sigstore bundle: a DSSE envelope around an in-toto statement
  whose subject is the manifest digest and whose predicate type is cosign's signing
  predicate; the signature covers DSSE's pre-authentication encoding (PAE), not the
  payload itself.

The transparency log is not consulted: trust comes from the public key alone.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from rudder.chart.digests import digest_hex

SIMPLE_SIGNING_LAYER: Final = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION: Final = "dev.cosignproject.cosign/signature"
SIMPLE_SIGNING_TYPE: Final = "cosign container image signature"
BUNDLE_MEDIA_TYPE: Final = "application/vnd.dev.sigstore.bundle.v0.3+json"
BUNDLE_MEDIA_PREFIX: Final = "application/vnd.dev.sigstore.bundle"
IN_TOTO_PAYLOAD_TYPE: Final = "application/vnd.in-toto+json"
IN_TOTO_STATEMENTS: Final = frozenset(
    {"https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1"}
)
COSIGN_SIGN_PREDICATE: Final = "https://sigstore.dev/cosign/sign/v1"


class SignatureRejected(ValueError):
    """This signature does not vouch for this digest with this key; the message says why."""


def load_public_key(pem: bytes) -> ec.EllipticCurvePublicKey:
    """The ECDSA P-256 key of a `cosign.pub`, or ValueError."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError):
        raise ValueError("cosign.pub is not a PEM public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("cosign.pub is not an ECDSA P-256 public key")
    return key


def key_fingerprint(key: ec.EllipticCurvePublicKey) -> str:
    """sha256 of the key's DER SubjectPublicKeyInfo: identifies a key in caches."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def dsse_pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what a DSSE signature actually signs."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def verify_simple_signing(
    payload: bytes, signature_b64: str, digest: str, key: ec.EllipticCurvePublicKey
) -> None:
    """Accept a legacy cosign signature of `digest`, or raise SignatureRejected."""
    _verify_ecdsa(key, _b64(signature_b64, "signature annotation"), payload)
    document = _json_object(payload, "simple-signing payload")
    critical = document.get("critical")
    if not isinstance(critical, dict) or critical.get("type") != SIMPLE_SIGNING_TYPE:
        raise SignatureRejected("the payload is not a cosign container image signature")
    image = critical.get("image")
    signed = image.get("docker-manifest-digest") if isinstance(image, dict) else None
    if signed != digest:
        raise SignatureRejected(f"the signature is for {signed}, not {digest}")


def verify_bundle(bundle: bytes, digest: str, key: ec.EllipticCurvePublicKey) -> None:
    """Accept a Sigstore bundle (DSSE + in-toto) signing `digest`, or raise SignatureRejected."""
    document = _json_object(bundle, "bundle")
    media_type = document.get("mediaType")
    if not isinstance(media_type, str) or not media_type.startswith(BUNDLE_MEDIA_PREFIX):
        raise SignatureRejected(f"not a Sigstore bundle (mediaType {media_type!r})")
    envelope = document.get("dsseEnvelope")
    if not isinstance(envelope, dict):
        raise SignatureRejected("the bundle holds no DSSE envelope")
    payload_type = envelope.get("payloadType")
    if payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise SignatureRejected(f"the DSSE payload type is {payload_type!r}, not in-toto")
    payload_b64 = envelope.get("payload")
    if not isinstance(payload_b64, str):
        raise SignatureRejected("the DSSE envelope has no payload")
    payload = _b64(payload_b64, "DSSE payload")
    _verify_any(key, envelope.get("signatures"), dsse_pae(payload_type, payload))
    _check_statement(_json_object(payload, "in-toto statement"), digest)


def _check_statement(statement: dict[str, Any], digest: str) -> None:
    if statement.get("_type") not in IN_TOTO_STATEMENTS:
        raise SignatureRejected("the payload is not an in-toto statement")
    if statement.get("predicateType") != COSIGN_SIGN_PREDICATE:
        raise SignatureRejected(
            f"the predicate type is {statement.get('predicateType')!r}, "
            f"not {COSIGN_SIGN_PREDICATE!r}"
        )
    subjects = statement.get("subject")
    named = [
        subject.get("digest", {}).get("sha256")
        for subject in subjects if isinstance(subject, dict)
        and isinstance(subject.get("digest"), dict)
    ] if isinstance(subjects, list) else []  # fmt: skip
    if digest_hex(digest) not in named:
        others = ", ".join(f"sha256:{hex_digest}" for hex_digest in named) or "nothing"
        raise SignatureRejected(f"the statement is about {others}, not {digest}")


def _verify_any(key: ec.EllipticCurvePublicKey, signatures: Any, message: bytes) -> None:
    if not isinstance(signatures, list) or not signatures:
        raise SignatureRejected("the DSSE envelope has no signatures")
    for entry in signatures:
        sig = entry.get("sig") if isinstance(entry, dict) else None
        if not isinstance(sig, str):
            continue
        try:
            _verify_ecdsa(key, _b64(sig, "DSSE signature"), message)
        except SignatureRejected:
            continue
        return
    raise SignatureRejected("no signature in the DSSE envelope verifies with the public key")


def _verify_ecdsa(key: ec.EllipticCurvePublicKey, signature: bytes, message: bytes) -> None:
    try:
        key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise SignatureRejected("the signature does not verify with the public key") from None


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureRejected(f"the {what} is not base64") from None


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SignatureRejected(f"the {what} is not JSON") from None
    if not isinstance(document, dict):
        raise SignatureRejected(f"the {what} is not a JSON object")
    return document

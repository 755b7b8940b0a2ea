"""Sigstore attestations made offline for the provenance tests: a throwaway CA in a trusted root, a
Fulcio-shaped leaf certificate naming a workflow, and a DSSE-signed in-toto/SLSA v1 statement, laid
out as ``actions/attest-build-provenance`` produces them (bundle v0.3) and as the attestations REST
API returns them (``{"attestations": [{"bundle": ...}]}``)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from infra.provenance import (
    GITHUB_OIDC_ISSUER,
    IN_TOTO_PAYLOAD_TYPE,
    OID_BUILD_SIGNER_URI,
    OID_ISSUER_V2,
    OID_SOURCE_REPOSITORY_REF,
    SLSA_PROVENANCE_V1,
    STATEMENT_V1,
    _pae,
)

REPOSITORY = "example-org/purchase-classifier"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _der_utf8(text: str) -> bytes:
    data = text.encode()
    assert len(data) < 128
    return bytes([0x0C, len(data)]) + data


def _name(common: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "test"), x509.NameAttribute(NameOID.COMMON_NAME, common)]
    )


@dataclass
class Authority:
    """A CA standing in for Fulcio; ``trusted_root()`` is its Sigstore trusted-root document."""

    name: str = "fixture-fulcio"
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    def __post_init__(self) -> None:
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(self.name))
            .issuer_name(_name(self.name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - timedelta(days=365))
            .not_valid_after(NOW + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def trusted_root(self) -> dict[str, Any]:
        der = self.cert.public_bytes(serialization.Encoding.DER)
        return {
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "certificateAuthorities": [
                {
                    "subject": {"organization": "test", "commonName": self.name},
                    "certChain": {"certificates": [{"rawBytes": base64.b64encode(der).decode()}]},
                    "validFor": {"start": (NOW - timedelta(days=365)).isoformat()},
                }
            ],
        }

    def leaf(
        self,
        key: ec.EllipticCurvePrivateKey,
        signer_uri: str,
        *,
        ref: str = "refs/heads/main",
        issuer: str = GITHUB_OIDC_ISSUER,
        code_signing: bool = True,
    ) -> x509.Certificate:
        usage = ExtendedKeyUsageOID.CODE_SIGNING if code_signing else ExtendedKeyUsageOID.CLIENT_AUTH
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - timedelta(minutes=1))
            .not_valid_after(NOW + timedelta(minutes=9))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(signer_uri)]), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.UnrecognizedExtension(OID_ISSUER_V2, _der_utf8(issuer)), critical=False)
            .add_extension(x509.UnrecognizedExtension(OID_BUILD_SIGNER_URI, _der_utf8(signer_uri)), critical=False)
            .add_extension(x509.UnrecognizedExtension(OID_SOURCE_REPOSITORY_REF, _der_utf8(ref)), critical=False)
            .sign(self.key, hashes.SHA256())
        )


def statement(digest: str, *, repository: str = REPOSITORY, workflow: str = ".github/workflows/deploy-dev.yml",
              ref: str = "refs/heads/main") -> dict[str, Any]:  # fmt: skip
    """An in-toto v1 statement with the SLSA v1 predicate GitHub's build type describes."""
    return {
        "_type": STATEMENT_V1,
        "subject": [
            {
                "name": "111122223333.dkr.ecr.eu-west-1.amazonaws.com/purchase-classifier",
                "digest": {"sha256": digest.removeprefix("sha256:")},
            }
        ],
        "predicateType": SLSA_PROVENANCE_V1,
        "predicate": {
            "buildDefinition": {
                "buildType": "https://actions.github.io/buildtypes/workflow/v1",
                "externalParameters": {
                    "workflow": {"ref": ref, "repository": f"https://github.com/{repository}", "path": workflow}
                },
                "internalParameters": {"github": {"event_name": "push", "runner_environment": "github-hosted"}},
                "resolvedDependencies": [
                    {"uri": f"git+https://github.com/{repository}@{ref}", "digest": {"gitCommit": "0" * 40}}
                ],
            },
            "runDetails": {
                "builder": {"id": f"https://github.com/{repository}/{workflow}@{ref}"},
                "metadata": {"invocationId": f"https://github.com/{repository}/actions/runs/1/attempts/1"},
            },
        },
    }


def bundle(
    authority: Authority, payload: dict[str, Any], signer_uri: str, *, tamper: bool = False, **leaf: Any
) -> dict[str, Any]:
    """A bundle v0.3 whose envelope is signed by a fresh key certified by ``authority`` for ``signer_uri``."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = authority.leaf(key, signer_uri, **leaf)
    body = json.dumps(payload).encode()
    signature = key.sign(_pae(IN_TOTO_PAYLOAD_TYPE, body), ec.ECDSA(hashes.SHA256()))
    if tamper:  # the signed statement, then a different one in the envelope
        body = json.dumps({**payload, "subject": [{"name": "x", "digest": {"sha256": "f" * 64}}]}).encode()
    return {
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {
            "certificate": {"rawBytes": base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()},
            "tlogEntries": [{"logIndex": "1", "integratedTime": str(int(NOW.timestamp()))}],
        },
        "dsseEnvelope": {
            "payload": base64.b64encode(body).decode(),
            "payloadType": IN_TOTO_PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(signature).decode(), "keyid": ""}],
        },
    }


def write(path: Path, *bundles: dict[str, Any]) -> Path:
    """As ``GET /repos/{owner}/{repo}/attestations/{digest}`` answers."""
    path.write_text(json.dumps({"attestations": [{"bundle": b, "repository_id": 1} for b in bundles]}))
    return path

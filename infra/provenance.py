"""Refuse an image digest unless its build provenance was signed by the project's dev build.

``deploy-dev.yml`` attests every image it pushes with ``actions/attest-build-provenance``: a Sigstore
bundle holding a DSSE envelope whose payload is an in-toto Statement v1 with a SLSA provenance v1
predicate, signed with a short-lived key whose Fulcio certificate names the signing workflow. Promotion
accepts a digest only when one of its attestations passes :func:`verify_bundle`.

What is checked, offline, with ``cryptography`` (the same primitives sigstore-python uses):

- the leaf certificate was issued by a certificate authority of the given Sigstore trusted root
  (``gh attestation trusted-root`` prints GitHub's and the public-good instance's), carries the code
  signing key usage, and, when the bundle has a transparency-log entry, was valid at its integrated
  time;
- the DSSE signature over the envelope's pre-authentication encoding verifies with that certificate's
  key, so the statement is exactly what the workflow signed;
- the certificate's identity: its URI SAN and Fulcio's Build Signer URI extension are
  ``https://github.com/<repo>/.github/workflows/deploy-dev.yml@refs/heads/main``, its OIDC issuer
  extension is GitHub Actions', its Source Repository Ref is ``refs/heads/main``;
- the statement: in-toto v1, SLSA provenance v1, GitHub's workflow build type, the same workflow
  repository, path and ref, and a subject whose sha256 is the digest being promoted.

What is **not** checked here: the transparency-log inclusion proof and signed entry timestamp
(Rekor), RFC 3161 timestamps, and the certificate's embedded SCTs; those need the log's keys and
checkpoint logic that ``gh attestation verify`` (or sigstore-python online) performs. The identity
above cannot be forged without a certificate from a trusted CA, which only Fulcio issues, and only
for a token GitHub minted for that workflow run.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

STATEMENT_V1 = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE_V1 = "https://slsa.dev/provenance/v1"
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
GITHUB_BUILD_TYPES = frozenset(
    {
        "https://actions.github.io/buildtypes/workflow/v1",
        "https://slsa-framework.github.io/github-actions-buildtypes/workflow/v1",
    }
)
GITHUB_OIDC_ISSUER = "https://token.actions.githubusercontent.com"
# Fulcio's certificate extensions (docs/oid-info.md in sigstore/fulcio): 1.1 is the legacy raw-string
# issuer, 1.8 onwards are DER UTF8Strings.
OID_ISSUER_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
OID_ISSUER_V2 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
OID_BUILD_SIGNER_URI = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.9")
OID_SOURCE_REPOSITORY_REF = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.14")
BUILD_WORKFLOW = ".github/workflows/deploy-dev.yml"
BUILD_REF = "refs/heads/main"
MAX_FILE_BYTES = 16 * 1024 * 1024
"""An attestation list or trusted root larger than this is refused unread."""


class ProvenanceError(Exception):
    """The digest has no attestation from the expected workflow; the message says what was wrong."""


@dataclass(frozen=True)
class Signer:
    """The workflow run that must have signed the provenance."""

    repository: str
    """GitHub ``owner/name``."""
    workflow: str = BUILD_WORKFLOW
    ref: str = BUILD_REF

    @property
    def uri(self) -> str:
        return f"https://github.com/{self.repository}/{self.workflow}@{self.ref}"


def _read_json_documents(path: Path, what: str) -> Iterator[Any]:
    """A JSON document, or one per line (the shape ``gh`` prints lists in)."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ProvenanceError(f"{what} {path} is larger than {MAX_FILE_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProvenanceError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    try:
        yield json.loads(text)
        return
    except json.JSONDecodeError:
        pass
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise ProvenanceError(f"{what} {path} line {number} is not JSON: {exc.msg}") from exc


def load_bundles(path: Path) -> list[dict[str, Any]]:
    """Sigstore bundles from a file: one bundle, ``{"attestations": [{"bundle": ...}]}`` (the REST
    API's ``GET /repos/{owner}/{repo}/attestations/{digest}``), or JSON lines of either."""
    bundles: list[dict[str, Any]] = []
    for document in _read_json_documents(path, "attestation file"):
        if isinstance(document, dict) and isinstance(document.get("attestations"), list):
            bundles.extend(a["bundle"] for a in document["attestations"] if isinstance(a, dict) and "bundle" in a)
        elif isinstance(document, dict) and isinstance(document.get("bundle"), dict):
            bundles.append(document["bundle"])
        elif isinstance(document, dict) and "verificationMaterial" in document:
            bundles.append(document)
    if not bundles:
        raise ProvenanceError(f"attestation file {path} holds no Sigstore bundle")
    return bundles


def load_trusted_roots(path: Path) -> list[x509.Certificate]:
    """Every certificate authority certificate of a Sigstore trusted root (one document or JSON lines)."""
    cas: list[x509.Certificate] = []
    for root in _read_json_documents(path, "trusted root"):
        for authority in root.get("certificateAuthorities", []) if isinstance(root, dict) else []:
            for cert in authority.get("certChain", {}).get("certificates", []):
                cas.append(x509.load_der_x509_certificate(base64.b64decode(cert["rawBytes"])))
    if not cas:
        raise ProvenanceError(f"trusted root {path} names no certificate authority")
    return cas


def _der_utf8(value: bytes) -> str:
    """Decode a DER UTF8String (tag 0x0C), as Fulcio encodes its 1.8+ extensions."""
    if len(value) < 2 or value[0] != 0x0C:
        raise ProvenanceError("a Fulcio extension is not a DER UTF8String")
    length, offset = value[1], 2
    if length & 0x80:
        count = length & 0x7F
        length, offset = int.from_bytes(value[2 : 2 + count], "big"), 2 + count
    return value[offset : offset + length].decode("utf-8")


def _extension(cert: x509.Certificate, oid: x509.ObjectIdentifier, *, der: bool = True) -> str | None:
    try:
        ext = cert.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None
    raw = ext.value if isinstance(ext, x509.UnrecognizedExtension) else b""
    return _der_utf8(raw) if der else raw.decode("utf-8")


def _leaf(bundle: dict[str, Any]) -> x509.Certificate:
    material = bundle.get("verificationMaterial", {})
    if "certificate" in material:  # bundle v0.3
        raw = material["certificate"]["rawBytes"]
    elif "x509CertificateChain" in material:  # bundle v0.1 / v0.2
        raw = material["x509CertificateChain"]["certificates"][0]["rawBytes"]
    else:
        raise ProvenanceError("the bundle carries no signing certificate (a key-signed bundle names no workflow)")
    return x509.load_der_x509_certificate(base64.b64decode(raw))


def _check_chain(leaf: x509.Certificate, cas: list[x509.Certificate], bundle: dict[str, Any]) -> None:
    issuers = [ca for ca in cas if ca.subject == leaf.issuer]
    for ca in issuers:
        try:
            leaf.verify_directly_issued_by(ca)
            break
        except (ValueError, TypeError, InvalidSignature):
            continue
    else:
        raise ProvenanceError(f"the signing certificate ({leaf.issuer.rfc4514_string()}) is not from a trusted CA")
    try:
        usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usages = x509.ExtendedKeyUsage([])
    if ExtendedKeyUsageOID.CODE_SIGNING not in usages:
        raise ProvenanceError("the signing certificate is not for code signing")
    entries = bundle.get("verificationMaterial", {}).get("tlogEntries", [])
    if entries and "integratedTime" in entries[0]:
        at = datetime.fromtimestamp(int(entries[0]["integratedTime"]), UTC)
        if not leaf.not_valid_before_utc <= at <= leaf.not_valid_after_utc:
            raise ProvenanceError(f"the signing certificate was not valid at the log entry's time {at.isoformat()}")


def _pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what the signature covers."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def _check_signature(leaf: x509.Certificate, envelope: dict[str, Any]) -> bytes:
    if envelope.get("payloadType") != IN_TOTO_PAYLOAD_TYPE:
        raise ProvenanceError(f"the envelope's payload type is {envelope.get('payloadType')!r}, not in-toto")
    payload = base64.b64decode(envelope.get("payload", ""))
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ProvenanceError("the signing key is not an ECDSA key (Fulcio issues ECDSA P-256)")
    for signature in envelope.get("signatures", []):
        try:
            key.verify(
                base64.b64decode(signature["sig"]), _pae(envelope["payloadType"], payload), ec.ECDSA(hashes.SHA256())
            )
            return payload
        except InvalidSignature:
            continue
    raise ProvenanceError("the envelope's signature does not verify with the signing certificate")


def _check_identity(leaf: x509.Certificate, signer: Signer) -> None:
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    if uris != [signer.uri]:
        raise ProvenanceError(f"signed by {', '.join(uris) or 'no workflow'}, not {signer.uri}")
    issuer = _extension(leaf, OID_ISSUER_V2) or _extension(leaf, OID_ISSUER_V1, der=False)
    if issuer != GITHUB_OIDC_ISSUER:
        raise ProvenanceError(f"the certificate's OIDC issuer is {issuer!r}, not GitHub Actions")
    for oid, want in ((OID_BUILD_SIGNER_URI, signer.uri), (OID_SOURCE_REPOSITORY_REF, signer.ref)):
        have = _extension(leaf, oid)
        if have != want:
            raise ProvenanceError(f"the certificate's {oid.dotted_string} is {have!r}, not {want!r}")


def _check_statement(payload: bytes, digest: str, signer: Signer) -> dict[str, Any]:
    try:
        statement = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise ProvenanceError(f"the signed payload is not JSON: {exc.msg}") from exc
    if statement.get("_type") != STATEMENT_V1 or statement.get("predicateType") != SLSA_PROVENANCE_V1:
        raise ProvenanceError(
            f"not SLSA provenance v1 (type {statement.get('_type')!r}, predicate {statement.get('predicateType')!r})"
        )
    hex_digest = digest.removeprefix("sha256:")
    if not any(s.get("digest", {}).get("sha256") == hex_digest for s in statement.get("subject", [])):
        raise ProvenanceError(f"the provenance is for another image (no subject with {digest})")
    definition = statement.get("predicate", {}).get("buildDefinition", {})
    if definition.get("buildType") not in GITHUB_BUILD_TYPES:
        raise ProvenanceError(f"build type {definition.get('buildType')!r} is not a GitHub Actions workflow")
    workflow = definition.get("externalParameters", {}).get("workflow", {})
    want = {"ref": signer.ref, "repository": f"https://github.com/{signer.repository}", "path": signer.workflow}
    if {k: workflow.get(k) for k in want} != want:
        raise ProvenanceError(f"built by workflow {workflow!r}, not {want!r}")
    return dict(statement)


def verify_bundle(bundle: dict[str, Any], digest: str, signer: Signer, cas: list[x509.Certificate]) -> dict[str, Any]:
    """The verified statement of ``bundle`` for ``digest`` signed by ``signer`` (see the module docstring).

    :raises ProvenanceError: the first check that failed.
    """
    envelope = bundle.get("dsseEnvelope")
    if not isinstance(envelope, dict):
        raise ProvenanceError("the bundle holds no DSSE envelope (not an attestation)")
    try:
        leaf = _leaf(bundle)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ProvenanceError(f"the bundle's certificate cannot be read: {exc}") from exc
    _check_chain(leaf, cas, bundle)
    payload = _check_signature(leaf, envelope)
    _check_identity(leaf, signer)
    return _check_statement(payload, digest, signer)


@dataclass(frozen=True)
class ProvenanceCheck:
    """What ``python -m infra promote`` needs to refuse an image not built by the dev workflow on main."""

    attestations: Path
    trusted_root: Path
    signer: Signer

    def require(self, digest: str) -> str:
        """A one-line description of the accepted attestation.

        :raises ProvenanceError: no attestation in the file verifies; every bundle's reason is listed.
        """
        cas = load_trusted_roots(self.trusted_root)
        reasons = []
        for i, bundle in enumerate(load_bundles(self.attestations)):
            try:
                statement = verify_bundle(bundle, digest, self.signer, cas)
            except ProvenanceError as exc:
                reasons.append(f"attestation {i + 1}: {exc}")
                continue
            run = statement["predicate"].get("runDetails", {}).get("metadata", {}).get("invocationId", "a run")
            return f"{digest} built by {self.signer.uri} ({run})"
        raise ProvenanceError(f"no attestation shows {digest} was built by {self.signer.uri}: " + "; ".join(reasons))

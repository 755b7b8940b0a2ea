"""Provenance-checked promotion: an image is promoted only with a Sigstore attestation signed for
deploy-dev.yml on refs/heads/main, verified offline against a fixture trusted root
(tests/infra/provenance_fixture.py builds real certificates, keys and DSSE signatures)."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from infra.promote import EXIT_OK, EXIT_REFUSED, main, read_digest
from infra.provenance import ProvenanceCheck, ProvenanceError, Signer, load_bundles, verify_bundle
from tests.infra.provenance_fixture import NOW, REPOSITORY, Authority, bundle, statement, write
from tests.support.registry import build_and_push_image, registry_server

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "ab" * 32
SIGNER = Signer(REPOSITORY)
GOOD_URI = SIGNER.uri
REGISTRY_KEY = "purchase-classifier:registry"


@pytest.fixture(scope="module")
def fulcio() -> Authority:
    return Authority()


def _verify(fulcio: Authority, b: dict[str, Any], digest: str = DIGEST) -> dict[str, Any]:
    return verify_bundle(b, digest, SIGNER, [fulcio.cert])


def test_an_attestation_from_the_dev_build_on_main_verifies(fulcio: Authority) -> None:
    assert f"https://github.com/{REPOSITORY}/.github/workflows/deploy-dev.yml@refs/heads/main" == GOOD_URI
    verified = _verify(fulcio, bundle(fulcio, statement(DIGEST), GOOD_URI))
    assert verified["subject"][0]["digest"]["sha256"] == DIGEST.removeprefix("sha256:")


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        # Another workflow of the same repository (a contributor's branch can add one that attests).
        (lambda ca: bundle(ca, statement(DIGEST), GOOD_URI.replace("deploy-dev.yml", "mine.yml")), "signed by"),
        # deploy-dev.yml itself, run from a branch.
        (
            lambda ca: bundle(
                ca, statement(DIGEST, ref="refs/heads/x"), GOOD_URI.replace("main", "x"), ref="refs/heads/x"
            ),
            "signed by",
        ),
        # The right identity in the SAN, another branch in Fulcio's source-ref extension.
        (lambda ca: bundle(ca, statement(DIGEST), GOOD_URI, ref="refs/heads/x"), "1.3.6.1.4.1.57264.1.14"),
        # A token from another issuer.
        (lambda ca: bundle(ca, statement(DIGEST), GOOD_URI, issuer="https://accounts.example"), "OIDC issuer"),
        # Signed by the right workflow, for another image.
        (lambda ca: bundle(ca, statement("sha256:" + "cd" * 32), GOOD_URI), "another image"),
        # The statement claims the right workflow, the certificate says otherwise is covered above;
        # here the certificate is right and the statement names another workflow.
        (
            lambda ca: bundle(ca, statement(DIGEST, workflow=".github/workflows/mine.yml"), GOOD_URI),
            "built by workflow",
        ),
        # The envelope's payload is not what was signed.
        (lambda ca: bundle(ca, statement(DIGEST), GOOD_URI, tamper=True), "signature does not verify"),
        # A certificate not for code signing.
        (lambda ca: bundle(ca, statement(DIGEST), GOOD_URI, code_signing=False), "code signing"),
        # Everything right, but certified by a CA outside the trusted root (self-made "Fulcio").
        (lambda ca: bundle(Authority(name=ca.name), statement(DIGEST), GOOD_URI), "not from a trusted CA"),
    ],
    ids=[
        "other-workflow",
        "other-branch",
        "source-ref",
        "other-issuer",
        "other-digest",
        "statement-workflow",
        "tampered",
        "not-code-signing",
        "untrusted-ca",
    ],
)
def test_every_other_attestation_is_refused_with_its_reason(fulcio: Authority, make: Any, reason: str) -> None:
    with pytest.raises(ProvenanceError, match=reason):
        _verify(fulcio, make(fulcio))


def test_a_certificate_expired_at_the_log_entry_is_refused(fulcio: Authority) -> None:
    late = bundle(fulcio, statement(DIGEST), GOOD_URI)
    late["verificationMaterial"]["tlogEntries"][0]["integratedTime"] = str(int(NOW.timestamp()) + 3600)
    with pytest.raises(ProvenanceError, match="not valid at the log entry's time"):
        _verify(fulcio, late)


def test_a_statement_that_is_not_slsa_provenance_is_refused(fulcio: Authority) -> None:
    other = {**statement(DIGEST), "predicateType": "https://spdx.dev/Document"}
    with pytest.raises(ProvenanceError, match="not SLSA provenance v1"):
        _verify(fulcio, bundle(fulcio, other, GOOD_URI))


def test_the_check_takes_any_verifying_attestation_and_lists_every_reason(fulcio: Authority, tmp_path: Path) -> None:
    root = tmp_path / "trusted-root.jsonl"
    # gh prints one trusted root per line; the fixture's CA is on the second.
    root.write_text(json.dumps(Authority().trusted_root()) + "\n" + json.dumps(fulcio.trusted_root()) + "\n")
    wrong = bundle(fulcio, statement(DIGEST), GOOD_URI.replace("deploy-dev.yml", "mine.yml"))
    good = bundle(fulcio, statement(DIGEST), GOOD_URI)
    accepted = ProvenanceCheck(write(tmp_path / "a.json", wrong, good), root, SIGNER).require(DIGEST)
    assert accepted.startswith(f"{DIGEST} built by {GOOD_URI}")
    with pytest.raises(ProvenanceError, match=r"attestation 1: signed by .*mine.yml.*attestation 2: signed by"):
        ProvenanceCheck(write(tmp_path / "b.json", wrong, wrong), root, SIGNER).require(DIGEST)
    empty = tmp_path / "none.json"
    empty.write_text('{"attestations": []}')
    with pytest.raises(ProvenanceError, match="holds no Sigstore bundle"):
        ProvenanceCheck(empty, root, SIGNER).require(DIGEST)
    # A bare bundle, and JSON lines of bundles, are read too.
    (tmp_path / "one.json").write_text(json.dumps(good))
    (tmp_path / "lines.jsonl").write_text(json.dumps(wrong) + "\n" + json.dumps({"bundle": good}) + "\n")
    assert len(load_bundles(tmp_path / "one.json")) == 1 and len(load_bundles(tmp_path / "lines.jsonl")) == 2


# --- through `python -m infra promote`, against real registries ---------------------------------------


@pytest.fixture(scope="module")
def registries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with (
        registry_server(tmp_path_factory.mktemp("dev-registry")) as dev,
        registry_server(tmp_path_factory.mktemp("staging-registry")) as staging,
    ):
        yield {"dev": f"{dev}/purchase-classifier", "staging": f"{staging}/purchase-classifier"}


@pytest.fixture
def stacks(tmp_path: Path, registries: dict[str, str]) -> Path:
    """The committed stack files with dev and staging pointed at loopback registries."""
    for path in ROOT.glob("Pulumi.*.yaml"):
        shutil.copy(path, tmp_path / path.name)
    for stack, registry in registries.items():
        path = tmp_path / f"Pulumi.{stack}.yaml"
        anchor = "  purchase-classifier:environment:"
        path.write_text(path.read_text().replace(anchor, f"  {REGISTRY_KEY}: {registry}\n{anchor}", 1))
    return tmp_path


def _promote(stacks: Path, attestations: Path, root: Path) -> int:
    return main(
        [
            "--from",
            "dev",
            "--to",
            "staging",
            "--root",
            str(stacks),
            "--attestation",
            str(attestations),
            "--trusted-root",
            str(root),
            "--signer-repository",
            REPOSITORY,
        ]
    )


def _serves(registry: str, digest: str) -> bool:
    host, name = registry.split("/", 1)
    headers = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    return requests.head(f"http://{host}/v2/{name}/manifests/{digest}", headers=headers, timeout=5).ok


def test_promote_copies_an_attested_image_and_refuses_a_hand_pushed_one(
    fulcio: Authority, stacks: Path, registries: dict[str, str], tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    files = tmp_path_factory.mktemp("attestations")
    root = files / "trusted-root.json"
    root.write_text(json.dumps(fulcio.trusted_root()))
    host, name = registries["dev"].split("/", 1)

    # Pushed into dev's registry by hand (a dev-account user), recorded in Pulumi.dev.yaml, and
    # "attested" by a workflow of their own: refused before anything is copied or written.
    by_hand = build_and_push_image(host, name, content=b"pushed by hand\n")
    assert main(["--digest", by_hand.digest, "--to", "dev", "--root", str(stacks)]) == EXIT_OK
    staging_before = (stacks / "Pulumi.staging.yaml").read_bytes()
    theirs = bundle(fulcio, statement(by_hand.digest), GOOD_URI.replace("deploy-dev.yml", "release.yml"))
    capsys.readouterr()
    assert _promote(stacks, write(files / "theirs.json", theirs), root) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert f"no attestation shows {by_hand.digest} was built by {GOOD_URI}" in err
    assert "release.yml" in err and "nothing was copied" in err
    assert (stacks / "Pulumi.staging.yaml").read_bytes() == staging_before
    assert not _serves(registries["staging"], by_hand.digest)

    # Built and attested by deploy-dev.yml on main: copied, then written.
    built = build_and_push_image(host, name, content=b"built by deploy-dev on main\n")
    assert main(["--digest", built.digest, "--to", "dev", "--root", str(stacks)]) == EXIT_OK
    ours = bundle(fulcio, statement(built.digest), GOOD_URI)
    assert _promote(stacks, write(files / "ours.json", ours), root) == EXIT_OK
    assert read_digest("staging", stacks) == built.digest and _serves(registries["staging"], built.digest)


def test_the_provenance_flags_go_together(stacks: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--from", "dev", "--to", "staging", "--root", str(stacks), "--attestation", "x.json"]) == EXIT_REFUSED
    assert "go together" in capsys.readouterr().err


def test_the_fixture_bundle_has_the_published_bundle_layout(fulcio: Authority) -> None:
    """Guard the fixture itself: the fields verify_bundle reads are where Sigstore's bundle v0.3 puts them."""
    b = bundle(fulcio, statement(DIGEST), GOOD_URI)
    assert b["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert set(b["verificationMaterial"]) >= {"certificate", "tlogEntries"}
    assert set(b["dsseEnvelope"]) == {"payload", "payloadType", "signatures"}
    payload = json.loads(base64.b64decode(b["dsseEnvelope"]["payload"]))
    assert payload["predicate"]["buildDefinition"]["externalParameters"]["workflow"]["path"] == (
        ".github/workflows/deploy-dev.yml"
    )

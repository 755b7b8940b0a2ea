"""Promotion moves the image, then the digest and only the digest; keeps the files as people wrote
them; refuses loudly and writes nothing when the target cannot serve the image.

Runs on copies of the committed stack files in ``tmp_path`` so the real comments, flow maps and
quoting are what the round-trip has to survive. Each stack's registry is a real CNCF distribution
registry on 127.0.0.1 (one process per "account"), holding real images pushed by digest.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml
from dxf import DXF

from infra.images import digest_tag
from infra.oci import Repository, login_for
from infra.promote import (
    DIGEST_KEY,
    EXIT_DIFFERS,
    EXIT_OK,
    EXIT_REFUSED,
    ROOT,
    PromotionError,
    main,
    promote,
    read_digest,
    record,
    registry_of,
    set_digest,
)
from tests.support.aws_api import moto_server
from tests.support.ports import free_port
from tests.support.registry import Image, build_and_push_image, push_index, registry_server

DIGEST_A = "sha256:" + "a1" * 32
DIGEST_B = "sha256:" + "b2" * 32
REGISTRY_KEY = "purchase-classifier:registry"
AWS_STACKS = ("dev", "staging", "prod")


@pytest.fixture(scope="module")
def registries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """One real registry per AWS stack, standing for that account's ECR: stack -> ``host/repository``."""
    with (
        registry_server(tmp_path_factory.mktemp("dev-registry")) as dev,
        registry_server(tmp_path_factory.mktemp("staging-registry")) as staging,
        registry_server(tmp_path_factory.mktemp("prod-registry")) as prod,
    ):
        yield {
            stack: f"{host}/purchase-classifier" for stack, host in zip(AWS_STACKS, (dev, staging, prod), strict=True)
        }


@pytest.fixture
def stacks(tmp_path: Path, registries: dict[str, str]) -> Path:
    """Copies of the committed stack files, each AWS stack pointed at its loopback registry."""
    for path in ROOT.glob("Pulumi.*.yaml"):
        shutil.copy(path, tmp_path / path.name)
    for stack, registry in registries.items():
        path = tmp_path / f"Pulumi.{stack}.yaml"
        text = path.read_text()
        anchor = "  purchase-classifier:environment:"
        path.write_text(text.replace(anchor, f"  {REGISTRY_KEY}: {registry}\n{anchor}", 1))
    return tmp_path


def _push(registries: dict[str, str], stack: str, request: pytest.FixtureRequest) -> Image:
    """A real image only ``stack``'s registry holds (its content is unique to the calling test)."""
    host, name = registries[stack].split("/", 1)
    return build_and_push_image(host, name, content=f"{request.node.nodeid}\n".encode())


def _serves(registry: str, digest: str) -> bool:
    host, name = registry.split("/", 1)
    return requests.head(
        f"http://{host}/v2/{name}/manifests/{digest}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        timeout=5,
    ).ok


@pytest.fixture
def image(registries: dict[str, str], request: pytest.FixtureRequest) -> Image:
    return _push(registries, "dev", request)


def _point(stacks: Path, stack: str, registry: str) -> None:
    """Make ``stack`` pull from ``registry`` (``host/repository``)."""
    path = stacks / f"Pulumi.{stack}.yaml"
    path.write_text(
        "\n".join(
            f"  {REGISTRY_KEY}: {registry}" if line.startswith(f"  {REGISTRY_KEY}:") else line
            for line in path.read_text().splitlines()
        )
        + "\n"
    )


def _tags(registry: str) -> dict[str, str]:
    """Every tag of ``registry`` and the digest of the manifest bytes it serves."""
    host, name = registry.split("/", 1)
    listed = requests.get(f"http://{host}/v2/{name}/tags/list", timeout=5)
    listed.raise_for_status()
    resolved = {}
    for tag in listed.json().get("tags") or []:
        body = requests.get(
            f"http://{host}/v2/{name}/manifests/{tag}",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"},
            timeout=5,
        ).content
        resolved[tag] = "sha256:" + hashlib.sha256(body).hexdigest()
    return resolved


def _changed_lines(before: str, after: str) -> list[str]:
    return [
        line
        for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


def test_committed_stack_files_have_the_digest_key() -> None:
    for stack in ("dev", "staging", "prod", "local"):
        data = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
        assert DIGEST_KEY in data["config"], stack


def test_promote_changes_exactly_one_line_and_keeps_comments(stacks: Path, image: Image) -> None:
    set_digest("dev", image.digest, stacks)
    before = (stacks / "Pulumi.staging.yaml").read_text()
    change = promote("dev", "staging", stacks)
    after = (stacks / "Pulumi.staging.yaml").read_text()

    assert change.changed and change.old == "" and change.new == image.digest
    diff = _changed_lines(before, after)
    assert len(diff) == 2, diff
    assert diff[0].startswith("-") and DIGEST_KEY in diff[0]
    assert diff[1].startswith("+") and image.digest in diff[1]
    # Comments survive (the file's header and the per-key note).
    assert "# Copied from dev by the promote tool" in after
    assert after.splitlines()[0] == before.splitlines()[0]
    assert read_digest("staging", stacks) == image.digest


def test_only_the_digest_travels(stacks: Path, registries: dict[str, str], request: pytest.FixtureRequest) -> None:
    digest = _push(registries, "staging", request).digest
    set_digest("staging", digest, stacks)
    dev_before = yaml.safe_load((stacks / "Pulumi.dev.yaml").read_text())
    prod_before = yaml.safe_load((stacks / "Pulumi.prod.yaml").read_text())
    promote("staging", "prod", stacks)
    prod_after = yaml.safe_load((stacks / "Pulumi.prod.yaml").read_text())

    assert prod_after["config"].pop(DIGEST_KEY) == digest
    prod_before["config"].pop(DIGEST_KEY)
    assert prod_after == prod_before
    # The source is untouched; environment-specific values differ and stay different.
    assert yaml.safe_load((stacks / "Pulumi.dev.yaml").read_text()) == dev_before
    assert prod_after["config"]["purchase-classifier:cluster"]["name"] == "pc-prod"


def test_promote_is_idempotent(stacks: Path, image: Image) -> None:
    set_digest("dev", image.digest, stacks)
    first = promote("dev", "staging", stacks)
    text = (stacks / "Pulumi.staging.yaml").read_text()
    again = promote("dev", "staging", stacks)
    assert first.copied is not None and first.copied.manifests == 1
    assert not again.changed
    assert again.copied is not None and (again.copied.manifests, again.copied.blobs) == (0, 0)
    assert (stacks / "Pulumi.staging.yaml").read_text() == text


def test_refuses_when_source_has_no_digest(stacks: Path) -> None:
    before = (stacks / "Pulumi.staging.yaml").read_text()
    with pytest.raises(PromotionError, match="source stack 'dev' has no image digest"):
        promote("dev", "staging", stacks)
    assert (stacks / "Pulumi.staging.yaml").read_text() == before


def test_refuses_when_target_stack_missing(stacks: Path, image: Image) -> None:
    set_digest("dev", image.digest, stacks)
    with pytest.raises(PromotionError, match=r"target stack 'qa' does not exist: no Pulumi\.qa\.yaml"):
        promote("dev", "qa", stacks)
    assert not (stacks / "Pulumi.qa.yaml").exists()


def test_refuses_when_source_stack_missing(stacks: Path) -> None:
    with pytest.raises(PromotionError, match="source stack 'qa' does not exist"):
        promote("qa", "staging", stacks)


@pytest.mark.parametrize("bad", ["latest", "v1.2.3", "sha256:abc", "sha256:" + "G" * 64, "sha256:" + "AB" * 32])
def test_refuses_tags_and_malformed_digests(stacks: Path, bad: str) -> None:
    with pytest.raises(PromotionError, match="is not 'sha256:<64 lowercase hex>'"):
        set_digest("dev", bad, stacks)
    (stacks / "Pulumi.dev.yaml").write_text(
        (stacks / "Pulumi.dev.yaml").read_text().replace(f'{DIGEST_KEY}: ""', f'{DIGEST_KEY}: "{bad}"')
    )
    with pytest.raises(PromotionError, match="source stack 'dev'"):
        promote("dev", "staging", stacks)


def test_refuses_same_stack_and_path_like_names(stacks: Path) -> None:
    with pytest.raises(PromotionError, match="needs two stacks"):
        promote("dev", "dev", stacks)
    with pytest.raises(PromotionError, match="not a valid Pulumi stack name"):
        set_digest("../dev", DIGEST_A, stacks)


def test_target_without_the_key_gets_it_after_environment(stacks: Path) -> None:
    path = stacks / "Pulumi.staging.yaml"
    path.write_text("\n".join(line for line in path.read_text().splitlines() if DIGEST_KEY not in line) + "\n")
    set_digest("staging", DIGEST_B, stacks)
    keys = list(yaml.safe_load(path.read_text())["config"])
    assert keys[keys.index("purchase-classifier:environment") + 1] == DIGEST_KEY


def test_cli_check_reports_difference_then_sync(stacks: Path, image: Image, capsys: pytest.CaptureFixture[str]) -> None:
    root = ["--root", str(stacks)]
    assert main(["--digest", image.digest, "--to", "dev", *root]) == EXIT_OK
    before = (stacks / "Pulumi.staging.yaml").read_text()

    assert main(["--from", "dev", "--to", "staging", "--check", *root]) == EXIT_DIFFERS
    assert "staging: differs" in capsys.readouterr().out
    assert (stacks / "Pulumi.staging.yaml").read_text() == before  # --check writes nothing

    assert main(["--from", "dev", "--to", "staging", *root]) == EXIT_OK
    out = capsys.readouterr().out
    assert f"staging: copied {image.digest} into 127.0.0.1:" in out
    assert f"staging: imageDigest (unset) -> {image.digest}" in out

    assert main(["--from", "dev", "--to", "staging", "--check", *root]) == EXIT_OK
    assert "in sync" in capsys.readouterr().out


def test_cli_refusal_exit_code_and_message(stacks: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--from", "dev", "--to", "prod", "--root", str(stacks)]) == EXIT_REFUSED
    assert "promote: refused: source stack 'dev' has no image digest" in capsys.readouterr().err


def test_registers_on_the_infra_dispatcher() -> None:
    import argparse

    from infra import promote as module

    parser = argparse.ArgumentParser(prog="python -m infra")
    module.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["promote", "--from", "dev", "--to", "staging", "--check"])
    assert args.func is module.run and args.check and args.source == "dev"


def test_standalone_module_entry_point(
    stacks: Path, registries: dict[str, str], request: pytest.FixtureRequest
) -> None:
    digest = _push(registries, "prod", request).digest
    proc = subprocess.run(
        [sys.executable, "-m", "infra.promote", "--digest", digest, "--to", "prod", "--root", str(stacks)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == EXIT_OK, proc.stderr
    assert f"prod: {registries['prod']} already serves {digest}" in proc.stdout
    assert f"prod: imageDigest (unset) -> {digest}" in proc.stdout
    assert read_digest("prod", stacks) == digest


# -- the image travels first ------------------------------------------------------------------------


def test_copies_the_image_into_the_target_registry(stacks: Path, registries: dict[str, str], image: Image) -> None:
    set_digest("dev", image.digest, stacks)
    assert not _serves(registries["staging"], image.digest)

    change = promote("dev", "staging", stacks)

    assert change.copied is not None
    assert (change.copied.manifests, change.copied.blobs) == (1, 2)  # the manifest, its config and layer
    assert _serves(registries["staging"], image.digest)
    host, name = registries["staging"].split("/", 1)
    target = DXF(host, name, insecure=True)
    _, response = target.get_manifest_and_response(image.digest)
    assert response.headers["Docker-Content-Digest"] == image.digest  # same bytes, same digest
    layer = requests.get(f"http://{host}/v2/{name}/blobs/{image.layer}", timeout=5)
    assert layer.content == image.layer_bytes
    assert read_digest("staging", stacks) == image.digest


def test_copies_an_index_with_its_platform_images(stacks: Path, registries: dict[str, str], image: Image) -> None:
    host, name = registries["dev"].split("/", 1)
    index = push_index(host, name, [image])
    set_digest("dev", index, stacks)

    change = promote("dev", "staging", stacks)

    assert change.copied is not None and (change.copied.manifests, change.copied.blobs) == (2, 2)
    assert _serves(registries["staging"], image.digest)  # the child manifest travelled too
    assert requests.head(
        f"http://{registries['staging'].split('/', 1)[0]}/v2/{name}/manifests/{index}",
        headers={"Accept": "application/vnd.oci.image.index.v1+json"},
        timeout=5,
    ).ok
    assert read_digest("staging", stacks) == index


def test_copies_the_exact_bytes_of_a_manifest_with_non_ascii_annotations(
    stacks: Path, registries: dict[str, str], image: Image
) -> None:
    host, name = registries["dev"].split("/", 1)
    manifest = json.loads(
        requests.get(
            f"http://{host}/v2/{name}/manifests/{image.digest}",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
            timeout=5,
        ).content
    )
    manifest["annotations"] = {"org.opencontainers.image.description": "Achats hospitaliers — 医院采购"}
    body = json.dumps(manifest, ensure_ascii=False).encode()
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    requests.put(
        f"http://{host}/v2/{name}/manifests/{digest}",
        data=body,
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        timeout=5,
    ).raise_for_status()
    set_digest("dev", digest, stacks)

    promote("dev", "staging", stacks)

    target_host = registries["staging"].split("/", 1)[0]
    copied = requests.get(
        f"http://{target_host}/v2/{name}/manifests/{digest}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        timeout=5,
    )
    assert copied.content == body


def test_target_already_serving_the_digest_needs_no_copy(
    stacks: Path, registries: dict[str, str], request: pytest.FixtureRequest
) -> None:
    digest = _push(registries, "dev", request).digest
    assert _push(registries, "staging", request).digest == digest  # same content, same digest
    set_digest("dev", digest, stacks)
    change = promote("dev", "staging", stacks)
    assert change.copied is not None and change.copied.manifests == 0
    assert read_digest("staging", stacks) == digest


def test_refuses_a_digest_the_source_registry_does_not_have(stacks: Path, registries: dict[str, str]) -> None:
    set_digest("dev", DIGEST_A, stacks)  # recorded in the file, never pushed
    before = (stacks / "Pulumi.staging.yaml").read_text()
    with pytest.raises(PromotionError) as refused:
        promote("dev", "staging", stacks)
    message = str(refused.value)
    assert f"stack 'staging' cannot run {DIGEST_A}" in message
    assert f"the source {registries['dev']} has no manifest {DIGEST_A}" in message
    assert "Pulumi.staging.yaml was not written" in message
    assert (stacks / "Pulumi.staging.yaml").read_text() == before
    assert not _serves(registries["staging"], DIGEST_A)


def test_refuses_when_the_target_registry_is_unreachable(stacks: Path, image: Image) -> None:
    set_digest("dev", image.digest, stacks)
    path = stacks / "Pulumi.staging.yaml"
    dead = f"127.0.0.1:{free_port()}/purchase-classifier"  # nothing listens there
    path.write_text(
        "\n".join(
            f"  {REGISTRY_KEY}: {dead}" if line.startswith(f"  {REGISTRY_KEY}:") else line
            for line in path.read_text().splitlines()
        )
        + "\n"
    )
    before = path.read_text()
    with pytest.raises(PromotionError, match=rf"copying .* to {dead} failed: ConnectionError"):
        promote("dev", "staging", stacks)
    assert path.read_text() == before


def test_refuses_a_target_missing_a_layer(
    stacks: Path, registries: dict[str, str], request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = _push(registries, "prod", request)
    host, name = registries["prod"].split("/", 1)
    requests.delete(f"http://{host}/v2/{name}/blobs/{broken.layer}", timeout=5).raise_for_status()
    before = (stacks / "Pulumi.prod.yaml").read_text()

    assert main(["--digest", broken.digest, "--to", "prod", "--root", str(stacks)]) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert f"promote: refused: stack 'prod' cannot run {broken.digest}" in err
    assert f"lacks blob(s) {broken.layer}" in err
    assert (stacks / "Pulumi.prod.yaml").read_text() == before


def test_record_refuses_a_digest_nobody_pushed(stacks: Path) -> None:
    before = (stacks / "Pulumi.dev.yaml").read_text()
    with pytest.raises(PromotionError, match=rf"does not serve manifest {DIGEST_B}"):
        record("dev", DIGEST_B, stacks)
    assert (stacks / "Pulumi.dev.yaml").read_text() == before


# -- the image stays: a tag in the target ---------------------------------------------------------


def test_a_promoted_image_is_reachable_by_a_tag_in_the_target(
    stacks: Path, registries: dict[str, str], image: Image, capsys: pytest.CaptureFixture[str]
) -> None:
    set_digest("dev", image.digest, stacks)
    assert digest_tag(image.digest) not in _tags(registries["staging"])

    assert main(["--from", "dev", "--to", "staging", "--root", str(stacks)]) == EXIT_OK

    # The tag list resolves to the promoted digest: the image is no longer untagged in the target.
    assert _tags(registries["staging"])[digest_tag(image.digest)] == image.digest
    assert f"staging: tagged {registries['staging']}:{digest_tag(image.digest)}" in capsys.readouterr().out
    # Promoting on to prod tags it there too; a recorded digest (--digest) is tagged the same way.
    assert promote("staging", "prod", stacks).tagged == (digest_tag(image.digest),)
    assert _tags(registries["prod"])[digest_tag(image.digest)] == image.digest


def test_every_manifest_of_a_promoted_index_is_tagged(stacks: Path, registries: dict[str, str], image: Image) -> None:
    host, name = registries["dev"].split("/", 1)
    index = push_index(host, name, [image])
    set_digest("dev", index, stacks)

    change = promote("dev", "staging", stacks)

    # The platform image inside the index is tagged too: no part of it is an untagged image.
    tag = digest_tag(index)
    assert change.tagged == (tag, f"{tag}.0")
    tags = _tags(registries["staging"])
    assert tags[tag] == index and tags[f"{tag}.0"] == image.digest


def test_re_promoting_writes_nothing_so_an_immutable_repository_accepts_it(
    stacks: Path, registries: dict[str, str], image: Image, tmp_path_factory: pytest.TempPathFactory
) -> None:
    storage = tmp_path_factory.mktemp("immutable-registry")
    set_digest("dev", image.digest, stacks)
    with registry_server(storage) as writable:
        _point(stacks, "staging", f"{writable}/purchase-classifier")
        first = promote("dev", "staging", stacks)
        assert first.tagged == (digest_tag(image.digest),)
        set_digest("staging", DIGEST_B, stacks)  # so the second run has a file change to make
    # The same storage behind a registry that refuses every write: a promotion that pushed the
    # manifest or its tag again would fail here, as a push of an existing tag fails on immutable ECR.
    with registry_server(storage, read_only=True) as frozen:
        _point(stacks, "staging", f"{frozen}/purchase-classifier")
        again = promote("dev", "staging", stacks)
        assert again.copied is not None and (again.copied.manifests, again.copied.blobs) == (0, 0)
        assert again.tagged == ()
        assert read_digest("staging", stacks) == image.digest
        # The read-only server does refuse writes: this test would catch one.
        host = frozen
        refused = requests.put(
            f"http://{host}/v2/purchase-classifier/manifests/other",
            data=b"{}",
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
            timeout=5,
        )
        assert refused.status_code >= 400


def test_a_tag_naming_another_digest_is_refused_never_moved(
    stacks: Path, registries: dict[str, str], image: Image
) -> None:
    # Someone pushed other bytes under the tag this image's promotion would write.
    host, name = registries["staging"].split("/", 1)
    other = build_and_push_image(host, name, content=b"not what dev built\n")
    body = requests.get(
        f"http://{host}/v2/{name}/manifests/{other.digest}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        timeout=5,
    ).content
    tag = digest_tag(image.digest)
    requests.put(
        f"http://{host}/v2/{name}/manifests/{tag}",
        data=body,
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        timeout=5,
    ).raise_for_status()
    set_digest("dev", image.digest, stacks)
    before = (stacks / "Pulumi.staging.yaml").read_text()

    with pytest.raises(PromotionError, match=rf"{tag} names {other.digest}, not {image.digest}; tags are never moved"):
        promote("dev", "staging", stacks)

    assert _tags(registries["staging"])[tag] == other.digest
    assert (stacks / "Pulumi.staging.yaml").read_text() == before


# -- where each stack's image lives --------------------------------------------------------------


def test_each_committed_aws_stack_pulls_from_its_own_accounts_ecr() -> None:
    registries = {stack: registry_of(stack) for stack in AWS_STACKS}
    assert registries["staging"] == Repository("444455556666.dkr.ecr.eu-west-1.amazonaws.com", "purchase-classifier")
    assert len({r.host for r in registries.values()}) == 3
    for stack, repo in registries.items():
        config = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
        assert repo.host.startswith(config["aws:allowedAccountIds"][0]) and not repo.insecure
    assert registry_of("local") == Repository("localhost:5001", "purchase-classifier")
    assert registry_of("local").insecure


def test_a_stack_naming_no_registry_is_refused(stacks: Path) -> None:
    path = stacks / "Pulumi.dev.yaml"
    path.write_text(
        "\n".join(
            line
            for line in path.read_text().splitlines()
            if "allowedAccountIds" not in line and REGISTRY_KEY not in line
        )
        + "\n"
    )
    with pytest.raises(PromotionError, match=r"Pulumi\.dev\.yaml names no registry: set purchase-classifier:registry"):
        registry_of("dev", stacks)


def test_registry_login_comes_from_the_docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = "444455556666.dkr.ecr.eu-west-1.amazonaws.com"
    auth = base64.b64encode(b"AWS:token-from-ecr-login").decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert login_for(host) == ("AWS", "token-from-ecr-login")
    assert login_for("registry.invalid:5000") is None


def test_an_ecr_login_is_stored_for_a_later_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The promotion workflow logs in to the source account's ECR, then assumes the target's role:
    # the stored login must be what the copy later finds. ECR's API here is moto's server.
    from infra.oci import main as oci_main

    with moto_server() as endpoint:
        for key, value in {
            "AWS_ENDPOINT_URL_ECR": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "DOCKER_CONFIG": str(tmp_path / "docker"),
        }.items():
            monkeypatch.setenv(key, value)
        registry = "111122223333.dkr.ecr.eu-west-1.amazonaws.com"
        assert oci_main(["login", registry]) == EXIT_OK
        config = tmp_path / "docker" / "config.json"
        assert config.stat().st_mode & 0o777 == 0o600
        username, password = login_for(registry) or ("", "")
        assert username == "AWS" and password
        assert oci_main(["login", "registry.example:5000"]) == EXIT_REFUSED
        assert set(json.loads(config.read_text())["auths"]) == {registry}


def test_an_ecr_registry_without_aws_credentials_is_refused_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stacks = tmp_path
    for path in ROOT.glob("Pulumi.*.yaml"):
        shutil.copy(path, stacks / path.name)
    set_digest("dev", DIGEST_A, stacks)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    before = (stacks / "Pulumi.staging.yaml").read_text()
    with pytest.raises(PromotionError, match=r"no ECR login for 111122223333\.dkr\.ecr\.eu-west-1\.amazonaws\.com"):
        promote("dev", "staging", stacks)
    assert (stacks / "Pulumi.staging.yaml").read_text() == before


def test_layers_are_uploaded_with_a_content_length_not_chunked() -> None:
    from infra.oci import _SizedStream

    request = requests.Request("PUT", "http://127.0.0.1/upload", data=_SizedStream(iter([b"ab", b"cd"]), 4)).prepare()
    assert request.headers.get("Content-Length") == "4"
    assert "Transfer-Encoding" not in request.headers

"""Copy an image between OCI registries by digest, registry to registry, with no Docker engine.

Promotion (``infra.promote``) uses this to make the next stack's registry hold the exact bytes the
previous stack ran: every stack lives in its own AWS account and pulls from its own ECR repository,
so copying only the digest into a stack file would leave that stack with ``ImagePullBackOff``.

The registry protocol is spoken by python-dxf (a small, long-maintained Docker Registry v2 / OCI
distribution client). What this module adds is the copy order that keeps the target consistent:
blobs first (config and layers, streamed and checked against their digests), then child manifests
of an index, then the manifest itself, pushed *by digest* with its original bytes, so the target
computes the same digest or rejects the push. Then :func:`tag_image` gives the image a tag there
(``digest-<hex>``, :func:`infra.images.digest_tag`): a registry's lifecycle rules expire untagged
images, and an image a stack runs must never be one of them.

Credentials, per registry host, in this order:

1. the standard Docker client config (``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``,
   ``auths.<host>.auth`` = base64 ``user:password``) — what ``aws-actions/amazon-ecr-login`` and
   ``docker login`` write, which is how a workflow hands over a second account's registry login;
2. for an ECR host ``<account>.dkr.ecr.<region>.amazonaws.com``: a token from
   ``ecr:GetAuthorizationToken`` (boto3, the ambient AWS credentials, that account's registry id);
3. none (anonymous), e.g. a registry on the loopback interface in tests.

Loopback hosts (``localhost``, ``127.0.0.1``, ``[::1]``) are spoken to over plain HTTP, as the
Docker client does by default; every other host over HTTPS.

``python -m infra.oci login HOST`` stores an ECR login for ``HOST`` (made with the credentials of the
moment) in the Docker config, so a later step running as another account's role can still read it:
the promotion workflow logs in to the source account's registry this way before it assumes the
target account's role.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import requests
from dxf import DXF, DXFBase
from dxf.exceptions import DXFError

from infra.images import digest_tag

MANIFEST_TYPES = frozenset(
    {
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    }
)
INDEX_TYPES = frozenset(
    {
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})
ECR_HOST_RE = re.compile(r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com$")
_REPOSITORY_RE = re.compile(r"^(?P<host>[A-Za-z0-9.-]+(?::\d+)?|\[::1\](?::\d+)?)/(?P<name>[a-z0-9._/-]+)$")
TIMEOUT_SECONDS = 60.0
"""Per request: long enough for a slow layer chunk, short enough that a dead registry fails the run."""


class RegistryError(Exception):
    """A registry could not be reached, refused us, or does not hold what was asked for."""


@dataclass(frozen=True)
class Repository:
    """One repository in one registry, e.g. ``111122223333.dkr.ecr.eu-west-1.amazonaws.com/purchase-classifier``."""

    host: str
    name: str

    @classmethod
    def parse(cls, url: str) -> Repository:
        """Parse ``host[:port]/name``; a tag or digest in ``url`` is refused (the digest travels separately)."""
        match = _REPOSITORY_RE.match(url)
        if not match:
            raise RegistryError(f"{url!r} is not a repository URL like 'host[:port]/name' (no scheme, tag or digest)")
        return cls(match["host"], match["name"])

    @property
    def insecure(self) -> bool:
        return self.host.rsplit(":", 1)[0] in LOOPBACK_HOSTS or self.host in LOOPBACK_HOSTS

    def __str__(self) -> str:
        return f"{self.host}/{self.name}"


def docker_config_path() -> Path:
    return Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"


def _docker_config_login(host: str) -> tuple[str, str] | None:
    path = docker_config_path()
    if not path.is_file():
        return None
    auths = json.loads(path.read_text()).get("auths", {})
    entry = auths.get(host) or auths.get(f"https://{host}")
    if not entry or "auth" not in entry:
        return None
    username, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
    return username, password


def _ecr_login(host: str) -> tuple[str, str] | None:
    match = ECR_HOST_RE.match(host)
    if not match:
        return None
    import boto3  # only needed for ECR; keeps the import cost out of local and test runs
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client = boto3.client("ecr", region_name=match["region"])
        data = client.get_authorization_token(registryIds=[match["account"]])["authorizationData"][0]
    except (BotoCoreError, ClientError) as exc:
        raise RegistryError(f"no ECR login for {host} with the current AWS credentials: {exc}") from exc
    username, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    return username, password


def login_for(host: str) -> tuple[str, str] | None:
    """``(username, password)`` for ``host`` from the Docker config or ECR, ``None`` for anonymous."""
    return _docker_config_login(host) or _ecr_login(host)


def open_repository(repo: Repository) -> DXF:
    """A client for ``repo`` that logs in (see the module docstring) when the registry asks for it."""
    login = None if repo.insecure else login_for(repo.host)

    def authenticate(client: DXFBase, response: requests.Response) -> None:
        if login is None:
            raise RegistryError(f"{repo.host} asks for credentials and none were found (docker config, ECR)")
        client.authenticate(*login, response=response)

    return DXF(repo.host, repo.name, auth=authenticate, insecure=repo.insecure, timeout=TIMEOUT_SECONDS)


def _status(error: requests.HTTPError) -> int | None:
    return error.response.status_code if error.response is not None else None


def _describe(error: Exception) -> str:
    if isinstance(error, requests.HTTPError) and error.response is not None:
        return f"HTTP {error.response.status_code} {error.response.text.strip()[:300]}"
    return f"{type(error).__name__}: {error}"


def _fetch_manifest(client: DXF, digest: str) -> tuple[bytes, str]:
    """The manifest's exact bytes and media type, checked against ``digest``; ``RegistryError`` if absent."""
    _, response = client.get_manifest_and_response(digest)
    body: bytes = response.content
    actual = "sha256:" + hashlib.sha256(body).hexdigest()
    if actual != digest:
        raise RegistryError(f"manifest {digest} was served with content whose digest is {actual}")
    media_type = json.loads(body).get("mediaType") or response.headers.get("Content-Type", "").split(";")[0]
    return body, media_type


def _children(body: bytes, media_type: str) -> tuple[list[str], list[str]]:
    """(child manifest digests, blob digests) a manifest refers to."""
    doc: dict[str, Any] = json.loads(body)
    if media_type in INDEX_TYPES:
        return [m["digest"] for m in doc["manifests"]], []
    if media_type in MANIFEST_TYPES:
        return [], [doc["config"]["digest"], *(layer["digest"] for layer in doc["layers"])]
    raise RegistryError(f"unsupported manifest media type {media_type!r} (want an OCI or Docker v2 image)")


def _exists(probe: Callable[[str], object], digest: str) -> bool:
    """Whether ``probe`` (a HEAD-style client call: ``blob_size``, ``head_manifest_and_response``)
    finds ``digest``; a 404 means absent, any other error propagates."""
    try:
        probe(digest)
    except requests.HTTPError as exc:
        if _status(exc) == 404:
            return False
        raise
    return True


class _SizedStream:
    """Chunks that know their total size, so requests streams them with a ``Content-Length`` header
    rather than chunked transfer encoding, which not every registry front end accepts."""

    def __init__(self, chunks: Iterable[bytes], size: int) -> None:
        self._chunks = chunks
        self._size = size

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._chunks)

    def __len__(self) -> int:
        return self._size


@dataclass
class CopyResult:
    """What a copy moved: a re-run after success moves nothing."""

    manifests: int = 0
    blobs: int = 0
    bytes: int = 0


def _copy(source: DXF, target: DXF, digest: str, source_name: str, moved: CopyResult) -> None:
    if _exists(target.head_manifest_and_response, digest):
        return
    try:
        body, media_type = _fetch_manifest(source, digest)
    except requests.HTTPError as exc:
        if _status(exc) == 404:
            raise RegistryError(f"the source {source_name} has no manifest {digest}") from exc
        raise
    manifests, blobs = _children(body, media_type)
    for child in manifests:
        _copy(source, target, child, source_name, moved)
    for blob in blobs:
        if _exists(target.blob_size, blob):
            continue
        # Streamed, and verified against its digest while streaming.
        chunks, size = cast("tuple[Iterable[bytes], int]", source.pull_blob(blob, size=True))
        target.push_blob(data=_SizedStream(chunks, int(size)), digest=blob, check_exists=False)
        moved.blobs += 1
        moved.bytes += int(size)
    if "mediaType" not in json.loads(body):
        raise RegistryError(f"manifest {digest} names no mediaType; it cannot be pushed with its type")
    # By digest, with the source's bytes: the target recomputes the digest and refuses any other content.
    # python-dxf hands the body to requests as is, and bytes go out unchanged (a str would be sent
    # Latin-1 encoded, which fails or changes the digest of a manifest with non-ASCII annotations).
    target.set_manifest(digest, cast(str, body))
    moved.manifests += 1


def copy_image(source: Repository, target: Repository, digest: str) -> CopyResult:
    """Make ``target`` hold the image ``source@digest`` (an image manifest or an index), blobs first.

    Nothing is moved when ``target`` already has the manifest (an earlier promotion, a shared build).

    :raises RegistryError: the source lacks the digest, a registry is unreachable or refuses a request.
    """
    moved = CopyResult()
    try:
        _copy(open_repository(source), open_repository(target), digest, str(source), moved)
    except (requests.RequestException, DXFError) as exc:
        raise RegistryError(f"copying {source}@{digest} to {target} failed: {_describe(exc)}") from exc
    return moved


def _ensure_tag(client: DXF, repo: Repository, tag: str, digest: str, body: bytes) -> bool:
    """Make ``tag`` name ``digest`` (whose manifest is ``body``); ``True`` when it was written.

    A tag that already names ``digest`` is left alone, so re-promoting never writes to an immutable
    repository; a tag naming anything else is refused, never moved.
    """
    try:
        _, response = client.get_manifest_and_response(tag)
    except requests.HTTPError as exc:
        if _status(exc) != 404:
            raise
        client.set_manifest(tag, cast(str, body))  # the exact bytes, as in _copy
        return True
    current = "sha256:" + hashlib.sha256(response.content).hexdigest()
    if current != digest:
        raise RegistryError(
            f"{repo}:{tag} names {current}, not {digest}; tags are never moved: find out who pushed it "
            f"(it was not promotion) and delete it before promoting again"
        )
    return False


def tag_image(repo: Repository, digest: str) -> list[str]:
    """Tag the image ``repo@digest``: ``digest-<hex>`` (:func:`~infra.images.digest_tag`), and each
    manifest of an index ``digest-<hex>.<position>``, so no part of it is an untagged image that a
    lifecycle rule could expire. Returns the tags written (none on a re-run).

    :raises RegistryError: ``repo`` lacks the manifest, a tag names another digest, or a request fails.
    """
    written: list[str] = []
    try:
        client = open_repository(repo)
        pending = [(digest, digest_tag(digest))]
        while pending:
            current, tag = pending.pop()
            try:
                body, media_type = _fetch_manifest(client, current)
            except requests.HTTPError as exc:
                if _status(exc) == 404:
                    raise RegistryError(f"{repo} has no manifest {current} to tag") from exc
                raise
            if _ensure_tag(client, repo, tag, current, body):
                written.append(tag)
            children, _ = _children(body, media_type)
            pending.extend((child, f"{tag}.{position}") for position, child in enumerate(children))
    except (requests.RequestException, DXFError) as exc:
        raise RegistryError(f"tagging {repo}@{digest} failed: {_describe(exc)}") from exc
    return written


def check_serves(repo: Repository, digest: str) -> None:
    """Refuse unless ``repo`` serves ``digest`` with matching bytes and every blob it refers to.

    This is what a kubelet pull needs; it is checked after a copy and before a stack file is written.

    :raises RegistryError: the manifest or a blob is missing, or the content does not match the digest.
    """
    try:
        client = open_repository(repo)
        pending = [digest]
        while pending:
            current = pending.pop()
            try:
                body, media_type = _fetch_manifest(client, current)
            except requests.HTTPError as exc:
                if _status(exc) == 404:
                    raise RegistryError(f"{repo} does not serve manifest {current}") from exc
                raise
            manifests, blobs = _children(body, media_type)
            pending.extend(manifests)
            missing = [blob for blob in blobs if not _exists(client.blob_size, blob)]
            if missing:
                raise RegistryError(f"{repo} serves manifest {current} but lacks blob(s) {', '.join(missing)}")
    except (requests.RequestException, DXFError) as exc:
        raise RegistryError(f"{repo} could not be checked for {digest}: {_describe(exc)}") from exc


def save_login(host: str) -> Path:
    """Store an ECR login for ``host`` in the Docker config (as ``docker login`` does), readable by us only.

    :raises RegistryError: ``host`` is not an ECR registry.
    """
    login = _ecr_login(host)
    if login is None:
        raise RegistryError(f"{host} is not an ECR registry (<account>.dkr.ecr.<region>.amazonaws.com)")
    path = docker_config_path()
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.setdefault("auths", {})[host] = {"auth": base64.b64encode(":".join(login).encode()).decode()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".config.", dir=path.parent)  # created 0600
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2)
    os.replace(tmp, path)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.oci", description="OCI registry helpers.")
    commands = parser.add_subparsers(dest="command", required=True)
    login = commands.add_parser("login", help="store an ECR login for HOST in the Docker config")
    login.add_argument("host", help="<account>.dkr.ecr.<region>.amazonaws.com")
    args = parser.parse_args(argv)
    try:
        path = save_login(args.host)
    except RegistryError as exc:
        print(f"oci login: refused: {exc}", file=sys.stderr)
        return 2
    print(f"oci login: {args.host} stored in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

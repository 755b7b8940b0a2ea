"""A real OCI registry on 127.0.0.1 (the CNCF distribution registry, ``scripts/install-test-servers``) and
a real image to put in it.

Each :func:`registry_server` is one registry process with its own storage directory: two of them
stand for two AWS accounts' ECR registries in the promotion tests. A ``read_only`` server over the
storage of another stands for a repository that refuses every write (what an immutable ECR
repository does to a tag that exists): a client that only reads succeeds there, any write fails.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
from dxf import DXF

from tests.support.ports import free_port

REGISTRY_BINARY = "docker-registry"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@contextmanager
def registry_server(storage: Path, *, read_only: bool = False) -> Iterator[str]:
    """Run a registry storing under ``storage``; yields its ``127.0.0.1:<port>`` host.

    ``read_only``: the registry's maintenance read-only mode (every push answered with an error),
    serving what ``storage`` already holds; it may run beside a writable server on the same storage.
    """
    binary = shutil.which(REGISTRY_BINARY)
    if binary is None:
        raise RuntimeError(f"{REGISTRY_BINARY} is not installed; run scripts/install-test-servers (make test does)")
    port = free_port()
    storage.mkdir(parents=True, exist_ok=True)
    suffix = "-read-only" if read_only else ""
    config = storage / f"config{suffix}.yml"
    maintenance = ", maintenance: {readonly: {enabled: true}}" if read_only else ""
    config.write_text(
        "version: 0.1\n"
        "log: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {storage / 'data'}}}, delete: {{enabled: true}}{maintenance}}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n"
    )
    log_path = storage / f"registry{suffix}.log"
    log = log_path.open("wb")
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    host = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"registry exited ({proc.returncode}): {log_path.read_text()}")
            try:
                if requests.get(f"http://{host}/v2/", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("registry did not answer /v2/ within 30 s")
            time.sleep(0.05)
        yield host
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Image:
    """A pushed image: its manifest digest and the digests of the blobs it refers to."""

    digest: str
    manifest_size: int
    config: str
    layer: str
    layer_bytes: bytes


def build_and_push_image(host: str, repository: str, content: bytes = b"purchase-classifier\n") -> Image:
    """Push a real single-layer OCI image (gzip tar layer, image config, manifest) to ``host/repository``.

    Only the manifest digest identifies it: it is pushed by digest and tagged nowhere.
    """
    tar_buffer = io.BytesIO()
    with tarfile.open(fileobj=tar_buffer, mode="w") as tar:
        info = tarfile.TarInfo("app/VERSION")
        info.size = len(content)
        info.mtime = 0
        tar.addfile(info, io.BytesIO(content))
    tar_bytes = tar_buffer.getvalue()
    layer = gzip.compress(tar_bytes, mtime=0)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"User": "10001", "Entrypoint": ["python", "-m", "ml"]},
            "rootfs": {"type": "layers", "diff_ids": [_digest(tar_bytes)]},
        },
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": _digest(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": _digest(layer),
                    "size": len(layer),
                }
            ],
        },
        indent=2,  # not the canonical form: a copy must keep the bytes, not re-serialise them
    )
    client = DXF(host, repository, insecure=True)
    # An iterator, not a list: requests would form-encode a list.
    client.push_blob(data=iter([config]), digest=_digest(config))
    client.push_blob(data=iter([layer]), digest=_digest(layer))
    digest = _digest(manifest.encode())
    client.set_manifest(digest, manifest)
    return Image(
        digest=digest,
        manifest_size=len(manifest.encode()),
        config=_digest(config),
        layer=_digest(layer),
        layer_bytes=layer,
    )


def push_index(host: str, repository: str, images: list[Image]) -> str:
    """Push an OCI image index over ``images`` (as buildx does for several platforms or attestations)."""
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": image.digest,
                    "size": image.manifest_size,
                    "platform": {"architecture": "amd64", "os": "linux"},
                }
                for image in images
            ],
        }
    )
    digest = _digest(index.encode())
    DXF(host, repository, insecure=True).set_manifest(digest, index)
    return digest

"""Digest-pinned image references (principle 1: one image, one digest).

A tag can be moved to other bytes after staging tested it; a digest cannot. So stacks hold only a
digest and every container is ``<registry>/<repo>@sha256:<hex>``. Anything that looks like a tag is
refused here, loudly, rather than deployed.
"""

from __future__ import annotations

import re

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_REPO_RE = re.compile(r"^[a-z0-9.-]+(:\d+)?(/[a-z0-9._-]+)+$")


class ImageReferenceError(ValueError):
    """The registry or digest cannot form a digest-pinned reference."""


def image_reference(registry: str, digest: str) -> str:
    """Return ``<registry>@<digest>``.

    :param registry: repository URL without tag or digest, e.g.
        ``111122223333.dkr.ecr.eu-west-1.amazonaws.com/purchase-classifier`` or
        ``localhost:5001/purchase-classifier``.
    :param digest: ``sha256:<64 lowercase hex>``.
    :raises ImageReferenceError: on a tag (``:latest``, ``v1.2``), a registry that already carries a
        tag or digest, or a malformed digest.
    """
    if "@" in registry:
        raise ImageReferenceError(f"registry {registry!r} already contains a digest; give the repository URL only")
    if not _REPO_RE.match(registry):
        last = registry.rsplit("/", 1)[-1]
        if ":" in last:
            raise ImageReferenceError(
                f"registry {registry!r} carries a tag ({last.split(':', 1)[1]!r}); tags are refused, "
                "give the repository URL and pin the image by digest"
            )
        raise ImageReferenceError(f"registry {registry!r} is not a repository URL like 'host[:port]/path/name'")
    if not _DIGEST_RE.match(digest):
        hint = (
            " (that looks like a tag; tags are refused, use the image digest printed by the build)"
            if not digest.startswith("sha256:")
            else ""
        )
        raise ImageReferenceError(f"image digest {digest!r} is not 'sha256:<64 lowercase hex>'{hint}")
    return f"{registry}@{digest}"


DIGEST_TAG_PREFIX = "digest-"
"""Tags promotion gives images start with this. Not ``sha256-``: that spelling is the OCI referrers
fallback tag (``sha256-<hex>`` names the index of signatures and attestations *about* an image)."""


def digest_tag(digest: str) -> str:
    """The tag a registry holds a stack's image under: its digest spelled as a tag, ``digest-<hex>``.

    Derived from the digest, so re-promoting the same image writes the same tag (an immutable
    repository accepts it, or we skip it), and no other image can ever claim it. The ECR lifecycle
    policy (:mod:`infra.aws.registry`) selects the running image by this tag.

    :raises ImageReferenceError: ``digest`` is not ``sha256:<64 lowercase hex>``.
    """
    if not _DIGEST_RE.match(digest):
        raise ImageReferenceError(f"image digest {digest!r} is not 'sha256:<64 lowercase hex>'")
    return DIGEST_TAG_PREFIX + digest.removeprefix("sha256:")

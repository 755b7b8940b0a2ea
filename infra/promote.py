"""Promote the classifier image from one stack to the next: the image first, then its digest (principle 1).

Prod must run the bytes staging ran. Every stack lives in its own AWS account and pulls from its own
registry, so promotion does two things, in this order:

1. **the image**: make sure the target stack's registry holds the source digest, copying it registry to
   registry when it is absent (:mod:`infra.oci`), tag it there ``digest-<hex>`` (an untagged image
   is what ECR's lifecycle rules expire; the tag is derived from the digest, so a re-run writes
   nothing and no tag ever moves), then check that the target serves that exact digest (manifest
   bytes and every blob). A digest the target cannot serve is refused and nothing is written;
2. **the digest**: copy exactly one value, the top-level ``purchase-classifier:imageDigest`` of
   ``Pulumi.<from>.yaml``, into ``Pulumi.<to>.yaml`` and nothing else: node sizes, CIDRs and schedules
   are environment-specific and stay where they are. The stack files are edited with ruamel.yaml's
   round-trip mode so their comments, key order, quoting and flow style survive and the commit diff
   is the one changed line a reviewer needs to see.

A stack's registry is ``purchase-classifier:registry`` when set (existing clusters), else its ECR
repository ``<account>.dkr.ecr.<aws:region>.amazonaws.com/<ecr.repositoryName>``, the account being the
first of ``aws:allowedAccountIds``. Registry credentials: see :mod:`infra.oci`.

The same module sets a digest given on the command line (``--digest``): that is how CI records a
freshly built image in the dev stack and how an operator rolls back by promoting the previous digest.
The target's registry must serve that digest too.

Usage::

    python -m infra promote --from dev --to staging          # copy the image, then the digest
    python -m infra promote --from staging --to prod --check # files only: exit 1 when they differ
    python -m infra promote --digest sha256:<hex> --to dev   # record a build / roll back

``python -m infra.promote ...`` works the same without the ``infra`` command dispatcher.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from infra.images import digest_tag
from infra.oci import CopyResult, RegistryError, Repository, check_serves, copy_image, tag_image
from infra.provenance import ProvenanceCheck, ProvenanceError, Signer

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "purchase-classifier"
DIGEST_KEY = f"{PROJECT}:imageDigest"
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_STACK_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
BUILD_STACK = "dev"
"""The stack CI builds images into (deploy-dev.yml); every other stack receives them by promotion."""

# Exit codes: 0 done / in sync, 1 ``--check`` found a difference, 2 refused (bad input, missing file).
EXIT_OK = 0
EXIT_DIFFERS = 1
EXIT_REFUSED = 2


class PromotionError(Exception):
    """Promotion refused; the message says which stack, which value and what to do."""


@dataclass(frozen=True)
class Change:
    """What a promotion did (or would do) to the target stack."""

    stack: str
    path: Path
    old: str
    new: str
    registry: Repository | None = None
    """The target registry checked to serve ``new`` (``None`` for a files-only ``--check``)."""
    copied: CopyResult | None = None
    """What was copied into ``registry``; nothing when it already held the image."""
    tagged: tuple[str, ...] = ()
    """Tags written in ``registry``; none when the image already had them."""

    @property
    def changed(self) -> bool:
        return self.old != self.new

    def describe(self) -> str:
        lines = []
        if self.copied is not None and self.copied.manifests:
            lines.append(
                f"{self.stack}: copied {self.new} into {self.registry} "
                f"({self.copied.blobs} blobs, {self.copied.bytes} bytes)"
            )
        elif self.registry is not None:
            lines.append(f"{self.stack}: {self.registry} already serves {self.new}")
        if self.registry is not None:
            state = "tagged" if self.tagged else "already tagged"
            lines.append(f"{self.stack}: {state} {self.registry}:{digest_tag(self.new)}")
        if not self.changed:
            lines.append(f"{self.stack}: imageDigest already {self.new}; nothing to do")
        else:
            lines.append(f"{self.stack}: imageDigest {self.old or '(unset)'} -> {self.new}  ({self.path.name})")
        return "\n".join(lines)


def _yaml() -> YAML:
    """Round-trip loader/dumper configured for the layout of the committed stack files.

    ``width`` is large so ruamel never re-wraps long comments or flow sequences; the indent matches
    the files (2-space maps, block sequences indented under their key).
    """
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def stack_path(stack: str, root: Path = ROOT) -> Path:
    """``<root>/Pulumi.<stack>.yaml``; a stack name with path characters is refused."""
    if not _STACK_RE.match(stack):
        raise PromotionError(f"stack name {stack!r} is not a valid Pulumi stack name")
    return root / f"Pulumi.{stack}.yaml"


def _load(stack: str, root: Path, role: str) -> tuple[Path, CommentedMap, CommentedMap]:
    path = stack_path(stack, root)
    if not path.is_file():
        raise PromotionError(
            f"{role} stack {stack!r} does not exist: no {path.name} in {root}. "
            f"Create it first (`pulumi stack init {stack}` and commit {path.name})."
        )
    doc = _yaml().load(path.read_text(encoding="utf-8"))
    if not isinstance(doc, CommentedMap) or not isinstance(doc.get("config"), CommentedMap):
        raise PromotionError(f"{path.name} has no top-level 'config:' map; is it a Pulumi stack file?")
    return path, doc, doc["config"]


def _digest_of(config: CommentedMap) -> str:
    value = config.get(DIGEST_KEY)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise PromotionError(f"{DIGEST_KEY} must be a string, got {type(value).__name__} {value!r}")
    return value.strip()


def validate_digest(digest: str, where: str) -> str:
    """Return ``digest`` if it is ``sha256:<64 lowercase hex>``, else refuse (tags never travel)."""
    if not _DIGEST_RE.match(digest):
        hint = "" if digest.startswith("sha256:") else " (a tag is not a digest; tags are refused)"
        raise PromotionError(f"{where}: {digest!r} is not 'sha256:<64 lowercase hex>'{hint}")
    return digest


def read_digest(stack: str, root: Path = ROOT) -> str:
    """The stack's digest, '' when unset."""
    _, _, config = _load(stack, root, "the")
    return _digest_of(config)


def registry_of(stack: str, root: Path = ROOT, role: str = "the") -> Repository:
    """The repository ``stack`` pulls its image from (see the module docstring).

    :raises PromotionError: the stack file lacks what names its registry.
    """
    path, _, config = _load(stack, root, role)
    explicit = config.get(f"{PROJECT}:registry")
    try:
        if explicit:
            return Repository.parse(str(explicit))
        accounts = config.get("aws:allowedAccountIds") or []
        region = config.get("aws:region")
        if not accounts or not region:
            raise PromotionError(
                f"{path.name} names no registry: set {PROJECT}:registry, or aws:allowedAccountIds and "
                "aws:region (the stack's ECR repository lives in that account and region)"
            )
        name = (config.get(f"{PROJECT}:ecr") or {}).get("repositoryName", PROJECT)
        return Repository.parse(f"{accounts[0]}.dkr.ecr.{region}.amazonaws.com/{name}")
    except RegistryError as exc:
        raise PromotionError(f"{path.name}: {exc}") from exc


def ensure_image(
    source: Repository | None, target: Repository, digest: str, stack: str
) -> tuple[CopyResult, list[str]]:
    """Copy ``digest`` from ``source`` into ``target`` when absent (``source=None``: no copy), refuse
    unless ``target`` serves it, then tag it there. Returns what was copied and the tags written.

    :raises PromotionError: the copy or tagging failed, or the target does not serve the digest.
    """
    try:
        copied = copy_image(source, target, digest) if source is not None else CopyResult()
        check_serves(target, digest)  # before tagging: only an image the target can serve gets a tag
        tagged = tag_image(target, digest)
    except RegistryError as exc:
        raise PromotionError(
            f"stack {stack!r} cannot run {digest}: {exc}. Pulumi.{stack}.yaml was not written."
        ) from exc
    return copied, tagged


def _set(config: CommentedMap, digest: str) -> None:
    """Set the digest in place; a stack file without the key gets it after ``environment``."""
    if DIGEST_KEY in config:
        config[DIGEST_KEY] = digest
        return
    keys = list(config.keys())
    anchor = f"{PROJECT}:environment"
    position = keys.index(anchor) + 1 if anchor in keys else len(keys)
    config.insert(position, DIGEST_KEY, digest)


def _strip_digest(data: Any) -> Any:
    """Plain-data copy of a loaded stack file without the digest, for the nothing-else-changed check."""
    plain = _plain(data)
    plain.get("config", {}).pop(DIGEST_KEY, None)
    return plain


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _write_atomically(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so an interrupted run never leaves half a stack file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def set_digest(stack: str, digest: str, root: Path = ROOT, *, dry_run: bool = False) -> Change:
    """Write ``digest`` into ``Pulumi.<stack>.yaml`` (unless ``dry_run``), keeping everything else.

    :raises PromotionError: malformed digest, missing stack file, or a dump that would change more
        than the digest (a guard against ruamel re-formatting; nothing is written then).
    """
    validate_digest(digest, "digest")
    path, doc, config = _load(stack, root, "target")
    old = _digest_of(config)
    change = Change(stack=stack, path=path, old=old, new=digest)
    if not change.changed or dry_run:
        return change
    before = _strip_digest(doc)
    _set(config, digest)
    buffer = io.StringIO()
    _yaml().dump(doc, buffer)
    text = buffer.getvalue()
    after = _yaml().load(text)
    if _strip_digest(after) != before or _digest_of(after["config"]) != digest:
        raise PromotionError(f"refusing to write {path.name}: the edit would change more than {DIGEST_KEY}")
    _write_atomically(path, text)
    return change


def promote(
    source: str,
    target: str,
    root: Path = ROOT,
    *,
    dry_run: bool = False,
    provenance: ProvenanceCheck | None = None,
) -> Change:
    """Copy the image of stack ``source`` into ``target``'s registry, then its digest into ``target``.

    ``dry_run`` compares the stack files only (no registry is contacted, nothing is written).
    ``provenance``: refuse, before copying anything, a digest without a verified attestation from the
    dev build on main (:mod:`infra.provenance`).

    :raises PromotionError: same stack twice, source without a (valid) digest, target missing, or a
        target registry that does not serve the digest after the copy (nothing written then).
    """
    if source == target:
        raise PromotionError(f"--from and --to are both {source!r}; promotion needs two stacks")
    _, _, source_config = _load(source, root, "source")
    digest = _digest_of(source_config)
    if not digest:
        how = (
            f"record a build there first (scripts/build-image --stack {source})"
            if source == BUILD_STACK
            else f"promote an image into it first (python -m infra promote --from <previous stack> --to {source})"
        )
        raise PromotionError(
            f"source stack {source!r} has no image digest ({DIGEST_KEY} is empty): nothing to promote; {how}."
        )
    validate_digest(digest, f"source stack {source!r} {DIGEST_KEY}")
    if dry_run:
        return set_digest(target, digest, root, dry_run=True)
    if provenance is not None:
        try:
            provenance.require(digest)
        except ProvenanceError as exc:
            raise PromotionError(f"{exc}. Pulumi.{target}.yaml was not written and nothing was copied.") from exc
    return record(target, digest, root, source_registry=registry_of(source, root))


def record(stack: str, digest: str, root: Path = ROOT, *, source_registry: Repository | None = None) -> Change:
    """Write ``digest`` into ``stack`` once its registry serves it (copied from ``source_registry`` if given).

    :raises PromotionError: malformed digest, missing stack file, or a registry that does not serve it.
    """
    validate_digest(digest, "digest")
    target_registry = registry_of(stack, root, "target")
    copied, tagged = ensure_image(source_registry, target_registry, digest, stack)
    change = set_digest(stack, digest, root)
    return replace(change, registry=target_registry, copied=copied, tagged=tuple(tagged))


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments shared by ``python -m infra promote`` and ``python -m infra.promote``."""
    origin = parser.add_mutually_exclusive_group(required=True)
    origin.add_argument("--from", dest="source", metavar="STACK", help="stack to copy the digest from")
    origin.add_argument(
        "--digest",
        metavar="sha256:HEX",
        help="set this digest instead of copying one (record a build, roll back to a previous digest)",
    )
    parser.add_argument("--to", dest="target", required=True, metavar="STACK", help="stack to write")
    parser.add_argument(
        "--check",
        action="store_true",
        help="compare the stack files only (no registry, nothing written): exit 0 in sync, 1 when they differ",
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=ROOT,
        help="directory holding the Pulumi.<stack>.yaml files (default: the repository root)",
    )
    checked = parser.add_argument_group(
        "provenance (with --from; all three together): refuse a digest not built by deploy-dev.yml on main"
    )
    checked.add_argument("--attestation", type=Path, metavar="FILE", help="the image's Sigstore attestations (JSON)")
    checked.add_argument("--trusted-root", type=Path, metavar="FILE", help="Sigstore trusted root(s) (JSON lines)")
    checked.add_argument("--signer-repository", metavar="OWNER/NAME", help="the repository whose workflow must sign")
    parser.set_defaults(func=run)
    return parser


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``promote`` on the ``python -m infra`` dispatcher (see ``infra/cli.py``)."""
    parser = subparsers.add_parser(
        "promote",
        help="copy the image into the next stack's registry, then its digest into that stack file",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    return configure_parser(parser)


def _provenance_check(args: argparse.Namespace) -> ProvenanceCheck | None:
    given = [args.attestation, args.trusted_root, args.signer_repository]
    if not any(given):
        return None
    if not all(given) or args.source is None:
        raise PromotionError("--attestation, --trusted-root and --signer-repository go together, with --from")
    return ProvenanceCheck(args.attestation, args.trusted_root, Signer(args.signer_repository))


def run(args: argparse.Namespace) -> int:
    """Carry out the parsed command; messages go to stdout, refusals to stderr."""
    try:
        check = _provenance_check(args)
        if args.source is not None:
            change = promote(args.source, args.target, args.root, dry_run=args.check, provenance=check)
        else:
            change = (
                set_digest(args.target, args.digest, args.root, dry_run=True)
                if args.check
                else record(args.target, args.digest, args.root)
            )
    except PromotionError as exc:
        print(f"promote: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    if args.check:
        if change.changed:
            print(f"{change.stack}: differs: has {change.old or '(unset)'}, would get {change.new}")
            return EXIT_DIFFERS
        print(f"{change.stack}: in sync at {change.new}")
        return EXIT_OK
    print(change.describe())
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = configure_parser(argparse.ArgumentParser(prog="python -m infra.promote", description=__doc__))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

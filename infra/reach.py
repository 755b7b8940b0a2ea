"""Fail fast, and say why, when this machine cannot reach a stack's Kubernetes API.

staging and prod have private API endpoints (dev's is limited to the office range), reached from the
networks their stack file lists (``cluster.privateAccess``). A job that lands on a runner without that
route would otherwise hang in the Kubernetes provider until the job timeout; this check answers within
``--timeout`` seconds instead. It tells three failures apart: a stack file that lets nobody in (the key
to set), missing AWS credentials (the network was never tried), and a network that does not answer
(the networks that may).

Usage (in a workflow, with the stack's AWS credentials)::

    python -m infra.reach --stack staging            # EKS endpoint from ``eks:DescribeCluster``
    python -m infra.reach --endpoint https://host:443 # any endpoint (existing clusters)
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import ValidationError

from infra.checks.access import api_access_problems
from infra.config import NAMESPACE
from infra.mockrun import ROOT, load_stack_config
from infra.schema import Cluster

_DESCRIPTION = (__doc__ or "").split("\n\n")[0]
TIMEOUT_SECONDS = 10.0
"""A TCP handshake inside a VPC takes milliseconds; ten seconds rules out slow DNS, not a missing route."""


class Unreachable(Exception):
    """The API endpoint did not accept a TCP connection in time."""


class NoWayIn(Exception):
    """The stack file lets nothing reach its private endpoint; nothing to try."""


class NoCredentials(Exception):
    """AWS refused (or found no) credentials to look the cluster up; the network was not tried."""


CREDENTIAL_ERRORS = frozenset(
    {
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "AccessDenied",
        "AccessDeniedException",
        "SignatureDoesNotMatch",
    }
)
"""``eks:DescribeCluster`` error codes that are about who is asking, not where."""


def check_reachable(endpoint: str, timeout: float = TIMEOUT_SECONDS) -> None:
    """Open (and close) one TCP connection to ``endpoint`` (``https://host[:port]``).

    :raises Unreachable: name resolution failed, the connection was refused, or it timed out.
    """
    parts = urlsplit(endpoint)
    if parts.scheme != "https" or not parts.hostname:
        raise Unreachable(f"{endpoint!r} is not an https:// API endpoint")
    port = parts.port or 443
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            pass
    except TimeoutError as exc:
        raise Unreachable(f"{parts.hostname}:{port} did not answer within {timeout:g} s") from exc
    except OSError as exc:
        raise Unreachable(f"{parts.hostname}:{port}: {exc.strerror or exc}") from exc


def stack_cluster(stack: str, root: Path = ROOT) -> tuple[Cluster, str]:
    """The stack file's ``cluster`` (typed) and region, checked for a way in.

    :raises Unreachable: the stack file names no EKS cluster.
    :raises NoWayIn: its endpoint is private and no network may reach it (the message names the key).
    """
    config = load_stack_config(stack, root)
    raw = config.get(f"{NAMESPACE}cluster") or {}
    if raw.get("mode") != "eks" or "aws:region" not in config:
        raise Unreachable(f"stack {stack!r} has no EKS cluster to look up; give --endpoint")
    try:
        cluster = Cluster.model_validate(raw)
    except ValidationError as exc:
        raise NoWayIn(f"{NAMESPACE}cluster in Pulumi.{stack}.yaml is invalid: {exc}") from None
    problems = api_access_problems(cluster, NAMESPACE)
    if problems:
        raise NoWayIn("; ".join(problems))
    return cluster, str(config["aws:region"])


def routes(cluster: Cluster) -> str:
    """Where the endpoint may be reached from, as the stack file says."""
    ways = [f"network {c}" for c in cluster.private_access.cidrs]
    ways += [f"security group {g}" for g in cluster.private_access.security_group_ids]
    if cluster.endpoint_public_access:
        ways += [f"public address in {c}" for c in cluster.public_access_cidrs]
    return ", ".join(ways)


def eks_endpoint(cluster: Cluster, region: str) -> str | None:
    """The API endpoint of the EKS cluster; ``None`` before the first deploy created it (a preview then
    only plans to create it: nothing to reach).

    :raises NoCredentials: no credentials, or AWS refused them.
    :raises Unreachable: AWS could not be asked (its API unreachable) or answered another error.
    """
    import boto3  # only for EKS stacks
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

    try:
        # A session of its own: boto3's default session keeps the first credentials it found.
        eks = boto3.session.Session().client("eks", region_name=region)
        described = eks.describe_cluster(name=cluster.name)
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise NoCredentials(str(exc)) from exc
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code == "ResourceNotFoundException":
            return None
        if code in CREDENTIAL_ERRORS:
            raise NoCredentials(str(exc)) from exc
        raise Unreachable(f"cannot describe EKS cluster {cluster.name!r}: {exc}") from exc
    except BotoCoreError as exc:
        raise Unreachable(f"cannot describe EKS cluster {cluster.name!r}: {exc}") from exc
    return str(described["cluster"]["endpoint"])


def _arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--stack", help="an eks-mode stack: look its cluster endpoint up (AWS credentials)")
    where.add_argument("--endpoint", help="an API endpoint URL, https://host[:port]")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_SECONDS, help="seconds (default %(default)s)")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """``python -m infra reach`` (the same as ``python -m infra.reach``)."""
    parser = subparsers.add_parser(
        "reach", help="check that this machine can reach a stack's Kubernetes API", description=_DESCRIPTION
    )
    _arguments(parser)
    parser.set_defaults(func=run)


def main(argv: Sequence[str] | None = None, root: Path = ROOT) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.reach", description=_DESCRIPTION)
    _arguments(parser)
    return run(parser.parse_args(argv), root)


def run(args: argparse.Namespace, root: Path = ROOT) -> int:
    """Check, print the outcome, and return the exit status (0: reachable or nothing to reach yet)."""
    allowed = ""
    try:
        if args.endpoint:
            endpoint: str | None = args.endpoint
        else:
            cluster, region = stack_cluster(args.stack, root)
            allowed = f" (the stack admits: {routes(cluster)})"
            endpoint = eks_endpoint(cluster, region)
        if endpoint is None:
            print(
                f"reach: stack {args.stack!r} has no cluster yet; nothing to reach before its first deploy, "
                f"which opens it to: {routes(cluster)}"
            )
            return 0
        check_reachable(endpoint, args.timeout)
    except NoWayIn as exc:
        print(f"reach: nothing can reach the Kubernetes API: {exc}", file=sys.stderr)
        return 1
    except NoCredentials as exc:
        print(
            f"reach: no usable AWS credentials to look up stack {args.stack!r}'s cluster ({exc}); the network "
            "was not tried. Give this job the stack's role (docs/delivery.md) or, by hand, `aws sso login` "
            "or AWS_PROFILE.",
            file=sys.stderr,
        )
        return 1
    except (Unreachable, FileNotFoundError) as exc:
        print(
            f"reach: cannot reach the Kubernetes API: {exc}. Run this job on a runner inside the "
            f"cluster's network{allowed}; see docs/delivery.md.",
            file=sys.stderr,
        )
        return 1
    print(f"reach: {endpoint} accepts connections")
    return 0


if __name__ == "__main__":
    sys.exit(main())

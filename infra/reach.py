"""Fail fast, and say why, when this machine cannot reach a stack's Kubernetes API.

staging and prod have private API endpoints (dev's is limited to the office range), so their previews,
deploys and drift checks run on self-hosted runners inside each account's network. A job that lands
on a runner without that route would otherwise hang in the Kubernetes provider until the job
timeout; this check answers within ``--timeout`` seconds instead, naming the runner label to use.

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

from infra.mockrun import ROOT, load_stack_config

TIMEOUT_SECONDS = 10.0
"""A TCP handshake inside a VPC takes milliseconds; ten seconds rules out slow DNS, not a missing route."""


class Unreachable(Exception):
    """The API endpoint did not accept a TCP connection in time."""


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


def eks_endpoint(stack: str, root: Path = ROOT) -> str | None:
    """The API endpoint of the stack's EKS cluster (name and region from its stack file); ``None``
    before the first deploy created it (a preview then only plans to create it: nothing to reach).

    :raises Unreachable: the stack file names no EKS cluster, or AWS cannot describe it.
    """
    import boto3  # only for EKS stacks
    from botocore.exceptions import BotoCoreError, ClientError

    config = load_stack_config(stack, root)
    cluster = config.get("purchase-classifier:cluster") or {}
    if cluster.get("mode") != "eks" or "aws:region" not in config:
        raise Unreachable(f"stack {stack!r} has no EKS cluster to look up; give --endpoint")
    try:
        described = boto3.client("eks", region_name=config["aws:region"]).describe_cluster(name=cluster["name"])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return None
        raise Unreachable(f"cannot describe EKS cluster {cluster['name']!r}: {exc}") from exc
    except BotoCoreError as exc:
        raise Unreachable(f"cannot describe EKS cluster {cluster['name']!r}: {exc}") from exc
    return str(described["cluster"]["endpoint"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.reach", description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--stack", help="an eks-mode stack: look its cluster endpoint up (AWS credentials)")
    where.add_argument("--endpoint", help="an API endpoint URL, https://host[:port]")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_SECONDS, help="seconds (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        endpoint = args.endpoint or eks_endpoint(args.stack)
        if endpoint is None:
            print(f"reach: stack {args.stack!r} has no cluster yet; nothing to reach before its first deploy")
            return 0
        check_reachable(endpoint, args.timeout)
    except (Unreachable, FileNotFoundError) as exc:
        label = f" (runner label pc-{args.stack})" if args.stack else ""
        print(
            f"reach: cannot reach the Kubernetes API: {exc}. Run this job on a runner inside the "
            f"cluster's network{label}; see docs/delivery.md.",
            file=sys.stderr,
        )
        return 1
    print(f"reach: {endpoint} accepts connections")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A real AWS API server (moto's) on 127.0.0.1, for the AWS clients the code runs (S3, ECR, EKS)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from moto.server import ThreadedMotoServer


@contextmanager
def moto_server() -> Iterator[str]:
    """Start the server, yield its endpoint URL, stop it; boto3 reaches it through ``AWS_ENDPOINT_URL*``."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()

"""The reachability check answers within its timeout, and says what to do, instead of hanging a job."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from infra import cli
from infra.mockrun import load_stack_config
from infra.reach import main
from tests.support.aws_api import moto_server
from tests.support.ports import free_port


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0), backlog=0) as server:
        yield server


def test_a_listening_endpoint_passes(listening: socket.socket, capsys: pytest.CaptureFixture[str]) -> None:
    port = listening.getsockname()[1]
    assert main(["--endpoint", f"https://127.0.0.1:{port}"]) == 0
    assert "accepts connections" in capsys.readouterr().out


def test_a_refused_connection_fails_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()  # nothing listens there
    assert main(["--endpoint", f"https://127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err
    assert f"cannot reach the Kubernetes API: 127.0.0.1:{port}: Connection refused" in err
    assert "runner inside the cluster's network" in err


def test_a_silent_endpoint_fails_within_the_timeout(
    listening: socket.socket, capsys: pytest.CaptureFixture[str]
) -> None:
    # A full accept queue makes the kernel drop new SYNs: the connect waits, as it does on a route
    # that leads nowhere (a private endpoint seen from outside its VPC).
    port = listening.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.2)
    started = time.monotonic()
    try:
        assert main(["--endpoint", f"https://127.0.0.1:{port}", "--timeout", "1"]) == 1
    finally:
        for filler in fillers:
            filler.close()
    assert time.monotonic() - started < 5
    assert "did not answer within 1 s" in capsys.readouterr().err


def test_refuses_what_is_not_an_https_endpoint(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--endpoint", "127.0.0.1:6443"]) == 1
    assert "is not an https:// API endpoint" in capsys.readouterr().err


def test_a_stack_without_an_eks_cluster_asks_for_the_endpoint(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--stack", "local"]) == 1
    err = capsys.readouterr().err
    assert "stack 'local' has no EKS cluster to look up; give --endpoint" in err


def _use_eks_at(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """Send the EKS client to ``endpoint``, with dummy credentials so a request is signed and sent."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_EKS", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


def test_before_the_first_deploy_there_is_nothing_to_reach(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # EKS's API here is moto's server, which (like AWS) answers ResourceNotFound for pc-staging.
    with moto_server() as endpoint:
        _use_eks_at(monkeypatch, endpoint)
        assert main(["--stack", "staging"]) == 0
        assert "stack 'staging' has no cluster yet" in capsys.readouterr().out


def _write_stack(root: Path, stack: str, cluster: dict[str, object]) -> None:
    config = {"aws:region": "eu-west-1", "purchase-classifier:cluster": cluster}
    (root / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump({"config": config}))


def test_a_private_endpoint_nobody_may_reach_fails_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before any AWS call, and even before the cluster exists: the stack file itself lets nobody in."""
    cluster = load_stack_config("staging")["purchase-classifier:cluster"]
    cluster.pop("privateAccess")
    _write_stack(tmp_path, "staging", cluster)
    assert main(["--stack", "staging"], root=tmp_path) == 1
    err = capsys.readouterr().err
    assert err.startswith("reach: nothing can reach the Kubernetes API: purchase-classifier:cluster.privateAccess:")
    assert "privateAccess.cidrs" in err


def test_missing_credentials_are_blamed_not_the_network(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with moto_server() as endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL_EKS", endpoint)
        assert main(["--stack", "staging"]) == 1
    err = capsys.readouterr().err
    assert "no usable AWS credentials" in err and "the network was not tried" in err
    assert "cannot reach" not in err and "runner inside" not in err


def test_refused_credentials_are_blamed_not_the_network(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An AWS answer about who asks (here a real HTTP 403 with ExpiredToken) is a credentials problem."""

    class Expired(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self._expired()

        def do_GET(self) -> None:
            self._expired()

        def _expired(self) -> None:
            body = b'{"message":"The security token included in the request is expired"}'
            self.send_response(403)
            self.send_header("x-amzn-ErrorType", "ExpiredTokenException")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Expired)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        _use_eks_at(monkeypatch, f"http://127.0.0.1:{server.server_address[1]}")
        assert main(["--stack", "staging"]) == 1
    finally:
        server.shutdown()
    err = capsys.readouterr().err
    assert "no usable AWS credentials" in err and "ExpiredToken" in err


def test_before_the_first_deploy_says_who_will_reach_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with moto_server() as endpoint:
        _use_eks_at(monkeypatch, endpoint)
        assert main(["--stack", "prod"]) == 0
    cidrs = load_stack_config("prod")["purchase-classifier:cluster"]["privateAccess"]["cidrs"]
    assert f"network {cidrs[0]}" in capsys.readouterr().out


def test_python_m_infra_reach_is_the_same_check(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    assert cli.main(["reach", "--endpoint", f"https://127.0.0.1:{port}", "--timeout", "1"]) == 1
    assert "cannot reach the Kubernetes API" in capsys.readouterr().err

"""The reachability check answers within its timeout, and says what to do, instead of hanging a job."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

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
    assert "stack 'local' has no EKS cluster to look up; give --endpoint" in err and "pc-local" in err


def test_before_the_first_deploy_there_is_nothing_to_reach(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # EKS's API here is moto's server, which (like AWS) answers ResourceNotFound for pc-staging.
    with moto_server() as endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL_EKS", endpoint)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        assert main(["--stack", "staging"]) == 0
        assert "stack 'staging' has no cluster yet" in capsys.readouterr().out

"""The rendered manifests' own commands work: real Dask, real jobs, real server, on 127.0.0.1.

Every process is started from a rendered container spec: ``python -m ml`` (the image's ENTRYPOINT)
plus the container's ``args``, with the container's ``env`` (``$(VAR)`` expanded as the kubelet does).
Only what cannot exist outside the cluster is substituted, each in one documented place
(:class:`Localizer`): Service DNS names become ``127.0.0.1``, fixed container ports become free local
ports (every pod has its own IP in a cluster, processes here share one), the ``s3://`` store becomes a
local directory, each mounted Secret becomes a local directory of its files, and each pod's ``/tmp``
``emptyDir`` becomes its own temporary directory. Flags and every other value are used as rendered, so
a manifest whose command would fail in the cluster (an unknown flag, a missing argument, a wrong probe
path) fails here.
"""

from __future__ import annotations

import gzip
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from infra.k8s.common import (
    NANNY_PORT,
    SCHEDULER_DASHBOARD_PORT,
    SCHEDULER_PORT,
    SECRETS_DIR,
    SERVING_PORT,
    WORKER_PORT,
)
from infra.k8s.common import WORKER_DASHBOARD_PORT as WORKER_HTTP_PORT
from infra.render import kubernetes_manifests
from ml.model import fit_model
from ml.registry import ModelRegistry
from ml.schema import coerce, read_records
from tests.infra.harness import cached_run

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data" / "purchases_labeled.csv.gz"
STACK = "prod"
"""The stack whose manifests are run: production's args (threads, memory limit) are what matter."""
ENTRYPOINT = [sys.executable, "-m", "ml"]
"""The image's ENTRYPOINT (``python -m ml``), with this interpreter standing in for the image's."""
SAMPLE_ROWS = 400
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion (``$$`` escapes); unknown references stay as written."""
    return re.sub(
        r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
        lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)),
        value,
    )


@dataclass
class Localizer:
    """The only substitutions between a rendered container and a local process."""

    store: str
    database_url: str
    scheduler_address: str
    cluster_scheduler_address: str
    pod_name: str
    tmp: Path
    ports: dict[int, int] = field(default_factory=dict)
    """Container port → local port, for this pod."""

    def arg(self, value: str) -> str:
        value = value.replace(self.cluster_scheduler_address, self.scheduler_address)
        if value == "/tmp":
            return str(self.tmp)
        if value.isdigit() and int(value) in self.ports:
            return str(self.ports[int(value)])
        if value.startswith(":") and value[1:].isdigit() and int(value[1:]) in self.ports:
            return f"127.0.0.1:{self.ports[int(value[1:])]}"
        if value == "0.0.0.0":
            return "127.0.0.1"
        return value

    def env(self, container: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for item in container.get("env", []):
            name = item["name"]
            if "value" in item:
                value = expand(item["value"], env)
            else:
                source = item["valueFrom"]
                if source.get("fieldRef", {}).get("fieldPath") == "metadata.name":
                    value = self.pod_name
                else:
                    raise AssertionError(f"no local stand-in for {name}: {source}")
            env[name] = value
        for mount_path, local in self.secret_mounts(container).items():
            env = {
                k: str(local) + v.removeprefix(mount_path) if v.startswith(f"{mount_path}/") else v
                for k, v in env.items()
            }
        if "ML_STORE" in env:
            assert env["ML_STORE"].startswith("s3://"), env["ML_STORE"]
            env["ML_STORE"] = self.store
        if "DASK_SCHEDULER_ADDRESS" in env:
            assert env["DASK_SCHEDULER_ADDRESS"] == self.cluster_scheduler_address
            env["DASK_SCHEDULER_ADDRESS"] = self.scheduler_address
        for key in ("HOME", "MPLCONFIGDIR"):
            if env.get(key) == "/tmp":
                env[key] = str(self.tmp)
        return env

    def secret_mounts(self, container: dict[str, Any]) -> dict[str, Path]:
        """Each mounted Secret becomes a local directory with one file per key, as the kubelet writes it."""
        values = {"database-url": {"DATABASE_URL": self.database_url}}
        mounts: dict[str, Path] = {}
        for mount in container["volumeMounts"]:
            if not mount["mountPath"].startswith(SECRETS_DIR):
                continue
            if mount["name"] not in values:
                raise AssertionError(f"no local stand-in for the Secret {mount['name']}")
            local = self.tmp.parent / "secrets" / mount["name"]
            local.mkdir(parents=True, exist_ok=True)
            for key, value in values[mount["name"]].items():
                (local / key).write_text(value)
            mounts[mount["mountPath"]] = local
        return mounts

    def command(self, container: dict[str, Any], env: dict[str, str]) -> list[str]:
        assert "command" not in container, "containers must keep the image's ENTRYPOINT"
        return [*ENTRYPOINT, *(self.arg(expand(a, env)) for a in container["args"])]


def process_env(env: dict[str, str]) -> dict[str, str]:
    """The container's env on top of a minimal host env (PATH, the venv), nothing else leaking in."""
    keep = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "SYSTEMROOT") if k in os.environ}
    return keep | {"PYTHONUNBUFFERED": "1"} | env


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError):
        return False


def probe_url(container: dict[str, Any], probe: str, ports: dict[int, int]) -> str:
    get = container[probe]["httpGet"]
    port = get["port"]
    if isinstance(port, str):
        port = next(p["containerPort"] for p in container["ports"] if p["name"] == port)
    return f"http://127.0.0.1:{ports[port]}{get['path']}"


def wait_ready(proc: subprocess.Popen[str], url: str, log: Path, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} before ready:\n{log.read_text()[-4000:]}")
        if http_ok(url):
            return
        time.sleep(0.3)
    raise AssertionError(f"{url} not ready after {timeout}s:\n{log.read_text()[-4000:]}")


def pod_container(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj["spec"]
    if obj["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    (container,) = spec["template"]["spec"]["containers"]
    return dict(container)


@pytest.fixture(scope="module")
def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in kubernetes_manifests(cached_run(STACK))}


@dataclass
class Site:
    """The local stand-ins for the cluster's store, database and scheduler Service."""

    root: Path
    store: str
    database_url: str
    db_path: Path
    scheduler_port: int
    cluster_scheduler_address: str
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def scheduler_address(self) -> str:
        return f"tcp://127.0.0.1:{self.scheduler_port}"

    def localizer(self, pod: str, ports: dict[int, int] | None = None) -> Localizer:
        tmp = self.root / "pods" / pod / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return Localizer(
            store=self.store,
            database_url=self.database_url,
            scheduler_address=self.scheduler_address,
            cluster_scheduler_address=self.cluster_scheduler_address,
            pod_name=pod,
            tmp=tmp,
            ports=ports or {},
        )

    def start(self, pod: str, container: dict[str, Any], ports: dict[int, int]) -> tuple[subprocess.Popen[str], Path]:
        loc = self.localizer(pod, ports)
        env = loc.env(container)
        log = self.root / f"{pod}.log"
        handle = log.open("w")
        proc = subprocess.Popen(
            loc.command(container, env),
            cwd=ROOT,
            env=process_env(env),
            stdout=handle,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.procs.append(proc)
        return proc, log

    def run(self, pod: str, container: dict[str, Any], timeout: float = 600) -> subprocess.CompletedProcess[str]:
        loc = self.localizer(pod)
        env = loc.env(container)
        return subprocess.run(
            loc.command(container, env),
            cwd=ROOT,
            env=process_env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, manifests: dict[tuple[str, str], Any]) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("cluster")
    sample = root / "purchases.csv"
    with gzip.open(DATA, "rt") as f:
        frame = pd.read_csv(f)
    # The most common categories, so every class has enough rows for cross-validation.
    top = frame["category"].value_counts().index[:6]
    frame[frame["category"].isin(top)].sample(SAMPLE_ROWS, random_state=7).to_csv(sample, index=False)
    db_path = root / "purchases.db"
    database_url = f"sqlite:///{db_path}"
    seed = subprocess.run(
        [*ENTRYPOINT, "db", "seed", "--data", str(sample), "--database-url", database_url, "--unlabeled-share", "0.25"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert seed.returncode == 0, seed.stderr
    cluster_address = next(
        e["value"]
        for e in pod_container(manifests[("CronJob", "train")])["env"]
        if e["name"] == "DASK_SCHEDULER_ADDRESS"
    )
    s = Site(
        root=root,
        store=str(root / "store"),
        database_url=database_url,
        db_path=db_path,
        scheduler_port=free_port(),
        cluster_scheduler_address=cluster_address,
    )
    try:
        yield s
    finally:
        for proc in reversed(s.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in s.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="module")
def dask_cluster(site: Site, manifests: dict[tuple[str, str], Any]) -> Site:
    scheduler = pod_container(manifests[("Deployment", "dask-scheduler")])
    ports = {SCHEDULER_PORT: site.scheduler_port, SCHEDULER_DASHBOARD_PORT: free_port()}
    proc, log = site.start("dask-scheduler-0", scheduler, ports)
    wait_ready(proc, probe_url(scheduler, "readinessProbe", ports), log)
    assert http_ok(probe_url(scheduler, "livenessProbe", ports))
    worker = pod_container(manifests[("Deployment", "dask-worker")])
    for i in range(2):
        wports = {WORKER_PORT: free_port(), NANNY_PORT: free_port(), WORKER_HTTP_PORT: free_port()}
        proc, log = site.start(f"dask-worker-{i}", worker, wports)
        wait_ready(proc, probe_url(worker, "readinessProbe", wports), log)
        assert http_ok(probe_url(worker, "livenessProbe", wports))
    return site


def test_localizer_changes_only_addresses_ports_and_paths(manifests: dict[tuple[str, str], Any]) -> None:
    worker = pod_container(manifests[("Deployment", "dask-worker")])
    loc = Localizer(
        store="/s",
        database_url="sqlite://",
        scheduler_address="tcp://127.0.0.1:1",
        cluster_scheduler_address="tcp://dask-scheduler.purchase-classifier.svc:8786",
        pod_name="w-0",
        tmp=Path("/local/tmp"),
        ports={WORKER_PORT: 2, NANNY_PORT: 3, WORKER_HTTP_PORT: 4},
    )
    cmd = loc.command(worker, loc.env(worker))
    rendered = worker["args"]
    assert len(cmd) == len(ENTRYPOINT) + len(rendered)
    changed = {(a, b) for a, b in zip(rendered, cmd[len(ENTRYPOINT) :], strict=True) if a != b}
    assert changed == {
        ("tcp://dask-scheduler.purchase-classifier.svc:8786", "tcp://127.0.0.1:1"),
        ("$(POD_NAME)", "w-0"),
        ("/tmp", "/local/tmp"),
        ("8788", "2"),
        ("8790", "3"),
        (":8789", "127.0.0.1:4"),
    }


def test_a_broken_command_fails_here(site: Site, manifests: dict[tuple[str, str], Any]) -> None:
    scheduler = pod_container(manifests[("Deployment", "dask-scheduler")])
    broken = scheduler | {"args": [*scheduler["args"], "--no-such-flag"]}
    result = site.run("broken-scheduler", broken, timeout=120)
    assert result.returncode != 0


def test_dask_scheduler_and_workers_start_from_the_manifests(dask_cluster: Site) -> None:
    from distributed import Client

    with Client(dask_cluster.scheduler_address, timeout="20s") as client:
        client.wait_for_workers(2, timeout=30)
        workers = client.scheduler_info()["workers"].values()
        assert sorted(w["name"] for w in workers) == ["dask-worker-0", "dask-worker-1"]
        assert {w["nthreads"] for w in workers} == {2}
        assert {w["memory_limit"] for w in workers} == {7373 * 2**20}


def test_jobs_refresh_train_predict_run_against_the_cluster(
    dask_cluster: Site, manifests: dict[tuple[str, str], Any]
) -> None:
    from distributed import Client

    def transitions() -> int:
        with Client(dask_cluster.scheduler_address, timeout="20s") as client:
            return int(client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter))

    for job in ("refresh", "train", "predict"):
        container = pod_container(manifests[("CronJob", job)])
        before = transitions()
        result = dask_cluster.run(f"{job}-job", container)
        assert result.returncode == 0, (
            f"{job} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
        )
        if job in ("train", "predict"):  # they must have used the manifests' scheduler, not a local one
            assert transitions() > before, f"{job} ran no task on the scheduler"
    with sqlite3.connect(dask_cluster.db_path) as db:
        (count,) = db.execute("select count(*) from predictions").fetchone()
    assert count > 0


def test_serving_command_becomes_ready(dask_cluster: Site, manifests: dict[tuple[str, str], Any]) -> None:
    registry = ModelRegistry(dask_cluster.store, "purchase-classifier")
    if registry.latest_version() is None:  # run alone: the jobs test has not trained one
        sample = coerce(read_records(str(DATA)), labeled=True).sample(600, random_state=0)
        registry.promote(registry.save(fit_model(sample), {"metrics": {"macro_f1": 0.0}}))
    server = pod_container(manifests[("Deployment", "serving")])
    ports = {SERVING_PORT: free_port()}
    proc, log = dask_cluster.start("serving-0", server, ports)
    wait_ready(proc, probe_url(server, "readinessProbe", ports), log)
    assert http_ok(probe_url(server, "livenessProbe", ports))
    assert http_ok(f"http://127.0.0.1:{ports[SERVING_PORT]}/metrics")

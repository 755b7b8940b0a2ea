"""Serving benchmark: the in-process floor, this service (plain and in shadow mode), and Seldon
MLServer 1.7.1, side by side.

    .venv/bin/python bench/serving.py                      # trains on data/purchases_labeled.csv.gz
    .venv/bin/python bench/serving.py --store var/store    # or serves an existing store's LATEST

Same machine, same model, same client, single-record requests at each concurrency (default 1 and 8),
``--requests`` after ``--warmup``. Shadow mode (``ML_CANDIDATE_MODE=shadow``) serves from a copy of
the store whose CANDIDATE is the same pipeline saved as a second version: a candidate of the same
kind costs the same, so the difference to the plain service is the price of scoring every record
twice. MLServer runs with mlserver-sklearn and adaptive batching in its
own virtualenv (``bench/.mlserver-venv``, created on first use with the exact scikit-learn, pandas,
numpy, scipy and joblib versions of this project so the pickled pipeline loads unchanged).

The client is a minimal keep-alive HTTP/1.1 client on asyncio streams, so on a 2-core machine the
load generator takes as little CPU from the servers as possible, and equally from each.
Results: a table on stdout and ``bench/results/serving.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import joblib
import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from publish import markdown_table, publish  # noqa: E402  (bench/ is on sys.path when run as a script)

from ml.model import fit_model, predict  # noqa: E402
from ml.registry import ModelRegistry  # noqa: E402
from ml.schema import CATEGORY, RECORD_COLUMNS, coerce, read_records  # noqa: E402

MODEL = "purchase-classifier"
MLSERVER_VENV = ROOT / "bench" / ".mlserver-venv"
RESULTS = ROOT / "bench" / "results"
#: Libraries whose versions must match for the pickled pipeline to load in MLServer's venv.
PINNED = ("scikit-learn", "pandas", "numpy", "scipy", "joblib")
MLSERVER_PACKAGES = ("mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop==0.21.0")


#: One endpoint to load: the target's name in the table, the URL path, the request bodies, the answer check.
Endpoint = tuple[str, str, list[bytes], Callable[[bytes], bool]]


@dataclass
class Row:
    target: str
    concurrency: int
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float
    #: Server CPU time per request (process and children): on a shared machine it varies far less
    #: with other load than throughput does, so it is the figure to compare two server builds by.
    cpu_ms: float = float("nan")
    note: str = ""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the model ------------------------------------------------------------------------------------


def load_data(path: Path) -> pd.DataFrame:
    return coerce(read_records(str(path)), labeled=True)


def train_store(data: pd.DataFrame, store: Path) -> None:
    """Fit the default pipeline on the shared data and promote it (as the train job would)."""
    print(f"training on {len(data)} rows, {data[CATEGORY].nunique()} categories ...", flush=True)
    started = time.perf_counter()
    pipeline = fit_model(data)
    print(f"trained in {time.perf_counter() - started:.0f} s", flush=True)
    registry = ModelRegistry(str(store), MODEL)
    version = registry.save(pipeline, {"metrics": {"macro_f1": 0.0}, "training_snapshot": "bench"})
    registry.promote(version)


# -- the floor ------------------------------------------------------------------------------------


def measure_in_process(target: str, call: Callable[[pd.DataFrame], Any], records: list[dict[str, Any]], n: int) -> Row:
    """``call`` on one prebuilt one-row DataFrame at a time: no HTTP, no JSON."""
    frames = [
        pd.DataFrame([r]).astype({"description": "string", "contract": "string", "department": "string"})
        for r in records[:200]
    ]
    for frame in frames[:20]:
        call(frame)
    latencies = []
    started = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        call(frames[i % len(frames)])
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    return Row(target, 1, n, 0, n / elapsed, percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000)


# -- the load generator ---------------------------------------------------------------------------


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed")
    status = int(status_line.split(b" ", 2)[1])
    length, chunked = 0, False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if not chunked:
        return status, await reader.readexactly(length)
    body = b""
    while True:
        size = int((await reader.readline()).strip(), 16)
        if size == 0:
            await reader.readline()
            return status, body
        body += await reader.readexactly(size)
        await reader.readline()


async def _load(
    port: int, path: str, bodies: list[bytes], total: int, concurrency: int, ok: Callable[[bytes], bool]
) -> tuple[list[float], int, float]:
    counter = iter(range(total))
    latencies: list[float] = []
    errors = 0

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in counter:
                body = bodies[i % len(bodies)]
                head = (
                    f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                ).encode()
                t0 = time.perf_counter()
                try:
                    writer.write(head + body)
                    status, payload = await _read_response(reader)
                except (ConnectionError, asyncio.IncompleteReadError, ValueError):
                    errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    continue
                latencies.append(time.perf_counter() - t0)
                if status != 200 or not ok(payload):
                    errors += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - started


def cpu_seconds(pid: int) -> float:
    root = psutil.Process(pid)
    return sum(sum(p.cpu_times()[:2]) for p in [root, *root.children(recursive=True)])


def run_load(
    target: str,
    server: subprocess.Popen[bytes],
    port: int,
    path: str,
    bodies: list[bytes],
    ok: Callable[[bytes], bool],
    concurrency: int,
    requests: int,
    warmup: int,
) -> Row:
    asyncio.run(_load(port, path, bodies, warmup, concurrency, ok))
    cpu_before = cpu_seconds(server.pid)
    latencies, errors, elapsed = asyncio.run(_load(port, path, bodies, requests, concurrency, ok))
    cpu = (cpu_seconds(server.pid) - cpu_before) / requests * 1000
    if not latencies:
        return Row(target, concurrency, requests, errors, 0.0, float("nan"), float("nan"))
    return Row(
        target,
        concurrency,
        requests,
        errors,
        len(latencies) / elapsed,
        percentile(latencies, 50) * 1000,
        percentile(latencies, 99) * 1000,
        cpu,
    )


# -- servers --------------------------------------------------------------------------------------


def wait_http(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} not ready after {timeout:.0f} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def start_ours(store: Path, port: int, log: Path, candidate_mode: str = "off") -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "ML_STORE": str(store),
        "ML_MODEL_NAME": MODEL,
        "ML_PORT": str(port),
        "ML_LOG_LEVEL": "warning",
        "ML_CANDIDATE_MODE": candidate_mode,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "ml", "serve"],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_http(f"http://127.0.0.1:{port}/readyz", process, 180)
    return process


def shadow_store(pipeline: Any, store: Path) -> None:
    """A store whose LATEST and CANDIDATE are two versions of the same pipeline."""
    registry = ModelRegistry(str(store), MODEL)
    registry.promote(registry.save(pipeline, {"metrics": {"macro_f1": 0.0}, "training_snapshot": "bench"}))
    registry.propose(registry.save(pipeline, {"metrics": {"macro_f1": 0.0}, "training_snapshot": "bench"}))


def ensure_mlserver_venv(venv: Path) -> Path:
    """Create MLServer's virtualenv once (pip from PyPI), with this project's model libraries."""
    python = venv / "bin" / "python"
    marker = venv / ".bench-ready"
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in PINNED]
    wanted = "\n".join([*MLSERVER_PACKAGES, *pins])
    if marker.exists() and marker.read_text() == wanted:
        return python
    print(f"creating {venv} (MLServer 1.7.1) ...", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    base = shutil.which(f"python{sys.version_info.major}.{sys.version_info.minor}") or sys.executable
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *MLSERVER_PACKAGES, *pins], check=True)
    marker.write_text(wanted)
    return python


def start_mlserver(
    python: Path, pipeline: Any, workdir: Path, port: int, log: Path, max_batch_size: int, max_batch_time: float
) -> subprocess.Popen[bytes]:
    model_dir = workdir / MODEL
    model_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(pipeline, model_dir / "model.joblib")
    (model_dir / "model-settings.json").write_text(
        json.dumps(
            {
                "name": MODEL,
                "implementation": "mlserver_sklearn.SKLearnModel",
                "max_batch_size": max_batch_size,
                "max_batch_time": max_batch_time,
                "parameters": {"uri": "./model.joblib", "version": "v1", "content_type": "pd"},
            },
            indent=2,
        )
    )
    (workdir / "settings.json").write_text(
        json.dumps(
            {
                "http_port": port,
                "grpc_port": free_port(),
                "metrics_port": free_port(),
                "host": "127.0.0.1",
                "debug": False,
            },
            indent=2,
        )
    )
    # The pickled pipeline references ml.features: make the project importable, nothing else.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    mlserver = python.parent / "mlserver"
    process = subprocess.Popen(
        [str(mlserver), "start", str(workdir)],
        cwd=workdir,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_http(f"http://127.0.0.1:{port}/v2/models/{MODEL}/ready", process, 240)
    return process


# -- payloads -------------------------------------------------------------------------------------


def sample_records(data: pd.DataFrame, n: int) -> list[dict[str, Any]]:
    """Records with a known cost: a V2 FP64 tensor has no null, and every target gets the same rows."""
    known = data[data["cost"].notna()]
    rows = known.sample(n=min(n, len(known)), random_state=0)[RECORD_COLUMNS]
    return [
        {
            "id": str(r["id"]),
            "description": str(r["description"]),
            "cost": float(r["cost"]),
            "contract": str(r["contract"]),
            "department": str(r["department"]),
        }
        for r in rows.to_dict("records")
    ]


def v1_body(record: dict[str, Any]) -> bytes:
    return json.dumps({"records": [record]}).encode()


def v2_body(record: dict[str, Any], outputs: list[str] | None = None) -> bytes:
    payload: dict[str, Any] = {
        "parameters": {"content_type": "pd"},
        "inputs": [
            {"name": "description", "datatype": "BYTES", "shape": [1], "data": [record["description"]]},
            {"name": "cost", "datatype": "FP64", "shape": [1], "data": [record["cost"]]},
            {"name": "contract", "datatype": "BYTES", "shape": [1], "data": [record["contract"]]},
            {"name": "department", "datatype": "BYTES", "shape": [1], "data": [record["department"]]},
        ],
    }
    if outputs:
        payload["outputs"] = [{"name": name} for name in outputs]
    return json.dumps(payload).encode()


def ok_v1(payload: bytes) -> bool:
    return len(json.loads(payload)["results"]) == 1


def ok_v2(payload: bytes) -> bool:
    return bool(json.loads(payload)["outputs"])


# -- main -----------------------------------------------------------------------------------------


def print_table(rows: list[Row], header_too: bool = True) -> None:
    header = f"| {'target':<48} | conc | requests | errors | req/s  | p50 ms | p99 ms | server CPU ms/req |"
    if header_too:
        print(header)
        print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for r in rows:
        print(
            f"| {r.target:<48} | {r.concurrency:>4} | {r.requests:>8} | {r.errors:>6} | {r.rps:>6.0f} | "
            f"{r.p50_ms:>6.1f} | {r.p99_ms:>6.1f} | {r.cpu_ms:>17.2f} |" + (f" {r.note}" if r.note else "")
        )


def verdicts(rows: list[Row]) -> list[str]:
    def find(prefix: str, concurrency: int) -> Row | None:
        return next((r for r in rows if r.target.startswith(prefix) and r.concurrency == concurrency), None)

    lines = []
    plain = "this service, POST"
    floor, ours1, ours8, ml8 = find("floor", 1), find(plain, 1), find(plain, 8), find("MLServer", 8)
    shadow8 = find("this service in shadow mode", 8)
    if ours8 and shadow8 and ours8.rps > 0:
        lines.append(
            f"concurrency 8, shadow mode: {shadow8.rps / ours8.rps:.2f}x the plain service's throughput, "
            f"p99 {shadow8.p99_ms:.1f} ms vs {ours8.p99_ms:.1f} ms, server CPU per request "
            f"{shadow8.cpu_ms / ours8.cpu_ms:.2f}x, {shadow8.errors} errors"
        )
    if ours8 and ml8 and ml8.rps > 0:
        ratio = ours8.rps / ml8.rps
        good = ratio >= 3 and ours8.p99_ms <= 25 and ours8.errors == 0
        lines.append(
            f"concurrency 8: {ratio:.1f}x MLServer's throughput, p99 {ours8.p99_ms:.1f} ms, "
            f"{ours8.errors} errors (target >= 3x, <= 25 ms, 0): {'MET' if good else 'NOT MET'}"
        )
    if floor and ours1:
        ratio = ours1.p50_ms / floor.p50_ms
        lines.append(
            f"concurrency 1: p50 {ratio:.2f}x the in-process floor (target <= 2x): {'MET' if ratio <= 2 else 'NOT MET'}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "purchases_labeled.csv.gz")
    parser.add_argument("--store", type=Path, help="serve this store's LATEST instead of training one")
    parser.add_argument("--requests", type=int, default=5000, help="measured requests per run")
    parser.add_argument("--warmup", type=int, default=300, help="requests before each measured run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--floor-requests", type=int, default=1000)
    parser.add_argument("--skip-mlserver", action="store_true")
    parser.add_argument("--skip-shadow", action="store_true", help="do not measure shadow mode")
    parser.add_argument("--with-v2", action="store_true", help="also load this service's V2 endpoint")
    parser.add_argument("--mlserver-venv", type=Path, default=MLSERVER_VENV)
    parser.add_argument("--mlserver-max-batch-size", type=int, default=32)
    parser.add_argument("--mlserver-max-batch-time", type=float, default=0.002, help="seconds")
    parser.add_argument("--publish", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args(argv)

    RESULTS.mkdir(parents=True, exist_ok=True)
    data = load_data(args.data)
    records = sample_records(data, 1000)
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        store = args.store or Path(tmp) / "store"
        if args.store is None:
            train_store(data, store)
        pipeline = ModelRegistry(str(store), MODEL).load().pipeline
        rows = [
            # the floor: the pipeline's own predict (scikit-learn's ColumnTransformer path)
            measure_in_process("floor: pipeline.predict, 1 record", pipeline.predict, records, args.floor_requests),
            # what the service calls per batch (ml.features.CompiledFeatures), for reference
            measure_in_process(
                "in-process ml.model.predict, 1 record", lambda f: predict(pipeline, f), records, args.floor_requests
            ),
        ]
        print_table(rows)

        def load_each_concurrency(
            server: subprocess.Popen[bytes],
            port: int,
            endpoints: list[Endpoint],
        ) -> None:
            """Load each (target, path, bodies, check) of one server at every concurrency, printing each row."""
            for c in args.concurrency:
                for target, path, bodies, ok in endpoints:
                    rows.append(run_load(target, server, port, path, bodies, ok, c, args.requests, args.warmup))
                    print_table(rows[-1:], header_too=False)

        v1_bodies = [v1_body(r) for r in records]
        port = free_port()
        ours = start_ours(store, port, RESULTS / "serve.log")
        try:
            endpoints: list[Endpoint] = [("this service, POST /v1/classify", "/v1/classify", v1_bodies, ok_v1)]
            if args.with_v2:
                endpoints.append(
                    ("this service, V2 infer", f"/v2/models/{MODEL}/infer", [v2_body(r) for r in records], ok_v2)
                )
            load_each_concurrency(ours, port, endpoints)
        finally:
            stop(ours)

        if not args.skip_shadow:
            shadow_store(pipeline, Path(tmp) / "shadow-store")
            port = free_port()
            shadowed = start_ours(Path(tmp) / "shadow-store", port, RESULTS / "serve-shadow.log", "shadow")
            try:
                load_each_concurrency(
                    shadowed,
                    port,
                    [("this service in shadow mode, POST /v1/classify", "/v1/classify", v1_bodies, ok_v1)],
                )
            finally:
                stop(shadowed)

        if not args.skip_mlserver:
            try:
                python = ensure_mlserver_venv(args.mlserver_venv)
                port = free_port()
                mls = start_mlserver(
                    python,
                    pipeline,
                    Path(tmp) / "mlserver",
                    port,
                    RESULTS / "mlserver.log",
                    args.mlserver_max_batch_size,
                    args.mlserver_max_batch_time,
                )
            except (subprocess.CalledProcessError, RuntimeError, TimeoutError) as exc:
                print(f"MLServer skipped: {exc} (see {RESULTS / 'mlserver.log'})", file=sys.stderr)
            else:
                try:
                    bodies = [v2_body(r, ["predict_proba"]) for r in records]
                    load_each_concurrency(
                        mls,
                        port,
                        [("MLServer 1.7.1 sklearn, V2 predict_proba", f"/v2/models/{MODEL}/infer", bodies, ok_v2)],
                    )
                finally:
                    stop(mls)

    print()
    print(
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
        f"{args.requests} requests per run after {args.warmup} warm-up, single-record requests"
    )
    print_table(rows)
    for line in verdicts(rows):
        print(line)
    if args.publish:
        header = ["target", "concurrency", "p50", "p99", "req/s", "server CPU per request", "errors"]
        cells = [
            [r.target, str(r.concurrency), f"{r.p50_ms:.1f} ms", f"{r.p99_ms:.1f} ms", f"{r.rps:,.0f}"]
            + (["", ""] if r.cpu_ms != r.cpu_ms else [f"{r.cpu_ms:.2f} ms", str(r.errors)])  # in process: no server
            for r in rows
        ]
        publish("serving", markdown_table(header, cells) + "\n\n" + "\n".join(f"- {v}" for v in verdicts(rows)))
    (RESULTS / "serving.json").write_text(
        json.dumps(
            {
                "rows": [asdict(r) for r in rows],
                "verdicts": verdicts(rows),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
